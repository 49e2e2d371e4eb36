"""Targets as the references use them (issue #13): the text target, PhotoGuard's own recipe,
Mist's semantic weight at any resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.protections import PROTECTIONS
from cloakbench.protections.engine import with_profile
from cloakbench.protections.mist import REFERENCE_LATENT_ELEMENTS
from cloakbench.protections.photoguard import PhotoGuard
from cloakbench.protections.targets import TEXT_TILES_ACROSS, TEXT_TILES_DOWN, target_image, text_image


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("side", [64, 128, 512])
def test_text_target_is_tiled_black_and_white_text_like_the_references_mist_png(side):
    picture = text_image(side, side)
    assert picture.shape == (3, side, side)
    assert set(picture.unique().tolist()) == {0.0, 1.0}  # two levels, as MIST.png
    assert torch.equal(picture[0], picture[1]) and torch.equal(picture[0], picture[2])  # black and white
    # White text on black: the reference's MIST.png is about a quarter white (mean 67/255).
    assert 0.15 < picture.mean().item() < 0.4
    # Tiled: a tile of W/3 × H/9 repeats across and down.
    tile_h, tile_w = side // TEXT_TILES_DOWN, side // TEXT_TILES_ACROSS
    plane = picture[0]
    assert torch.equal(plane[:tile_h, :tile_w], plane[tile_h : 2 * tile_h, tile_w : 2 * tile_w])
    # Text, not a flat block: within a tile, many columns switch between ink and background.
    switches = (plane[:tile_h, 1:tile_w] != plane[:tile_h, : tile_w - 1]).sum().item()
    assert switches > 4 * tile_h // 2
    assert torch.equal(picture, target_image("text", side, side))  # deterministic, no file


def test_text_is_the_default_target_of_texture_mist_and_sdst():
    for name in ("texture", "mist", "sdst-"):
        assert PROTECTIONS.get(name).Config().target == "text", name


def test_photoguard_defaults_to_its_own_recipe():
    config = PROTECTIONS.get("photoguard").Config()
    # MadryLab/photoguard demo_simple_attack_img2img: eps 0.06, step 0.02 on [-1, 1], linear decay,
    # the zero latent (loss = ‖latent_dist.mean‖), uniform random start.
    assert config.eps == pytest.approx(0.06 * 255 / 2) and config.alpha == pytest.approx(0.02 * 255 / 2)
    assert (config.alpha_schedule, config.target, config.latent, config.random_start) == (
        "linear",
        "zero",
        "mean",
        True,
    )
    paper = with_profile(PhotoGuard, "paper").config
    assert paper.steps == 1000 and paper.eps == config.eps
    xue = with_profile(PhotoGuard, "xue").config
    assert (xue.eps, xue.alpha, xue.alpha_schedule, xue.target) == (16.0, 1.0, "constant", "text")


def test_photoguard_and_texture_give_different_pngs_on_the_toy(tmp_path):
    """``bench protect --method photoguard`` and ``--method texture`` on the same images (issue #13)."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8)).save(pictures / f"{name}.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "protect",
            "--method",
            "photoguard,texture",
            "--images",
            str(pictures),
            "--model",
            "toy",
            "--steps",
            "3",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output

    def saved(method, name):  # the one PNG written for this picture (named after it)
        (png,) = [p for p in (out / method).glob(f"{name}.*") if p.suffix == ".png"]
        return np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)

    for name in ("a", "b"):
        clean = np.asarray(Image.open(pictures / f"{name}.png").convert("RGB"), dtype=np.int16)
        photoguard, texture = saved("photoguard", name), saved("texture", name)
        assert photoguard.shape == texture.shape
        # Different budgets (7 vs 16 levels) and targets (zero latent vs text): most pixels differ.
        assert np.abs(photoguard - clean).max() <= 7 < np.abs(texture - clean).max() <= 16
        assert (photoguard != texture).mean() > 0.5, name


def test_mist_semantic_weight_scales_with_the_latent_and_the_reference_profile_keeps_it(tiny_model, clean8):
    mist = PROTECTIONS.get("mist").from_overrides({"steps": "2"})
    assert mist.effective_semantic_weight((4, 64, 64)) == pytest.approx(1e4)  # the reference's 512²
    assert mist.effective_semantic_weight((4, 16, 16)) == pytest.approx(1e4 / 16)  # 128²
    literal = with_profile(PROTECTIONS.get("mist"), "reference", {"steps": "2"})
    assert literal.effective_semantic_weight((4, 16, 16)) == pytest.approx(1e4)
    # The scaled weight is what the step uses: same PNG as the unscaled rule with w·n/(4·64·64).
    _count, _, side, _ = clean8.shape
    latent_elements = 4 * (side // 8) ** 2  # tiny-random: 4 latent channels, downsampling by 8
    from cloakbench.protections.engine import latent_shape

    shape = latent_shape(tiny_model, side, side)
    assert int(np.prod(shape)) == latent_elements
    by_hand = PROTECTIONS.get("mist").from_overrides(
        {
            "steps": "2",
            "scale_semantic_weight": "false",
            "semantic_weight": str(1e4 * latent_elements / REFERENCE_LATENT_ELEMENTS),
        }
    )
    scaled = mist(clean8, tiny_model, generator=generator(2))
    assert torch.equal(scaled, by_hand(clean8, tiny_model, generator=generator(2)))
    assert not torch.equal(scaled, literal(clean8, tiny_model, generator=generator(2)))
