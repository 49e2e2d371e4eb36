"""The protection contract, for every registered method, on the seeded tiny model (CPU).

Shape and range, 8-bit output, the L∞ budget after a PNG round trip, determinism, and
batch invariance; plus configs, profiles, the step-level API and input checks.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from cloakbench.core.config import ConfigError, parse_set_options
from cloakbench.core.images import quantize_8bit, read_png, save_png
from cloakbench.protections import PROTECTIONS, publishable_protections
from cloakbench.protections.base import FAMILIES, NEEDS, REFERENCE_COSTS, Protection
from cloakbench.protections.engine import PGDProtection, image_generators, round_within_budget, with_profile
from cloakbench.protections.photoguard import PhotoGuard

# ``external`` reads another tool's files (bench leaderboard run --protected; tests/test_leaderboard.py): no method to run here.
ALL = [n for n in PROTECTIONS.names() if not PROTECTIONS.get(n).reads_files]
PAPER_METHODS = [n for n in ALL if n not in ("none", "noise")]
STEPS = 2


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(name: str, **overrides):
    cls = PROTECTIONS.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if "steps" in fields:
        overrides.setdefault("steps", STEPS)
    return cls.from_overrides(overrides)


@pytest.mark.parametrize("name", ALL)
def test_contract_budget_determinism_and_batching(name, tiny_model, clean8, tmp_path):
    protection = build(name)
    protected = protection(clean8, tiny_model, generator=generator(0))

    assert protected.shape == clean8.shape and protected.dtype == torch.float32
    assert torch.isfinite(protected).all()
    assert protected.min() >= 0 and protected.max() <= 1
    assert torch.equal(quantize_8bit(protected), protected), "output must already be 8-bit"

    if not protection.analysis_only:
        eps = int(protection.config.eps) if hasattr(protection.config, "eps") else 0
        for index in range(clean8.shape[0]):
            path = save_png(protected[index], tmp_path / f"{index}.png")
            saved_levels = torch.round(read_png(path) * 255)
            clean_levels = torch.round(clean8[index] * 255)
            assert (saved_levels - clean_levels).abs().max() <= eps

    again = protection(clean8, tiny_model, generator=generator(0))
    assert torch.equal(protected, again), "same seed must give the same output (CPU bit-exact)"

    if getattr(protection, "learns_from_batch", False):
        return  # fsmg/aspl: the surrogate learns from the whole batch by design (docs/PROTECTIONS.md)
    singles = torch.cat([protection(clean8[i : i + 1], tiny_model, generator=generator(0)) for i in range(2)])
    differing = (singles != protected).float().mean().item()
    # Called plainly, a batch shares the networks' kernels, which may round differently and flip
    # the sign of a near-zero gradient entry (inside core.per_image.one_image_per_call it is exact:
    # tests/test_batched.py); a design that shared randomness across the batch differs everywhere.
    assert differing <= 1e-3, f"{name}: batch differs from single runs in {differing:.2%} of values"
    assert (singles - protected).abs().max() <= 4 / 255 + 1e-6


def test_none_is_bit_exact_even_off_the_8bit_grid(tiny_model, images):
    protected = PROTECTIONS.get("none")()(images, tiny_model, generator=generator(0))
    assert torch.equal(protected, images) and protected.data_ptr() != images.data_ptr()


@pytest.mark.parametrize("name", ["noise", "sds-"])
def test_a_different_seed_gives_a_different_output(name, tiny_model, clean8):
    protection = build(name, **({"steps": 1} if name != "noise" else {}))
    first = protection(clean8[:1], tiny_model, generator=generator(0))
    second = protection(clean8[:1], tiny_model, generator=generator(1))
    assert not torch.equal(first, second)


def test_noise_fills_the_budget_symmetrically(clean8):
    protected = PROTECTIONS.get("noise")()(clean8, None, generator=generator(3))
    levels = torch.round((protected - clean8) * 255)
    inside = (clean8 > 20 / 255) & (clean8 < 235 / 255)  # away from the [0, 1] clamp
    assert levels[inside].max() == 16 and levels[inside].min() == -16
    assert abs(levels[inside].mean().item()) < 0.5


def test_round_within_budget_for_any_clean_image():
    clean = torch.rand(2, 3, 16, 16, generator=generator(5))  # not on the 8-bit grid
    pushed = (clean + torch.randn(2, 3, 16, 16, generator=generator(6))).clamp(0, 1)
    for eps in (1, 4, 16, 7.65):
        out = round_within_budget(pushed, clean, eps)
        assert torch.equal(quantize_8bit(out), out)
        assert (out - clean).abs().max() <= eps / 255 + 1e-6


def test_every_method_is_described_versioned_and_cites_its_paper():
    for name in ALL:
        cls = PROTECTIONS.get(name)
        assert cls.description(), name
        # Declared by the method (or the method it varies), not inherited from Component's default.
        declared = next(k for k in cls.__mro__ if "version" in k.__dict__)
        assert declared.__module__ != "cloakbench.core.component", f"{name} declares no version"
        assert isinstance(cls.version, int) and cls.version >= 1, name
        assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    for name in PAPER_METHODS:
        assert "arXiv" in (PROTECTIONS.get(name).__doc__ or ""), f"{name}'s docstring must cite its paper"


def test_sds_z_is_analysis_only_and_left_out_of_all():
    assert PROTECTIONS.get("sds-z").analysis_only
    publishable = publishable_protections()
    assert "sds-z" not in publishable
    assert set(ALL) - {"sds-z"} == set(publishable)


def test_random_start_follows_the_table():
    expected = {
        "advdm": True,
        "advdm-": True,
        "mist": True,
        "photoguard": True,
        "texture": True,
        "encoder": True,
        "sds+": False,
        "sds-": False,
        "sdst-": False,
    }
    for name, flag in expected.items():
        assert PROTECTIONS.get(name).Config().random_start is flag, name


def test_paper_defaults():
    assert PROTECTIONS.get("mist").Config().semantic_weight == 1e4
    assert PROTECTIONS.get("sdst-").Config().target_rate == 5.0
    for name in ("advdm", "sds-", "mist", "texture"):
        config = PROTECTIONS.get(name).Config()
        assert (config.eps, config.alpha, config.steps) == (16.0, 1.0, 100)
        assert config.latent == "sample" and config.reference_mode is False


def test_overrides_from_set_options():
    overrides = parse_set_options(["sds-.steps=50", "sds-.latent=mean", "sds-.prompt=an anime picture"])
    config = PROTECTIONS.get("sds-").from_overrides(overrides["sds-"]).config
    assert (config.steps, config.latent, config.prompt) == (50, "mean", "an anime picture")
    with pytest.raises(ConfigError, match="steps"):
        PROTECTIONS.get("sds-").from_overrides({"stpes": "3"})
    with pytest.raises(ConfigError):
        PROTECTIONS.get("advdm").from_overrides({"latent": "median"})
    with pytest.raises(ValueError):
        PROTECTIONS.get("advdm").from_overrides({"alpha": "0"})


def test_photoguard_paper_profile(tiny_model, clean8):
    protection = with_profile(PhotoGuard, "paper")
    config = protection.config
    assert config.eps == pytest.approx(0.06 * 255 / 2) and config.alpha == pytest.approx(0.02 * 255 / 2)
    assert (config.steps, config.alpha_schedule, config.target, config.latent) == (1000, "linear", "zero", "mean")
    with pytest.raises(ValueError, match="profile"):
        with_profile(PhotoGuard, "nonesuch")

    short = with_profile(PhotoGuard, "paper", {"steps": "4"})
    state = short.prepare(clean8[:1], tiny_model, generator=generator(0))
    sizes = []
    for _ in range(4):
        sizes.append(short.step_size(state))
        short.step(state)
    assert sizes[0] == pytest.approx(config.alpha) and all(a > b for a, b in itertools.pairwise(sizes))
    levels = torch.round((short.finalize(state) - clean8[:1]) * 255)
    assert levels.abs().max() <= 7  # floor(7.65) once on the 8-bit grid


def test_step_api_is_what_call_does(tiny_model, clean8):
    protection = build("sds-")
    state = protection.prepare(clean8, tiny_model, generator=generator(2))
    for _ in range(protection.config.steps):
        loss = protection.step(state)
        assert loss.shape == (2,)
    stepped = protection.finalize(state)
    assert state.loss_trace().shape == (STEPS, 2)
    assert torch.equal(stepped, protection(clean8, tiny_model, generator=generator(2)))


def test_sds_z_stays_in_its_latent_box(tiny_model, clean8):
    protection = build("sds-z", steps=3)
    state = protection.prepare(clean8[:1], tiny_model, generator=generator(0))
    for _ in range(3):
        protection.step(state)
    moved = (state.adversarial - state.clean).abs().max().item()
    assert 0 < moved <= protection.config.latent_eps + 1e-6
    decoded = protection.finalize(state)
    assert decoded.shape == clean8[:1].shape and torch.equal(quantize_8bit(decoded), decoded)


def test_generators_per_image(clean8):
    derived = image_generators(clean8, generator(0))
    assert len(derived) == 2
    # Derived from the seed and each image's pixels: not the image's position.
    alone = image_generators(clean8[1:], generator(0))
    assert derived[1].initial_seed() == alone[0].initial_seed() != derived[0].initial_seed()
    given = [generator(7), generator(8)]
    assert image_generators(clean8, given) == given
    with pytest.raises(ValueError, match="one per image"):
        image_generators(clean8, [generator(7)])


def test_bad_inputs_are_refused(tiny_model, clean8):
    protection = build("sds-")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        protection(clean8 * 2 - 1, tiny_model, generator=generator(0))
    with pytest.raises(ValueError, match="N, 3, H, W"):
        protection(clean8[0], tiny_model, generator=generator(0))
    with pytest.raises(ValueError, match="generator"):
        protection(clean8, tiny_model, generator=None)
    with pytest.raises(ValueError, match="multiples of 8"):
        protection(clean8[..., :60, :60], tiny_model, generator=generator(0))


def test_target_file_and_zero_target(tiny_model, clean8, tmp_path):
    path = save_png(torch.rand(3, 64, 64, generator=generator(9)), tmp_path / "target.png")
    for target in (str(path), "zero"):
        protected = build("texture", target=target)(clean8[:1], tiny_model, generator=generator(0))
        assert (protected - clean8[:1]).abs().max() <= 16 / 255 + 1e-6
    with pytest.raises(ValueError, match="target"):
        build("texture", target=str(tmp_path / "missing.png"))(clean8[:1], tiny_model, generator=generator(0))


def test_pgd_protections_expose_the_step_api():
    for name in ALL:
        cls = PROTECTIONS.get(name)
        # The baselines and the amortized family make their perturbation in one shot (no PGD steps).
        if cls.family not in ("baseline", "amortized"):
            assert issubclass(cls, PGDProtection), name
    assert {n for n in ALL if PROTECTIONS.get(n).family == "baseline"} == {"none", "noise"}


def module_of(name: str) -> str:
    """The file a protection lives in, from its name alone: ``advdm-`` -> ``advdm``, ``sds-z`` -> ``sds_z``
    (one method per module under its paper's name; variants ``+``/``-`` share their method's file)."""
    return name.rstrip("+-").replace("-", "_")


def test_every_method_declares_what_it_needs_in_known_names():
    for name in ALL:
        cls = PROTECTIONS.get(name)
        assert isinstance(cls.needs, frozenset) and cls.needs <= NEEDS, name
        assert isinstance(cls.reference_costs, tuple) and set(cls.reference_costs) <= set(REFERENCE_COSTS), name
        # A method's module is named after its paper: its whole rule is in one file.
        assert cls.__module__.rsplit(".", 1)[-1] == module_of(name), f"{name} lives in {cls.__module__}"
        assert cls.family in FAMILIES, f"{name} declares no family (one of {', '.join(FAMILIES)})"
    assert PROTECTIONS.get("sds-").needs == {"diffusion_noise", "prompt"}
    assert PROTECTIONS.get("sdst-").needs == {"diffusion_noise", "prompt", "target"}
    assert PROTECTIONS.get("encoder").needs == {"clean_target"}
    for name in ("mist", "texture", "photoguard", "sdst-"):  # each reads config.target
        assert hasattr(PROTECTIONS.get(name).Config(), "target"), name


def test_a_misspelt_need_or_cost_is_refused_at_class_definition():
    with pytest.raises(TypeError, match="needs"):
        type("Typo", (Protection,), {"needs": frozenset({"promt"})})
    with pytest.raises(TypeError, match="reference_costs"):
        type("Typo", (Protection,), {"reference_costs": ("target_forwards",)})


@pytest.mark.parametrize("name", ["photoguard", "encoder"])
def test_methods_without_reference_costs_run_the_fair_step_in_reference_mode(name, tiny_model, clean8):
    protection = build(name, reference_mode=True)
    assert protection.prepare(clean8, tiny_model, generator=generator(0)).reference is None
