"""``bench protect`` returns the artist's picture at its own size (cloakbench.bench.fullsize)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.bench.fullsize import enforce_budget, plan_size, protect_full_size
from cloakbench.protections import PROTECTIONS


def smooth_picture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth 8-bit RGB picture (random picture content would make the JPEG case meaningless)."""
    coarse = np.random.default_rng(seed).random((6, 9, 3))
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.array(image)  # writable, so torch.from_numpy does not warn


def levels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_plan_is_full_when_it_fits_and_tiles_cover_every_pixel_otherwise():
    full = plan_size(200, 300, multiple=8, tile_size=64, max_pixels=65536)
    assert (full.mode, full.padded_height, full.padded_width) == ("full", 200, 304)
    tiles = plan_size(700, 1000, multiple=8, tile_size=64, max_pixels=65536)
    assert tiles.mode == "tiles" and (tiles.padded_height, tiles.padded_width) == (704, 1000)
    covered = np.zeros((tiles.padded_height, tiles.padded_width), dtype=int)
    for top, left in tiles.origins:
        covered[top : top + tiles.tile_height, left : left + tiles.tile_width] += 1
    assert covered.min() >= 1  # every pixel in some tile
    assert tiles.overlap == 16 and covered.max() <= 4
    assert tiles.record()["tiles"] == len(tiles.origins)


def test_blended_tiles_are_projected_onto_the_budget_of_the_full_image():
    """Whatever a blend does in floating point, the output is 8-bit and within eps of the clean image."""
    clean = torch.from_numpy(smooth_picture(40, 56, 0)).permute(2, 0, 1).float() / 255
    wild = (clean + torch.randn(clean.shape) * 0.5).clamp(-1, 2)
    out = enforce_budget(wild, clean, 4.0)
    assert float((out - clean).abs().max()) * 255 <= 4 + 1e-4
    assert torch.equal(out, torch.round(out * 255) / 255) and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("max_pixels,mode", [(1 << 20, "full"), (4096, "tiles")])
def test_a_non_square_picture_comes_back_at_its_own_size_within_budget(tiny_model, max_pixels, mode):
    picture = torch.from_numpy(smooth_picture(75, 101, 1)).permute(2, 0, 1).float() / 255
    protection = PROTECTIONS.get("sds-").from_overrides({"steps": "2", "eps": "8"})
    result = protect_full_size(protection, picture, tiny_model, seed=0, max_pixels=max_pixels, tile_batch=8)
    assert result.plan.mode == mode
    assert tuple(result.protected.shape) == (3, 75, 101)
    linf = float((result.protected - picture).abs().max()) * 255
    assert 0 < linf <= 8 + 1e-4
    assert result.loss_first is not None and np.isfinite(result.loss_first)


def test_bench_protect_300x200_full_and_1000x700_tiled_under_a_memory_cap(tmp_path):
    """The acceptance case: both pictures come back at their own size, the measured L∞ <= eps."""
    folder = tmp_path / "art"
    folder.mkdir()
    Image.fromarray(smooth_picture(200, 300, 2)).save(folder / "small.png")
    Image.fromarray(smooth_picture(700, 1000, 3)).save(folder / "large.jpg", quality=95)
    out = tmp_path / "out"
    # 300x200 pads to 304x200 = 60,800 px <= 65,536: whole; 1000x700 is tiled at the model's 64x64.
    result = CliRunner().invoke(
        app,
        [
            "protect",
            "--images",
            str(folder),
            "--model",
            "tiny-random",
            "--quick",
            "--steps",
            "1",
            "--batch-size",
            "64",
            "--max-pixels",
            "65536",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    for name, size, mode in (("small.png", (200, 300), "full"), ("large.jpg", (700, 1000), "tiles")):
        png = out / "sds-" / f"{name}.png"
        record = json.loads((out / "sds-" / f"{name}.json").read_text())
        assert levels(png).shape[:2] == size
        assert record["protected_as"]["mode"] == mode and record["size"] == [size[1], size[0]]
        assert record["intake"]["original_size"] == [size[1], size[0]] and record["intake"]["resized"] is None
        clean = np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.int16)
        measured = int(np.abs(levels(png) - clean).max())
        assert measured == record["linf_255"] and 0 < measured <= record["eps_255"]
    assert record["protected_as"]["tiles"] > 1 and record["protected_as"]["max_pixels"] == 65536
