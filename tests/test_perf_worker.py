"""The perf child's measurement, run in-process on tiny-random (one short step each)."""

from __future__ import annotations

import pytest

from cloakbench.bench.perf.runner import PerfConfig, add_ratios
from cloakbench.bench.perf.worker import measure


@pytest.fixture(scope="module")
def rows():
    measured = [
        measure(PerfConfig(arch="tiny-random", method=method, steps=1, warmup=0, repeats=2, threads=1, mode=mode))
        for method, mode in (("advdm", "fair"), ("sds-", "fair"), ("advdm", "reference"), ("sds-", "reference"))
    ]
    add_ratios(measured)
    return {(r["method"], r["mode"]): r for r in measured}


def test_row_holds_what_the_json_promises(rows):
    row = rows[("sds-", "fair")]
    for key in (
        "method",
        "arch",
        "resolution",
        "batch",
        "reference_mode",
        "s_per_step",
        "peak_bytes",
        "saved_bytes",
        "time_ratio_to_advdm",
        "memory_ratio_to_advdm",
        "machine",
        "versions",
        "settings",
    ):
        assert key in row, key
    assert row["status"] == "ok" and row["resolution"] == 64 and row["reference_mode"] is False
    assert row["machine"]["cpu"] and row["versions"]["torch"]
    assert len(row["s_per_step_repeats"]) == 2 and row["s_per_step"] > 0
    assert row["s_per_image"] == pytest.approx(row["s_per_step"] * row["default_steps"] / row["batch"])
    assert len(row["losses"]) == 2 + 1  # 2 timed steps + the saved-bytes step
    assert row["weights_bytes"] > 0 and row["peak_bytes"] == row["attack_bytes"]  # CPU: RSS growth


def test_sds_keeps_less_for_backward_than_advdm(rows):
    """Score distillation runs the UNet under no_grad: it saves only the encoder's activations."""
    advdm, sds = rows[("advdm", "fair")], rows[("sds-", "fair")]
    assert 0 < sds["saved_bytes"] < advdm["saved_bytes"]
    assert sds["saved_ratio_to_advdm"] == pytest.approx(sds["saved_bytes"] / advdm["saved_bytes"])
    # parameters are counted apart: a frozen UNet's weights are saved by its convolutions in AdvDM only
    assert advdm["saved_param_bytes"] > sds["saved_param_bytes"]


def test_reference_mode_runs_as_the_reference_does(rows):
    """The reference's UNet is checkpointed (use_checkpoint: True) and its extra target forward's graph
    is freed before the backward: AdvDM's reference step keeps *less* for backward than the fair one,
    but does more work (recomputation, the target's forward, weight gradients)."""
    fair, reference = rows[("advdm", "fair")], rows[("advdm", "reference")]
    assert reference["reference_mode"] is True
    assert reference["saved_bytes"] < fair["saved_bytes"]
    assert reference["flops_per_step"] > fair["flops_per_step"]
    assert reference["reference_over_fair_saved"] == pytest.approx(reference["saved_bytes"] / fair["saved_bytes"])
    # Every row says whether the UNet ran checkpointed (issue #13's acceptance).
    for (method, mode), row in rows.items():
        assert row["settings"]["unet_gradient_checkpointing"] is (mode == "reference"), (method, mode)
        assert row["settings"]["reference_double_encode"] is False


def test_injected_delay_shows_in_the_step_time():
    slow = measure(
        PerfConfig(arch="tiny-random", method="photoguard", steps=1, warmup=0, repeats=1, threads=1, inject_delay_s=0.3)
    )
    assert slow["s_per_step"] >= 0.3
