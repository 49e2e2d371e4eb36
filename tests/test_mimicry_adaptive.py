"""Adaptive attackers (docs/MIMICRY.md, "Adaptive attackers"): encoder-harden, counter-pgd, robust chains.

The strength tests measure what each attack is for, on tiny-random: how far a protection moves
the latent the attack's next stage sees, ``‖z(x̃) − z(x)‖²`` (posterior means), before and after
the adaptive stage. An adaptive attack must shrink that for a real protection (the untargeted
encoder attack) by a larger fraction than for random noise of the same budget; an attack that
changes nothing shrinks both by 0 and fails.
"""

from __future__ import annotations

import pytest
import torch

from cloakbench.bench.copier import RunProtections
from cloakbench.core.images import pixel_hash
from cloakbench.mimicry import MIMICRY, AttackContext
from cloakbench.mimicry.base import ROBUST_MIMICRY_CHAINS, expand_all_attacks, is_adaptive, resolve_attacks
from cloakbench.mimicry.encoder_harden import copier_images

#: The protection the adaptive attacks are tested against, strong enough on tiny-random to move the latent.
PROTECTION_STEPS = {("protection", "encoder"): {"steps": 10}, ("protection", "noise"): {}}


def latent_shift(model, published: torch.Tensor, clean: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.encode(published, mode="mean") - model.encode(clean, mode="mean")).pow(2).mean())


@pytest.fixture(scope="module")
def published(tiny_model, clean8):
    protections = RunProtections(tiny_model, quick=True, overrides=PROTECTION_STEPS)
    return {
        name: protections.protect(name, clean8, generator=torch.Generator().manual_seed(3))
        for name in ("encoder", "noise")
    }


def relative_drop(before: float, after: float) -> float:
    return (before - after) / before


def test_encoder_harden_weakens_the_encoder_attack_more_than_noise(tiny_model, clean8, published, tmp_path):
    harden = MIMICRY.get("encoder-harden").from_overrides(
        {"against": "encoder", "pairs": 8, "steps": 40, "learning_rate": 1e-3}
    )
    context = AttackContext(
        protections=RunProtections(tiny_model, quick=True, overrides=PROTECTION_STEPS),
        cache_dir=str(tmp_path),
        held_out=frozenset(pixel_hash(image) for image in clean8),
    )
    hardened = harden.adapt_model(tiny_model, generator=torch.Generator().manual_seed(0), context=context)
    assert hardened.vae is not tiny_model.vae and hardened.unet is tiny_model.unet
    assert hardened.vae.decoder.state_dict()["conv_out.weight"].equal(
        tiny_model.vae.decoder.state_dict()["conv_out.weight"]
    )
    drops = {
        name: relative_drop(latent_shift(tiny_model, images, clean8), latent_shift(hardened, images, clean8))
        for name, images in published.items()
    }
    assert drops["encoder"] > 0 and drops["encoder"] > drops["noise"], drops
    # Trained once: a second stage (another cell) loads the same encoder from the run folder.
    files = sorted((tmp_path / "encoder-harden").glob("*.safetensors"))
    assert len(files) == 1
    from cloakbench.mimicry import encoder_harden

    encoder_harden._LOADED.clear()
    again = harden.adapt_model(
        tiny_model,
        generator=torch.Generator().manual_seed(9),
        context=AttackContext(protections=context.protections, cache_dir=str(tmp_path)),
    )
    for (name, a), b in zip(hardened.vae.encoder.state_dict().items(), again.vae.encoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_counter_pgd_weakens_the_encoder_attack_more_than_noise(tiny_model, clean8, published):
    counter = MIMICRY.get("counter-pgd").from_overrides({"steps": 20})
    drops = {}
    for name, images in published.items():
        purified = counter(images, tiny_model, generator=torch.Generator().manual_seed(0), context=AttackContext())
        assert (purified - images).abs().max() <= 16 / 255 + 1e-6  # within the copier's own budget
        drops[name] = relative_drop(
            latent_shift(tiny_model, images, clean8), latent_shift(tiny_model, purified, clean8)
        )
    assert drops["encoder"] > 0 and drops["encoder"] > drops["noise"], drops


def test_encoder_harden_refuses_an_evaluated_picture_and_an_unknown_protection(tiny_model):
    pictures, _ = copier_images("toy-train", tiny_model.resolution)
    protections = RunProtections(tiny_model, quick=True)
    harden = MIMICRY.get("encoder-harden").from_overrides({"pairs": 21, "steps": 1, "against": "photoguard"})
    context = AttackContext(protections=protections, held_out=frozenset({pixel_hash(pictures[0])}))
    with pytest.raises(ValueError, match="also an evaluated image"):
        harden.adapt_model(tiny_model, generator=torch.Generator(), context=context)
    unknown = MIMICRY.get("encoder-harden").from_overrides({"against": "photogard"})
    with pytest.raises(ValueError, match="no public protection 'photogard'"):
        unknown.adapt_model(tiny_model, generator=torch.Generator(), context=AttackContext(protections=protections))
    with pytest.raises(ValueError, match="AttackContext.protections"):
        harden.adapt_model(tiny_model, generator=torch.Generator(), context=AttackContext())


def test_all_public_protections_leave_out_the_controls(tiny_model):
    names = RunProtections(tiny_model).names()
    assert "photoguard" in names and "sds-" in names and "none" not in names and "noise" not in names


def test_robust_mimicry_chains_and_adaptive_flags():
    assert resolve_attacks("robust") == list(ROBUST_MIMICRY_CHAINS)
    assert set(ROBUST_MIMICRY_CHAINS) <= set(expand_all_attacks())
    assert resolve_attacks("jpeg+upscale-bicubic+lora") == ["jpeg+upscale-bicubic+lora"]
    assert resolve_attacks("encoder-harden+counter-pgd+lora") == ["encoder-harden+counter-pgd+lora"]
    assert is_adaptive("encoder-harden+sdedit") and is_adaptive("counter-pgd+sdedit")
    assert not is_adaptive("upscale-bicubic+lora") and not is_adaptive("sdedit")
    with pytest.raises(ValueError, match="only purifications can come before"):
        resolve_attacks("lora+sdedit")
