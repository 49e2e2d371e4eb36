"""Finding and loading pretrained metric weights offline (core/weights.py).

Each test writes a seeded random checkpoint of the right architecture into a temporary
torch hub / Hugging Face cache and loads it through the real code path; nothing here
needs network or real pretrained weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from cloakbench.core import weights


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    """Empty TORCH_HOME and HF_HOME, and no CLOAKBENCH_* overrides."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for variable in (
        "HF_HUB_CACHE",
        "CLOAKBENCH_ALEXNET",
        "CLOAKBENCH_VGG16",
        "CLOAKBENCH_INCEPTION",
        "CLOAKBENCH_CLIP",
    ):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def alexnet_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    """A full seeded torchvision AlexNet checkpoint (233 MB), written once per session."""
    torch.manual_seed(3)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("alexnet") / weights.ALEXNET.filename
    torch.save(state, path)
    return path, state


def install(checkpoint: Path, folder: Path, name: str | None = None) -> Path:
    """Put a checkpoint where a test wants it, by symlink (the loader follows links like any file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or checkpoint.name)
    target.symlink_to(checkpoint)
    return target


def test_places_follow_the_environment(caches):
    assert weights.torch_hub_checkpoints() == caches / "torch" / "hub" / "checkpoints"
    assert weights.hf_hub_cache() == caches / "hf" / "hub"
    assert weights.place(weights.ALEXNET) == caches / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"


def test_missing_weights_name_the_file_and_the_place(caches):
    assert weights.find(weights.ALEXNET) is None
    with pytest.raises(weights.WeightsMissing) as caught:
        weights.require(weights.INCEPTION)
    message = str(caught.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert str(caches / "torch" / "hub" / "checkpoints") in message
    assert "CLOAKBENCH_INCEPTION" in message and "https://" in message
    with pytest.raises(weights.WeightsMissing, match="openai/clip-vit-base-patch32"):
        weights.require(weights.CLIP)


def test_found_in_the_hub_cache_or_at_a_configured_path(caches, monkeypatch, tmp_path, alexnet_checkpoint):
    path = install(alexnet_checkpoint[0], weights.torch_hub_checkpoints())
    assert weights.find(weights.ALEXNET) == path
    elsewhere = install(alexnet_checkpoint[0], tmp_path / "mine")
    monkeypatch.setenv("CLOAKBENCH_ALEXNET", str(elsewhere))
    assert weights.find(weights.ALEXNET) == elsewhere
    monkeypatch.setenv("CLOAKBENCH_ALEXNET", str(tmp_path / "mine"))  # a folder holding the file works too
    assert weights.find(weights.ALEXNET) == elsewhere
    monkeypatch.setenv("CLOAKBENCH_ALEXNET", str(tmp_path / "nowhere.pth"))
    assert weights.find(weights.ALEXNET) is None  # a configured path that is wrong is not silently replaced
    assert "nowhere.pth" in weights.missing_message(weights.ALEXNET)


def test_lpips_backbone_is_the_file_on_disk(caches, alexnet_checkpoint):
    checkpoint, state = alexnet_checkpoint
    install(checkpoint, weights.torch_hub_checkpoints())
    model = weights.build_lpips("alex")
    first_conv = model.net.slice1[0].weight
    assert torch.equal(first_conv, state["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").bias, state["features.10.bias"])
    assert not any(p.requires_grad for p in model.parameters())


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: code run by a model file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_is_refused_unrun(caches, tmp_path):
    folder = weights.torch_hub_checkpoints()
    folder.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Payload(marker)}, folder / weights.ALEXNET.filename)
    with pytest.raises(Exception, match="(?i)weights.only"):
        weights.build_lpips("alex")
    assert not marker.exists()


def test_wrong_architecture_fails_loudly(caches):
    folder = weights.torch_hub_checkpoints()
    folder.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(3)}, folder / weights.ALEXNET.filename)
    with pytest.raises(RuntimeError, match="not a torchvision alexnet checkpoint"):
        weights.build_lpips("alex")


def write_tiny_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=99,
            projection_dim=16,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_hf_snapshot(repo_id: str, revision: str = "0123abcd") -> Path:
    repo = weights.hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    write_tiny_clip(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_clip_is_found_in_the_hf_cache_snapshot(caches):
    snapshot = write_hf_snapshot(weights.CLIP.repo_id)
    assert weights.find(weights.CLIP) == snapshot
    model, processor = weights.build_clip()
    assert model.config.vision_config.image_size == 32 and processor.crop_size["height"] == 32


def test_incomplete_clip_folder_is_missing(caches, monkeypatch, tmp_path):
    folder = write_tiny_clip(tmp_path / "clip")
    (folder / "model.safetensors").unlink()
    monkeypatch.setenv("CLOAKBENCH_CLIP", str(folder))
    assert weights.find(weights.CLIP) is None
    with pytest.raises(weights.WeightsMissing, match="model.safetensors"):
        weights.require(weights.CLIP)


def test_status_lists_every_spec(caches, alexnet_checkpoint):
    install(alexnet_checkpoint[0], weights.torch_hub_checkpoints())
    states = {s.spec.name: s.ready for s in weights.status()}
    assert states["alexnet"] and states["lpips-heads-alex"]
    assert not states["vgg16"] and not states["inception-fid"] and not states["clip"]


def test_bench_models_says_what_is_ready_and_where_the_rest_goes(caches, alexnet_checkpoint):
    from typer.testing import CliRunner

    from cloakbench.bench.cli.app import app

    install(alexnet_checkpoint[0], weights.torch_hub_checkpoints())
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def line_with(text: str) -> str:
        found = [line for line in lines if text in line]
        assert found, f"{text!r} not in output:\n{result.output}"
        return found[0]

    assert "ready" in line_with("alexnet-owt-7be5be79.pth")
    vgg = line_with("vgg16-397923af.pth")
    assert "missing" in vgg and str(weights.torch_hub_checkpoints()) in vgg
    assert "missing" in line_with("weights-inception-2015-12-05-6726825d.pth")
    assert "ready" in line_with("│ lpips ") and "unavailable" in line_with("│ fid ")
    assert "ready" in line_with("tiny-random")
