"""``bench protect``: an artist's pictures in, protected PNGs and sidecars out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.core.quick import quick_component
from cloakbench.protections import PROTECTIONS, publishable_protections


@pytest.fixture(scope="module")
def picture_dir(tmp_path_factory):
    """Two small non-square PNGs and one broken file."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        Image.fromarray((rng.random((72, 90, 3)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"this is not a picture")
    return folder


def invoke(*args):
    return CliRunner().invoke(app, ["protect", *map(str, args)])


def read_levels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_protect_all_quick_writes_a_png_and_sidecar_per_method_and_image(picture_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke("--method", "all", "--images", picture_dir, "--model", "tiny-random", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "skipped" in result.output  # the bad file is named, the rest go on
    methods = publishable_protections()
    assert "sds-z" not in methods
    clean_none = {}
    for method in methods:
        for image in ("cat", "dog"):
            png, sidecar = out / method / f"{image}.png.png", out / method / f"{image}.png.json"
            assert png.is_file() and sidecar.is_file(), (method, image)
            record = json.loads(sidecar.read_text())
            assert record["method"] == method and record["image"] == image
            assert record["linf_255"] <= (record["eps_255"] if record["eps_255"] is not None else 0)
            assert record["within_budget"] in (True, None)
            assert record["wall_s"] > 0 and record["peak_rss_bytes"] > 0
            assert isinstance(record["config"], dict) and record["version"] >= 1
            if "steps" in record["config"]:  # --quick's steps, as each method declares them
                assert record["config"]["steps"] == quick_component(PROTECTIONS.get(method))["steps"]
            levels = read_levels(png)
            assert levels.shape == (72, 90, 3)  # the picture at its own size, never a crop
            if method == "none":
                clean_none[image] = levels
                assert record["linf_255"] == 0 and record["l2_255"] == 0
    # The sidecar measures the saved file: recompute L∞ and L2 from the PNGs themselves.
    record = json.loads((out / "sds-" / "cat.png.json").read_text())
    delta = read_levels(out / "sds-" / "cat.png.png") - clean_none["cat"]
    assert record["linf_255"] == np.abs(delta).max()
    assert record["l2_255"] == pytest.approx(float(np.sqrt((delta.astype(np.float64) ** 2).sum())))


def test_profile_set_and_seed(picture_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        picture_dir / "cat.png",
        "--method",
        "photoguard,sds-",
        "--model",
        "tiny-random",
        "--profile",
        "paper",
        "--steps",
        "2",
        "--set",
        "sds-.steps=1",
        "--seed",
        "3",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    photoguard = json.loads((out / "photoguard" / "cat.png.json").read_text())
    assert photoguard["profile"] == "paper" and photoguard["config"]["target"] == "zero"
    assert photoguard["config"]["steps"] == 2 and photoguard["linf_255"] <= 7  # 7.65 on the 8-bit grid
    sds = json.loads((out / "sds-" / "cat.png.json").read_text())
    assert sds["profile"] is None and sds["config"]["steps"] == 1 and sds["seed"] == 3


def test_same_seed_same_png_whatever_the_batch_size(picture_dir, tmp_path):
    outputs = []
    for batch in ("1", "2"):
        out = tmp_path / f"batch{batch}"
        # --max-pixels 4096 tiles the 90x72 pictures (4 tiles of 64x64): --batch-size is tiles per step.
        result = invoke(
            "--images",
            picture_dir,
            "--method",
            "noise",
            "--model",
            "tiny-random",
            "--batch-size",
            batch,
            "--max-pixels",
            "4096",
            "--out",
            out,
        )
        assert result.exit_code == 0, result.output
        outputs.append(read_levels(out / "noise" / "dog.png.png"))
    assert np.array_equal(*outputs)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "sds_minus"], "sds-"),  # did-you-mean
        (["--set", "mist.steps=2"], "mist"),  # --set for a method that is not run
        (["--profile", "nonesuch"], "profile"),
        (["--set", "sds-.stpes=2"], "stpes"),
        (["--method", "noise", "--reference-set", "."], "applies to aspl and fsmg only"),
        (["--method", "aspl", "--reference-set", "/nonexistent/set_A"], "no such folder"),
    ],
)
def test_bad_options_are_clear_errors(picture_dir, tmp_path, args, message):
    result = invoke("--images", picture_dir, "--model", "tiny-random", "--out", tmp_path, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir()), "nothing is written before the plan is valid"


def test_no_images_is_an_error(tmp_path):
    result = invoke("--model", "tiny-random", "--out", tmp_path)
    assert result.exit_code == 2 and "--images" in result.output


def test_help_explains_the_options():
    result = CliRunner().invoke(app, ["protect", "--help"])
    assert result.exit_code == 0
    for words in ("--images", "--method", "--eps", "--steps", "--profile", "--quick", "--seed", "Example"):
        assert words in result.output, words
