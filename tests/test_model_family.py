"""The model family this project ships — ``toy`` (LDM), ``toy-b`` (toy's VAE, its own
denoiser), ``toy-c`` (its own VAE and denoiser: toy v2, kept) and ``toy-pixel`` (pixel
DDPM): each loads offline, its files match its
``SHA256SUMS``, and a seeded forward pass gives the slice checked in beside this file
(``model_family_slices.json``).

After retraining a model, regenerate its slices with
``python tests/test_model_family.py --update`` and commit them with the weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from cloakbench.core.ldm import ModelError
from cloakbench.core.pixel_models import PixelDiffusion, load_pixel_model
from cloakbench.core.provenance import PROJECT_ROOT
from cloakbench.core.zoo import load_model

MODELS_DIR = PROJECT_ROOT / "models"
FAMILY = ("toy", "toy-b", "toy-c", "toy-pixel")
SLICES = Path(__file__).with_name("model_family_slices.json")
ATOL = 1e-4
SIZE_LIMIT = 120 * 1000 * 1000  # everything under models/, bytes (issue #11: ≤ 80 MB; #23, with toy-flow: ≤ 120 MB)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to reach a hub fails: the family must load from the repository alone."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def load(name: str):
    return load_pixel_model(name) if name == "toy-pixel" else load_model(name, device="cpu", dtype="float32")


@torch.no_grad()
def forward_slices(model) -> dict[str, list[float]]:
    """Seeded inputs through each trained part; small slices of the outputs.

    Inputs are smaller than the working size (every part is convolutional) to stay cheap.
    """
    generator = torch.Generator().manual_seed(0)
    if isinstance(model, PixelDiffusion):
        images = torch.rand(1, 3, 32, 32, generator=generator)
        x_t = model.add_noise(images, 100, generator)
        eps = model.predict_noise(x_t, 100)
        return {"eps_t100": eps[0, :, 0, :4].flatten().tolist()}
    images = torch.rand(1, 3, 64, 64, generator=generator)
    latents = model.encode(images, mode="mean")
    decoded = model.decode(latents)
    noisy = torch.randn(1, model.unet.config.in_channels, 8, 8, generator=generator)
    eps = model.predict_noise(noisy, torch.tensor([500]), model.encode_prompt("a photo"))
    return {
        "latent_mean": latents[0, :, 0, :3].flatten().tolist(),
        "decoded": decoded[0, :, 10, 10:14].flatten().tolist(),
        "eps_t500": eps[0, :, 0, :3].flatten().tolist(),
    }


def sums(folder: Path) -> dict[str, str]:
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines if line.strip())}


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(SLICES.read_text())


@pytest.mark.parametrize("name", FAMILY)
def test_loads_offline_and_forward_matches_checked_in_slice(name, expected):
    model = load(name)
    assert model.name == name
    assert model.resolution == 128
    modules = [model.unet] if isinstance(model, PixelDiffusion) else list(model.modules().values())
    assert all(not p.requires_grad for m in modules for p in m.parameters())
    got = forward_slices(model)
    assert set(got) == set(expected[name])
    for key, values in expected[name].items():
        torch.testing.assert_close(
            torch.tensor(got[key]),
            torch.tensor(values),
            atol=ATOL,
            rtol=0,
            msg=f"{name}: {key} moved from its checked-in slice",
        )


@pytest.mark.parametrize("name", FAMILY)
def test_files_match_sha256sums_and_card(name):
    folder = MODELS_DIR / name
    listed = sums(folder)
    weights = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors"))
    assert sorted(listed) == weights and weights
    card = (folder / "MODEL_CARD.md").read_text()
    for file, digest in listed.items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, f"{name}/{file}"
        assert digest in card, f"{name}/MODEL_CARD.md does not list the hash of {file}"
    for suffix in ("*.bin", "*.pt", "*.pth", "*.ckpt"):
        assert not list(folder.rglob(suffix)), f"{name} ships a pickle file"
    for record in ("measurements.json", "train_log.json"):
        assert json.loads((folder / record).read_text())


def test_toy_b_shares_toy_vae_and_has_its_own_denoiser(expected):
    # Same VAE: the same seeded image gives the same latents and the same decoding.
    for key in ("latent_mean", "decoded"):
        assert expected["toy-b"][key] == expected["toy"][key]
    assert expected["toy-b"]["eps_t500"] != expected["toy"]["eps_t500"]
    toy, toy_b = sums(MODELS_DIR / "toy"), sums(MODELS_DIR / "toy-b")
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert toy_b[vae] == toy[vae]
    assert toy_b["unet/diffusion_pytorch_model.safetensors"] != toy["unet/diffusion_pytorch_model.safetensors"]
    assert toy_b["text_encoder/model.safetensors"] != toy["text_encoder/model.safetensors"]


def test_toy_c_has_its_own_vae_and_denoiser():
    toy, toy_c = sums(MODELS_DIR / "toy"), sums(MODELS_DIR / "toy-c")
    for file in (
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ):
        assert toy_c[file] != toy[file], file
    toy_model, toy_c_model = load("toy"), load("toy-c")
    # Another latent space, not only other weights: the transfer between autoencoders.
    assert toy_c_model.vae.config.latent_channels != toy_model.vae.config.latent_channels
    assert toy_c_model.inpaint_unet is None


def test_everything_under_models_fits_the_size_limit():
    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*") if p.is_file())
    assert total <= SIZE_LIMIT, f"models/ holds {total / 1e6:.1f} MB"


def test_bench_models_lists_the_family_as_ready():
    from cloakbench.bench.cli.models import model_status

    rows = {name: (ready, detail) for name, ready, detail in model_status()}
    for name in FAMILY:
        assert rows[name][0], f"{name}: {rows[name][1]}"


def test_pixel_model_names_a_missing_weight_file(tmp_path):
    folder = tmp_path / "toy-pixel"
    shutil.copytree(MODELS_DIR / "toy-pixel", folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError, match="diffusion_pytorch_model.safetensors"):
        load_pixel_model(folder)
    with pytest.raises(ModelError, match="does not exist"):
        load_pixel_model(tmp_path / "nowhere")


def test_pixel_purification_record_meets_its_goal():
    record = json.loads((MODELS_DIR / "toy-pixel" / "measurements.json").read_text())
    assert record["purification"]["t_star"] == 100
    assert record["purification"]["psnr_vs_input"]["mean"] >= 20.0


def _update() -> None:
    """Recompute every model's slices and write them (after retraining, on purpose only)."""
    torch.set_num_threads(1)
    SLICES.write_text(json.dumps({name: forward_slices(load(name)) for name in FAMILY}, indent=1) + "\n")
    print(f"wrote {SLICES}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        _update()
    else:
        sys.exit("usage: python tests/test_model_family.py --update")
