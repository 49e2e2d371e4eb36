"""ASPL's ``surrogate_profile = "reference"``: the quirks of ``train_one_epoch`` in VinAIResearch/Anti-DreamBooth
``attacks/aspl.py`` (no-op clipping, pure bf16 surrogate, images read from index 0 on every call), and the
default profile that keeps the documented differences (protections/surrogate.py's docstring)."""

from __future__ import annotations

import itertools

import pytest
import torch

from cloakbench.protections import PROTECTIONS
from cloakbench.protections.surrogate import Surrogate


def surrogate(model, learning_rate: float, **settings) -> Surrogate:
    return Surrogate.of(
        model,
        instance_prompt="a photo of sks person",
        class_prompt="a photo of person",
        learning_rate=learning_rate,
        train_text_encoder=True,
        generator=torch.Generator().manual_seed(0),
        **settings,
    )


def weights(s: Surrogate) -> list[torch.Tensor]:
    return [p.detach().float().clone() for p in s.parameters]


def changed_fraction(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    changed = sum(int((a != b).sum()) for a, b in zip(after, before, strict=True))
    return changed / sum(a.numel() for a in after)


@pytest.fixture()
def four_images():
    coarse = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1234))
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)


def test_the_reference_surrogate_is_pure_bf16_and_barely_moves_at_its_learning_rate(tiny_model, four_images):
    """aspl.py:407-412 casts the trained UNet and text encoder to bf16, so at lr 5e-7 (attack_with_aspl.sh:34)
    an AdamW step of ~5e-7 is under half a bf16 ulp of almost every weight; in fp32 almost every weight moves."""
    prior = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    fractions = {}
    for name, quirks in (("default", False), ("reference", True)):
        s = surrogate(tiny_model, 5e-7, reference_quirks=quirks)
        before = weights(s)
        s.train(four_images, 1, torch.Generator().manual_seed(1), prior)
        fractions[name] = changed_fraction(before, weights(s))
        expected = torch.bfloat16 if quirks else torch.float32
        assert {p.dtype for p in s.parameters} == {expected}
        # the optimised parameters are the modules' own weights (the cast is in place)
        assert {id(p) for p in s.parameters} <= {
            id(p) for p in itertools.chain(s.unet.parameters(), s.text_encoder.parameters())
        }
    assert fractions["default"] > 0.9
    assert 0 < fractions["reference"] < 0.05  # the read on SD: 0.5 % against 98 %
    assert {p.dtype for p in tiny_model.unet.parameters()} == {torch.float32}  # the shared model is not cast


def test_the_references_clipping_is_a_no_op():
    """aspl.py:387,470: the optimiser consumes the chain, so clip_grad_norm_ on it sees no parameter."""
    weight = torch.nn.Parameter(torch.ones(3))
    params_to_optimize = itertools.chain([weight])
    torch.optim.AdamW(params_to_optimize, lr=1e-3)
    weight.grad = torch.full((3,), 10.0)
    norm = torch.nn.utils.clip_grad_norm_(params_to_optimize, 1.0, error_if_nonfinite=True)
    assert float(norm) == 0.0 and torch.equal(weight.grad, torch.full((3,), 10.0))


def test_the_reference_profiles_update_is_the_unclipped_one(tiny_model, four_images):
    """Three steps (one call, max_f_train_steps 3) with gradient norms ~6-7: the reference profile's weights equal
    those of an unclipped bf16 run and differ from a clipped one (so clipping would have shown)."""
    prior = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    bf16 = {"weight_dtype": torch.bfloat16, "restart_each_call": True}
    runs = {
        "reference": surrogate(tiny_model, 1e-2, reference_quirks=True),
        "unclipped": surrogate(tiny_model, 1e-2, max_grad_norm=0.0, **bf16),
        "clipped": surrogate(tiny_model, 1e-2, max_grad_norm=1.0, **bf16),
    }
    norms = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, **kwargs):
        norms.append(float(real_clip(parameters, max_norm, **kwargs)))
        return norms[-1]

    result = {}
    for name, s in runs.items():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
            s.train(four_images, 3, torch.Generator().manual_seed(1), prior)
        result[name] = weights(s)
    assert len(norms) == 3 and min(norms) > 1  # only the clipped run clipped, and its norms exceeded 1
    assert all(torch.equal(a, b) for a, b in zip(result["reference"], result["unclipped"], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(result["reference"], result["clipped"], strict=True))


def drawn_indices(model, s: Surrogate, calls: int, steps: int, instances: int, class_images: int, monkeypatch):
    """Which instance and class images each train() call encodes: image k is filled with the value k/64."""
    images = torch.arange(instances).float().div(64).view(-1, 1, 1, 1).expand(-1, 3, 64, 64).contiguous()
    prior = torch.arange(class_images).float().add(32).div(64).view(-1, 1, 1, 1).expand(-1, 3, 64, 64).contiguous()
    seen: list[list[int]] = []
    real_posterior = model.posterior

    def spy(batch):
        seen.append([round(float(v) * 64) for v in batch[:, 0, 0, 0]])
        return real_posterior(batch)

    monkeypatch.setattr(model, "posterior", spy)
    for _ in range(calls):
        s.train(images, steps, torch.Generator().manual_seed(1), prior)
    monkeypatch.undo()
    instance = sorted({batch[0] for batch in seen})
    drawn_class = sorted({batch[1] - 32 for batch in seen})
    return seen, instance, drawn_class


def test_the_reference_profile_draws_only_the_first_three_images(tiny_model, monkeypatch):
    """aspl.py:418: train_dataset[step % len] on a fresh dataset each call (len = max(200, 4), lines 51, 58):
    steps 0-2 read instance and class images 0-2 every call; the default goes round all of them."""
    reference = surrogate(tiny_model, 1e-4, reference_quirks=True)
    seen, instance, drawn_class = drawn_indices(tiny_model, reference, 4, 3, 4, 8, monkeypatch)
    assert seen == [[0, 32], [1, 33], [2, 34]] * 4
    assert instance == [0, 1, 2] and drawn_class == [0, 1, 2]
    default = surrogate(tiny_model, 1e-4)
    _, instance, drawn_class = drawn_indices(tiny_model, default, 4, 3, 4, 8, monkeypatch)
    assert instance == [0, 1, 2, 3] and drawn_class == list(range(8))


def test_the_reference_profile_is_a_setting_of_aspl_in_its_identity(tiny_model, clean8):
    aspl = PROTECTIONS.get("aspl")
    default, reference = aspl(), aspl.from_overrides({"surrogate_profile": "reference"})
    assert default.config.surrogate_profile == "default"
    assert reference.identity()["config"]["surrogate_profile"] == "reference"
    assert default.identity() != reference.identity()  # so the cell key differs
    assert aspl.PROFILES["reference"] == {"surrogate_profile": "reference"}  # bench protect --profile reference
    # it runs end to end: the bf16 surrogates' gradient reaches the fp32 image, within the budget
    quick = {"steps": "2", "max_f_train_steps": "1", "max_adv_train_steps": "1", "num_class_images": "1"}
    protection = aspl.from_overrides({**quick, "class_sample_steps": "2", "surrogate_profile": "reference"})
    state = protection.prepare(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    assert state.surrogate.weight_dtype == torch.bfloat16 and state.surrogate.max_grad_norm == 0
    protection.step(state)
    protected = protection.finalize(state)
    change = ((protected - clean8).abs() * 255).round()
    assert protected.dtype == torch.float32 and 0 < change.max() <= 6


def test_fsmg_has_no_reference_quirks():
    """FSMG's surrogate is trained by train_dreambooth.py (attack_with_fsmg.sh:9-33): real clipping (lines
    987-992), fp32 weights under bf16 autocast (804-808, 860-862), every class image (446, 795-799)."""
    fsmg = PROTECTIONS.get("fsmg")()
    assert not fsmg.reference_quirks() and not hasattr(fsmg.config, "surrogate_profile")
