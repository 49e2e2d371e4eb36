"""The shipped ``toy`` model: loads offline through load_model, matches its hashes, and
reproduces the VAE round trip its model card records."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

from cloakbench.core.toy_data import HELD_OUT, TRAIN, training_pictures
from cloakbench.core.zoo import ZOO, load_model

TOY_MODEL_DIR = ZOO.get("toy").folder

pytestmark = pytest.mark.skipif(
    not (TOY_MODEL_DIR / "model_index.json").exists(),
    reason="models/toy not present (train it with scripts/train_toy.py)",
)


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu", dtype="float32")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sums() -> dict[str, str]:
    lines = (TOY_MODEL_DIR / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines if line.strip())}


def test_split_keeps_samples_out_of_training():
    assert set(HELD_OUT) == {"astronaut", "chelsea", "coffee", "rocket"}
    assert not set(HELD_OUT) & set(TRAIN)
    with pytest.raises(ValueError, match="held-out"):
        training_pictures(("grass", "chelsea"))


def test_toy_loads_offline_through_load_model(toy):
    assert toy.name == "toy"
    assert toy.resolution == 128
    channels = toy.vae.config.latent_channels
    assert channels == 16  # toy v3 (toy v2's 4 channels could not reach the 25 dB round trip)
    # SD's inpainting input: noisy latent, mask, masked image's latent.
    assert toy.inpaint_unet is not None and toy.inpaint_unet.config.in_channels == 2 * channels + 1
    assert len(toy.vae.config.block_out_channels) == 4  # 3 downsamplings: factor 8
    assert toy.scaling_factor == pytest.approx(toy.vae.config.scaling_factor)
    assert toy.scaling_factor != pytest.approx(0.18215)  # measured from the toy's own latents
    assert all(not p.requires_grad for m in toy.modules().values() for p in m.parameters())
    latents = toy.encode(torch.rand(1, 3, 128, 128), mode="mean")
    assert latents.shape == (1, channels, 16, 16)


def test_weight_files_match_sha256sums_and_model_card():
    sums = _sums()
    weights = sorted(str(p.relative_to(TOY_MODEL_DIR)) for p in TOY_MODEL_DIR.rglob("*.safetensors"))
    assert sorted(sums) == weights and len(weights) == 4
    card = (TOY_MODEL_DIR / "MODEL_CARD.md").read_text()
    for name, digest in sums.items():
        assert _sha256(TOY_MODEL_DIR / name) == digest, name
        assert digest in card, f"MODEL_CARD.md does not list the hash of {name}"
    assert not list(TOY_MODEL_DIR.rglob("*.bin")) and not list(TOY_MODEL_DIR.rglob("*.pt"))


def test_weights_stay_small():
    total = sum(p.stat().st_size for p in TOY_MODEL_DIR.rglob("*.safetensors"))
    assert total <= 26 * 1024 * 1024


def test_vae_round_trip_reproduces_recorded_psnr(toy):
    """One held-out image, posterior mean -> decode, within 1 dB of measurements.json."""
    from cloakbench.core.toy_data import held_out_images

    recorded = json.loads((TOY_MODEL_DIR / "measurements.json").read_text())
    name = "coffee"
    expected = recorded["vae_round_trip_psnr"]["per_image"][name]
    image = held_out_images(toy.resolution)[name][None]
    with torch.no_grad():
        recon = toy.decode(toy.encode(image, mode="mean"))
    psnr = float(10 * torch.log10(1.0 / (recon - image).pow(2).mean()))
    assert abs(psnr - expected) < 1.0
    # And the card quotes the same mean figure the measurements file holds.
    card = (TOY_MODEL_DIR / "MODEL_CARD.md").read_text()
    mean = recorded["vae_round_trip_psnr"]["mean"]
    assert re.search(rf"{mean:.1f}\s*dB", card), "MODEL_CARD.md should quote the measured VAE PSNR"


def test_inpainting_runs_on_the_toy_wide_latents(toy):
    """diffusers' inpainting pipeline takes only 4- or 9-channel UNets; the toy's reads 33, so
    the attack takes the same steps itself (mimicry/inpaint.py, inpaint_any_width)."""
    from cloakbench.mimicry.base import AttackContext
    from cloakbench.mimicry.inpaint import Inpaint

    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    context = AttackContext(setting="", image_names=["x"], prompt="a photo")
    out = Inpaint.from_overrides({"steps": "2"})(
        images, toy, generator=torch.Generator().manual_seed(0), context=context
    )
    inside = Inpaint().masks(images, context).bool().expand_as(images)
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert torch.equal(out[~inside], images[~inside])  # kept pixels pasted back exactly
    assert not torch.allclose(out[inside], images[inside], atol=0.05)  # the box was repainted
    assert context.notes["inpaint"]["loop"].startswith("cloakbench")
