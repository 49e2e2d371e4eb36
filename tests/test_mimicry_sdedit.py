"""SDEdit (multi-step through diffusers) and one-step SDEdit on the tiny random model."""

from __future__ import annotations

import pytest
import torch

from cloakbench.mimicry.base import AttackContext
from cloakbench.mimicry.sdedit import SDEdit, SDEditOneStep


def run(attack, images, model, setting, seed=0):
    context = AttackContext(setting=setting, prompt="a photo")
    out = attack(images, model, generator=torch.Generator().manual_seed(seed), context=context)
    return out, context


def test_settings_are_the_configured_strengths():
    assert SDEdit().settings() == ["0.1", "0.2", "0.3", "0.5"]
    assert SDEditOneStep.from_overrides({"strengths": "0.05,0.3"}).settings() == ["0.05", "0.3"]


@pytest.mark.parametrize("cls", [SDEdit, SDEditOneStep])
def test_deterministic_shape_range_batch(cls, tiny_model, images):
    attack = cls.from_overrides({"steps": "4"} if cls is SDEdit else {})
    first, _ = run(attack, images, tiny_model, "0.5", seed=3)
    again, _ = run(attack, images, tiny_model, "0.5", seed=3)
    other, _ = run(attack, images, tiny_model, "0.5", seed=4)
    assert first.shape == images.shape and first.dtype == torch.float32
    # The range comes from LDM.decode's clamp, tested where it can fail: below.
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 1e-3
    # It edits: the output is not the input.
    assert (first - images).abs().mean() > 1e-3


@pytest.mark.parametrize("cls", [SDEdit, SDEditOneStep])
def test_strength_zero_is_the_vae_round_trip(cls, tiny_model, images):
    out, _ = run(cls(cls.Config(latent="mean")), images, tiny_model, "0")
    with torch.no_grad():
        round_trip = tiny_model.decode(tiny_model.encode(images, mode="mean"))
    torch.testing.assert_close(out, round_trip, atol=1e-6, rtol=0)
    # With a sampled latent it is the round trip of the same posterior sample.
    out, _ = run(cls(), images, tiny_model, "0", seed=9)
    with torch.no_grad():
        sampled = tiny_model.decode(tiny_model.encode(images, generator=torch.Generator().manual_seed(9)))
    torch.testing.assert_close(out, sampled, atol=1e-6, rtol=0)


def test_edit_grows_with_strength(tiny_model, images):
    with torch.no_grad():
        round_trip = tiny_model.decode(tiny_model.encode(images, mode="mean"))
    attack = SDEdit(SDEdit.Config(steps=4, latent="mean"))
    distances = [float((run(attack, images, tiny_model, s)[0] - round_trip).abs().mean()) for s in ("0", "0.25", "1")]
    assert distances[0] < distances[1] < distances[2]


def test_timestep_convention_is_diffusers(tiny_model, images):
    """Strength 0.3 with 10 DDIM steps keeps grid steps 201, 101, 1: noised straight to 201."""
    _, context = run(SDEdit(SDEdit.Config(steps=10)), images, tiny_model, "0.3")
    assert context.notes["sdedit"]["0.3"] == {"noised_to": 201, "first_denoise": 201, "denoising_steps": 3}


def test_one_denoising_step_equals_the_one_step_edit_at_the_same_timestep(tiny_model, images):
    """100 steps at strength 0.01 noise to t = 1 and take one DDIM step to ᾱ = 1, i.e. decode x̂₀(t=1):
    exactly what sdedit-1step computes for strength 0.001 (t = round(0.001·1000) = 1)."""
    multi, context = run(SDEdit(SDEdit.Config(steps=100, latent="mean")), images, tiny_model, "0.01", seed=5)
    single, single_context = run(
        SDEditOneStep(SDEditOneStep.Config(latent="mean")), images, tiny_model, "0.001", seed=5
    )
    assert context.notes["sdedit"]["0.01"]["noised_to"] == 1
    assert single_context.notes["sdedit-1step"]["0.001"] == {"timestep": 1}
    torch.testing.assert_close(multi, single, atol=2e-4, rtol=0)


def test_one_step_and_multi_step_differ(tiny_model, images):
    multi, _ = run(SDEdit(SDEdit.Config(steps=10)), images, tiny_model, "0.5", seed=1)
    single, _ = run(SDEditOneStep(), images, tiny_model, "0.5", seed=1)
    assert (multi - single).abs().mean() > 1e-3


def test_clear_errors(tiny_model, images):
    with pytest.raises(ValueError, match="context.setting"):
        SDEdit()(images, tiny_model, generator=torch.Generator(), context=AttackContext())
    with pytest.raises(ValueError, match="0 of 10 DDIM steps"):
        run(SDEdit(SDEdit.Config(steps=10)), images, tiny_model, "0.05")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(SDEdit(), images * 2.0, tiny_model, "0.1")
    with pytest.raises(ValueError, match="strength"):
        run(SDEditOneStep(), images, tiny_model, "1.5")


def test_a_purification_and_an_attack_share_one_context(tiny_model, images):
    """``diffpure-latent+sdedit`` as the runner runs it: one context, notes kept apart per attack."""
    from cloakbench.mimicry.diffpure_latent import LatentDiffPure as DiffPure

    context = AttackContext(setting="0.5", prompt="a photo")
    purified = DiffPure(DiffPure.Config(steps=2))(
        images, tiny_model, generator=torch.Generator().manual_seed(0), context=context
    )
    out = SDEdit(SDEdit.Config(steps=4))(
        purified, tiny_model, generator=torch.Generator().manual_seed(0), context=context
    )
    assert out.shape == images.shape
    assert context.notes["diffpure-latent"]["t_star"] == 100 and context.notes["sdedit"]["0.5"]["denoising_steps"] == 2


def test_decode_clamps_what_the_vae_alone_leaves_out_of_range(tiny_model):
    """SDEdit's outputs are in [0, 1] because LDM.decode clamps: latents far from the data decode
    out of range through the VAE alone, and into range through the bundle."""
    latents = 50 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = tiny_model.vae.decode(latents / tiny_model.scaling_factor).sample
        decoded = tiny_model.decode(latents)
    assert float(raw.min()) < -1.0 or float(raw.max()) > 1.0, "the probe must leave the range, or it proves nothing"
    assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0
