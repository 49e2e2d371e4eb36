"""The encoder-vulnerability analysis (metrics/analysis/encoder.py) on the tiny seeded model."""

from __future__ import annotations

import math

import pytest
import torch

from cloakbench.metrics.analysis import ANALYSIS_METRICS, encoder_analysis, encoder_analysis_batch


def _as_dict(rows):
    return {row["metric"]: row for row in rows}


@pytest.fixture()
def protected_pair(images):
    generator = torch.Generator().manual_seed(11)
    sign = torch.randint(0, 2, images.shape, generator=generator).float() * 2 - 1
    # Keep away from 0 and 1 so clamping does not shrink the budget.
    clean = images.clamp(16 / 255, 1 - 16 / 255)
    return clean, clean + 8 / 255 * sign


def test_rows_follow_the_definitions(tiny_model, protected_pair):
    clean, protected = protected_pair
    rows = _as_dict(encoder_analysis(tiny_model, clean[0], protected[0]))
    assert list(rows) == list(ANALYSIS_METRICS)
    assert all(row["unit"] == ANALYSIS_METRICS[name][0] for name, row in rows.items())
    delta_x = (protected[0] - clean[0]).double()
    assert rows["delta_x_linf"]["value"] == pytest.approx(8.0, abs=1e-3)
    assert rows["delta_x_l2"]["value"] == pytest.approx(8.0 * math.sqrt(delta_x.numel()), rel=1e-4)
    assert rows["delta_x_l2_rel"]["value"] == pytest.approx(
        (delta_x.norm() / clean[0].double().norm()).item(), rel=1e-6
    )
    with torch.no_grad():
        z = tiny_model.encode(clean[:1], mode="mean").double()
        z_adv = tiny_model.encode(protected[:1], mode="mean").double()
    assert rows["delta_z_linf"]["value"] == pytest.approx((z_adv - z).abs().max().item(), rel=1e-5)
    assert rows["delta_z_l2_rel"]["value"] == pytest.approx(((z_adv - z).norm() / z.norm()).item(), rel=1e-5)
    amplification = rows["delta_z_l2_rel"]["value"] / rows["delta_x_l2_rel"]["value"]
    assert rows["amplification"]["value"] == pytest.approx(amplification, rel=1e-9)
    assert rows["amplification"]["value"] > 0


def test_posterior_means_make_it_deterministic(tiny_model, protected_pair):
    clean, protected = protected_pair
    first = encoder_analysis(tiny_model, clean[:1], protected[:1])
    second = encoder_analysis(tiny_model, clean[:1], protected[:1])
    assert first == second


def test_batch_matches_single_images(tiny_model, protected_pair):
    clean, protected = protected_pair
    batch = encoder_analysis_batch(tiny_model, clean, protected)
    assert len(batch) == len(clean)
    for i, rows in enumerate(batch):
        single = _as_dict(encoder_analysis(tiny_model, clean[i], protected[i]))
        for row in rows:
            assert row["value"] == pytest.approx(single[row["metric"]]["value"], rel=1e-4, abs=1e-9)


def test_unchanged_image_has_no_amplification_number(tiny_model, images):
    rows = _as_dict(encoder_analysis(tiny_model, images[0], images[0]))
    assert rows["delta_x_l2"]["value"] == 0 and rows["delta_z_l2"]["value"] == 0
    assert rows["amplification"]["value"] is None and "undefined" in rows["amplification"]["note"]


def test_a_batch_is_refused_by_the_single_image_form(tiny_model, images):
    with pytest.raises(ValueError, match="one image"):
        encoder_analysis(tiny_model, images, images)
