"""Inpainting is measured where the attack acted (#27): the confound test.

Inpainting pastes the kept pixels back from its input, so a protection that perturbs only the
kept pixels changes the whole-image comparison without changing anything the attack made.
On the masked region it must score as no protection: the output equals the clean twin's there.
"""

from __future__ import annotations

import math

import pytest
import torch

from cloakbench.metrics import METRICS
from cloakbench.metrics.masked import mask_box, region_pair, region_values, whole_image_name
from cloakbench.mimicry.inpaint import background_mask, center_box_mask


def _scene(mask: torch.Tensor):
    generator = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=(64, 64), mode="bilinear")
    repaint = torch.rand(1, 3, 64, 64, generator=generator)  # what the attack makes in the masked region
    outside_only = (clean + 16 / 255 * torch.randn(clean.shape, generator=generator).sign() * (1 - mask)).clamp(0, 1)
    # The attack on each input: its repaint inside the mask, its input pasted back outside.
    twin = repaint * mask + clean * (1 - mask)
    attacked = repaint * mask + outside_only * (1 - mask)
    return clean, twin, attacked


@pytest.mark.parametrize("kind", ["center", "background"])
def test_a_protection_outside_the_mask_scores_as_no_protection(kind):
    mask = center_box_mask(1, 64, 64, 0.5) if kind == "center" else background_mask(1, 64, 64, (0.6, 0.8))
    _, twin, attacked = _scene(mask)
    ssim, psnr = METRICS.get("ssim")(), METRICS.get("psnr")()
    # Whole image: the confound — it looks like a protection (the pasted-back perturbation).
    assert ssim(attacked, twin).item() < 0.95
    # Masked region: exactly what no protection gives (the attack's output equals its clean twin's).
    assert region_values(ssim, attacked, twin, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(region_values(psnr, attacked, twin, mask).item())
    # A protection that changes what the attack makes is still seen there.
    other = attacked.clone()
    other[mask.expand_as(other) >= 0.5] = 1 - other[mask.expand_as(other) >= 0.5]
    assert region_values(ssim, other, twin, mask).item() < 0.5


def test_the_region_is_the_mask_box():
    mask = center_box_mask(2, 64, 64, 0.5)
    assert mask_box(mask[0]) == (16, 48, 16, 48)
    outputs, references = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    pairs = region_pair(outputs, references, mask)
    assert [tuple(o.shape) for o, _ in pairs] == [(1, 3, 32, 32)] * 2
    torch.testing.assert_close(pairs[1][0], outputs[1:, :, 16:48, 16:48])
    with pytest.raises(ValueError, match="repaints no pixel"):
        mask_box(torch.zeros(1, 64, 64))
    assert whole_image_name("ssim") == "ssim-whole"


def test_a_compare_run_measures_inpainting_on_its_region_and_keeps_the_whole_image_as_a_second_metric(tmp_path):
    """Through the harness (bench/execute.py strength_rows): inpainting's strength rows are the region's,
    under the metric's name, and the whole image's under ``<metric>-whole``; SDEdit keeps one name."""
    import csv

    import numpy as np
    from PIL import Image

    from cloakbench.bench.compare import run_compare
    from cloakbench.bench.spec import CompareSpec

    folder = tmp_path / "in"
    folder.mkdir()
    for seed in (1, 2):
        coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((64, 64), Image.Resampling.BILINEAR).save(folder / f"{seed}.png")
    summary = run_compare(
        CompareSpec(
            images=[str(folder)],
            methods="noise",
            attacks="inpaint,sdedit",
            metrics="psnr",
            model="tiny-random",
            quick=True,
            out=tmp_path / "run",
            write_report=False,
        )
    )
    assert summary.failed == 0
    with open(summary.rows_csv, newline="") as handle:
        rows = [
            r for r in csv.DictReader(handle) if r["pair"] == "attack_vs_clean_attack" and r["protection"] == "noise"
        ]
    by_attack = {(r["mimicry"], r["metric"]) for r in rows}
    assert {("inpaint", "psnr"), ("inpaint", "psnr-whole"), ("sdedit", "psnr")} <= by_attack
    assert ("sdedit", "psnr-whole") not in by_attack
    region = [float(r["value"]) for r in rows if (r["mimicry"], r["metric"]) == ("inpaint", "psnr")]
    whole = [float(r["value"]) for r in rows if (r["mimicry"], r["metric"]) == ("inpaint", "psnr-whole")]
    assert len(region) == len(whole) == 2 and region != whole
