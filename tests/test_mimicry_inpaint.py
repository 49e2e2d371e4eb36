"""Inpainting with the tiny model's 9-channel UNet: masks, paste-back, matching by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cloakbench.mimicry.base import AttackContext
from cloakbench.mimicry.inpaint import Inpaint, background_mask, center_box_mask


def attack(**overrides):
    return Inpaint.from_overrides({"steps": "2", **overrides})


def run(inpaint, images, model, context=None, seed=0):
    context = context or AttackContext(prompt="a photo")
    out = inpaint(images, model, generator=torch.Generator().manual_seed(seed), context=context)
    return out, context


@pytest.mark.parametrize("kind", ["center", "background"])
def test_kept_region_exact_masked_region_changed(kind, tiny_model, images):
    inpaint = attack(mask=kind)
    out, context = run(inpaint, images, tiny_model)
    again, _ = run(inpaint, images, tiny_model)
    masks = inpaint.masks(images, AttackContext())
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, again)
    keep = masks.expand_as(images) == 0
    assert torch.equal(out[keep], images[keep])
    assert (out[~keep] - images[~keep]).abs().mean() > 1e-2
    assert context.notes["paste_back"] is True


def test_generated_mask_geometry():
    box = center_box_mask(1, 64, 64, 0.5)
    assert box[0, 0, 16:48, 16:48].eq(1).all() and box.sum() == 32 * 32
    ellipse = background_mask(1, 64, 80, (0.6, 0.8))
    assert ellipse[0, 0, 32, 40] == 0 and ellipse[0, 0, 0, 0] == 1  # face kept, corner repainted
    kept = 1.0 - float(ellipse.mean())
    assert abs(kept - np.pi / 4 * 0.6 * 0.8) < 0.02
    assert torch.equal(ellipse, ellipse.flip(-1)) and torch.equal(ellipse, ellipse.flip(-2))


def _save_mask(path, array):
    Image.fromarray((array * 255).astype(np.uint8)).save(path, quality=95)


def test_masks_matched_by_name(tmp_path, tiny_model, images):
    left = np.zeros((64, 64))
    left[:, :32] = 1
    top = np.zeros((64, 64))
    top[:24, :] = 1
    _save_mask(tmp_path / "zebra.png", left)
    _save_mask(tmp_path / "apple.jpg", top)  # JPEG artefacts must not survive the 0.5 threshold
    (tmp_path / "notes.txt").write_text("not a mask")
    context = AttackContext(image_names=["zebra.png", "apple"], mask_dir=str(tmp_path), prompt="a photo")
    inpaint = attack(mask="folder")
    masks = inpaint.masks(images, context)
    assert torch.equal(masks[0, 0], torch.from_numpy(left).float())
    assert torch.equal(masks[1, 0], torch.from_numpy(top).float())
    out, _ = run(inpaint, images, tiny_model, context)
    keep = masks.expand_as(images) == 0
    assert torch.equal(out[keep], images[keep])


def test_larger_mask_with_the_same_aspect_is_resized_and_noted(tmp_path, images):
    big = np.zeros((128, 128))
    big[:, 64:] = 1
    _save_mask(tmp_path / "a.png", big)
    _save_mask(tmp_path / "b.png", big)
    context = AttackContext(image_names=["a", "b"], mask_dir=str(tmp_path))
    masks = attack(mask="folder").masks(images, context)
    assert masks[:, :, :, 32:].eq(1).all() and masks[:, :, :, :32].eq(0).all()
    assert context.notes["inpaint"]["masks_resized"] == ["a", "b"]
    _save_mask(tmp_path / "a.png", np.zeros((64, 96)))
    with pytest.raises(ValueError, match="aspect"):
        attack(mask="folder").masks(images, context)


def test_missing_mask_is_a_clear_error(tmp_path, tiny_model, images):
    _save_mask(tmp_path / "first.png", np.ones((64, 64)))
    context = AttackContext(image_names=["first.png", "second.png"], mask_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        run(attack(mask="folder"), images, tiny_model, context)
    message = str(error.value)
    assert "second.png" in message and str(tmp_path) in message and "first" in message
    with pytest.raises(ValueError, match="mask folder"):
        run(attack(mask="folder"), images, tiny_model, AttackContext(image_names=["a", "b"]))
