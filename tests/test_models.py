"""Model loading: tiny-random, local folders through the real path, and the preflight refusals."""

from __future__ import annotations

import shutil

import pytest
import torch

from cloakbench.core.folders import preflight
from cloakbench.core.ldm import ModelError
from cloakbench.core.zoo import load_model


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, tiny_model):
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("models") / "tiny-saved")


def test_tiny_random_is_seeded_frozen_and_sd_shaped(tiny_model):
    assert all(not p.requires_grad for m in tiny_model.modules().values() for p in m.parameters())
    latent = tiny_model.encode(torch.rand(1, 3, 64, 64), mode="mean")
    assert latent.shape == (1, 4, 8, 8)  # VAE downsamples by 8 into 4 channels, as Stable Diffusion does
    assert tiny_model.inpaint_unet.config.in_channels == 9
    again = load_model("tiny-random", seed=0)
    assert again.weights_hash == tiny_model.weights_hash
    first = next(tiny_model.unet.parameters())
    assert torch.equal(first, next(again.unet.parameters()))
    assert tiny_model.tokenizer.model_max_length == 77


def test_saved_folder_loads_offline_bit_identically(saved_tiny, tiny_model):
    loaded = load_model(str(saved_tiny))
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.encode(images, mode="mean"), tiny_model.encode(images, mode="mean"))
    assert loaded.resolution == tiny_model.resolution
    assert len(loaded.weights_hash) == 64  # sha256 of the safetensors files
    assert loaded.source == str(saved_tiny)


def test_missing_unet_fails_in_preflight_naming_it(saved_tiny, tmp_path):
    broken = shutil.copytree(saved_tiny, tmp_path / "no-unet")
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelError, match=r"missing .*no-unet/unet/"):
        load_model(str(broken))


def test_pickle_only_folder_is_refused_unless_allowed(saved_tiny, tmp_path, tiny_model):
    pickled = shutil.copytree(saved_tiny, tmp_path / "pickled")
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(tiny_model.unet.state_dict(), pickled / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match=r"diffusion_pytorch_model.bin is a pickle file.*--allow-pickle"):
        load_model(str(pickled))
    loaded = load_model(str(pickled), allow_pickle=True)
    assert torch.equal(next(loaded.unet.parameters()), next(tiny_model.unet.parameters()))


def test_pickle_loading_never_runs_code(tmp_path, saved_tiny):
    """weights_only=True refuses arbitrary objects: a malicious pickle fails, it does not run."""
    hostile = shutil.copytree(saved_tiny, tmp_path / "hostile")
    (hostile / "vae" / "diffusion_pytorch_model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"weight": Payload()}, hostile / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights only|unsupported|WeightsUnpickler"):
        load_model(str(hostile), allow_pickle=True)


def test_missing_folder_says_how_to_get_weights(tmp_path):
    with pytest.raises(ModelError, match=r"does not exist.*huggingface-cli download"):
        load_model(str(tmp_path / "sd15"))


def test_uncached_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match=r"not in the local Hugging Face cache"):
        load_model("someone/not-cached-model")


def test_unknown_name_suggests_a_near_miss():
    with pytest.raises(KeyError, match="did you mean 'tiny-random'"):
        load_model("tiny-randon")


def test_preflight_lists_weight_files(saved_tiny):
    found = preflight(saved_tiny)
    assert set(found) == {"unet", "vae", "text_encoder", "inpaint_unet"}
    assert all(path.suffix == ".safetensors" for path in found.values())


def test_sd15_architecture_config_is_the_real_one():
    # Parameter counts of the published SD 1.5 (the published model cards: UNet 859.5 M, VAE 83.7 M), computed on the meta device.
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from cloakbench.core.architectures import SD15_UNET, SD_VAE

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD_VAE)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 859.5
    assert round(sum(p.numel() for p in vae.parameters()) / 1e6, 1) == 83.7


def test_building_a_model_leaves_the_global_rng_and_no_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    import torch

    from cloakbench.core.zoo import load_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # every temporary folder lands here
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    load_model("tiny-random", seed=7)
    assert torch.equal(torch.rand(3), expected)  # the caller's seed was not moved
    assert list(tmp_path.iterdir()) == []  # the tokenizer's folder was removed after loading


def test_model_facts_match_the_built_model_without_building_it():
    from cloakbench.core.zoo import load_model, model_facts

    facts = model_facts("tiny-random", seed=3)
    built = load_model("tiny-random", seed=3)
    assert facts.identity("float32") == built.identity()
    assert facts.resolution == built.resolution
    assert model_facts("tiny-random", seed=4).weights_hash != facts.weights_hash
