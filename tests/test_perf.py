"""bench perf: parsing, ratios, the regression check, and one real child measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloakbench.bench.perf import check as perf_check
from cloakbench.bench.perf.runner import (
    PerfConfig,
    PerfError,
    add_ratios,
    expand_configs,
    parse_inject_delay,
    parse_modes,
    parse_sizes,
    resolve_methods,
)

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "baseline.json"


def synthetic_row(
    method: str, mode: str = "fair", s_per_step: float = 1.0, attack: int = 1000, saved: int = 100, **extra
) -> dict:
    row = dict(
        method=method,
        mode=mode,
        arch="tiny-random",
        resolution=64,
        batch=1,
        dtype="float32",
        device="cpu",
        optimisations="none",
        status="ok",
        s_per_step=s_per_step,
        cpu_s_per_step=0.9 * s_per_step,
        flops_per_step=attack * 10**6,
        attack_bytes=attack,
        saved_bytes=saved,
        machine={"cpu": "test"},
        versions={},
    )
    row.update(extra)
    return row


def synthetic_rows(sds_time: float = 0.6, sds_saved: int = 70) -> list[dict]:
    rows = [
        synthetic_row("advdm", s_per_step=2.0, attack=1000, saved=100),
        synthetic_row("sds-", s_per_step=2.0 * sds_time, attack=700, saved=sds_saved),
        synthetic_row("advdm", "reference", s_per_step=3.0, attack=2500, saved=140),
        synthetic_row("sds-", "reference", s_per_step=1.5, attack=800, saved=sds_saved),
    ]
    add_ratios(rows)
    return rows


SETTINGS = {
    "arch": "tiny-random",
    "resolutions": [64],
    "batches": [1],
    "methods": ["advdm", "sds-"],
    "modes": ["fair", "reference"],
    "optimisations": ["none"],
    "steps": 2,
    "warmup": 1,
    "repeats": 1,
    "dtype": "float32",
    "device": "cpu",
    "seed": 0,
    "threads": 1,
}


# -- parsing ---------------------------------------------------------------------------
def test_parse_lists_and_modes():
    assert parse_sizes("128, 256", "resolution") == [128, 256]
    assert parse_modes("both") == ["fair", "reference"]
    assert parse_modes("reference,fair") == ["fair", "reference"]
    with pytest.raises(PerfError, match="--resolution"):
        parse_sizes("12x", "resolution")
    with pytest.raises(PerfError, match="--mode"):
        parse_modes("fast")


def test_inject_delay_parsing():
    assert parse_inject_delay(["sds-=0.25", "advdm=1"]) == {"sds-": 0.25, "advdm": 1.0}
    for bad in ("sds-", "=0.5", "sds-=slow"):
        with pytest.raises(PerfError, match="METHOD=SECONDS"):
            parse_inject_delay([bad])


def test_methods_always_start_with_advdm_and_refuse_stepless():
    assert resolve_methods("sds-,photoguard") == ["advdm", "sds-", "photoguard"]
    everything = resolve_methods("all")
    assert everything[0] == "advdm" and "sds-" in everything
    assert "none" not in everything and "sds-z" not in everything  # no step / analysis only
    with pytest.raises(PerfError, match="no PGD step"):
        resolve_methods("none,sds-")


def test_configs_pair_each_ratio_close_in_time():
    configs = expand_configs(
        arch="tiny-random",
        methods=["advdm", "sds-"],
        resolutions=[64, 128],
        batches=[1, 2],
        modes=["fair", "reference"],
        optimisations=["none"],
        steps=1,
    )
    assert len(configs) == 2 * 2 * 2 * 2
    # advdm immediately precedes the method it is the denominator of
    assert [(c.method, c.mode) for c in configs[:4]] == [
        ("advdm", "fair"),
        ("sds-", "fair"),
        ("advdm", "reference"),
        ("sds-", "reference"),
    ]
    assert PerfConfig.from_json(configs[5].to_json()) == configs[5]
    with pytest.raises(PerfError):
        PerfConfig(arch="tiny-random", method="advdm", mode="both")


# -- ratios ----------------------------------------------------------------------------
def test_ratios_against_advdm_of_the_same_mode():
    rows = synthetic_rows()
    fair_sds, ref_advdm, ref_sds = rows[1], rows[2], rows[3]
    assert fair_sds["time_ratio_to_advdm"] == pytest.approx(1.2 / 2.0)
    assert fair_sds["memory_ratio_to_advdm"] == pytest.approx(0.7)
    assert fair_sds["saved_ratio_to_advdm"] == pytest.approx(0.7)
    assert ref_sds["time_ratio_to_advdm"] == pytest.approx(1.5 / 3.0)  # reference advdm, not fair
    assert ref_advdm["reference_over_fair_time"] == pytest.approx(3.0 / 2.0)
    assert ref_advdm["reference_over_fair_memory"] == pytest.approx(2.5)
    assert "reference_over_fair_time" not in rows[0]


def test_failed_rows_get_no_ratio_and_do_not_break_others():
    rows = [
        synthetic_row("advdm"),
        {"method": "sds-", "mode": "fair", "status": "failed", "error": "oom"},
        synthetic_row("photoguard", s_per_step=0.5),
    ]
    add_ratios(rows)
    assert rows[2]["time_ratio_to_advdm"] == pytest.approx(0.5)
    assert "time_ratio_to_advdm" not in rows[1]


# -- the regression check ----------------------------------------------------------------
def test_check_passes_on_the_rows_the_baseline_came_from():
    rows = synthetic_rows()
    baseline = perf_check.build_baseline(rows, SETTINGS, perf_check.DEFAULT_TOLERANCES)
    kinds = {r["kind"] for r in baseline["ratios"]}
    assert kinds == set(perf_check.default_kinds("cpu"))
    assert "time" not in kinds  # wall-clock on a shared CPU is reported, not gated
    gpu = perf_check.build_baseline(rows, {**SETTINGS, "device": "cuda"}, perf_check.DEFAULT_TOLERANCES)
    assert {r["kind"] for r in gpu["ratios"]} == set(perf_check.default_kinds("cuda"))
    findings = perf_check.check(rows, baseline)
    assert findings and not perf_check.failed(findings)


def test_check_fails_on_a_slowed_method_and_names_it():
    baseline = perf_check.build_baseline(
        synthetic_rows(sds_time=0.6), SETTINGS, {**perf_check.DEFAULT_TOLERANCES, "cpu-time": 0.25, "flops": 0.25}
    )
    slowed = synthetic_rows(sds_time=0.6 * 1.3)  # 30 % slower than allowed 25 %
    bad = perf_check.failed(perf_check.check(slowed, baseline))
    names = {f.name for f in bad}
    assert "cpu-time sds-/advdm [fair] 64px x1" in names
    message = next(f for f in bad if f.name == "cpu-time sds-/advdm [fair] 64px x1").message()
    for part in ("sds-", "cpu-time sds-/advdm", "0.780", "baseline 0.600", "+25%"):
        assert part in message
    within = synthetic_rows(sds_time=0.6 * 1.2)  # 20 % slower: inside the tolerance
    assert not perf_check.failed(perf_check.check(within, baseline))


def test_check_fails_when_a_ratio_cannot_be_measured():
    baseline = perf_check.build_baseline(synthetic_rows(), SETTINGS, perf_check.DEFAULT_TOLERANCES)
    rows = synthetic_rows()
    rows[1] = {"method": "sds-", "mode": "fair", "status": "failed", "error": "boom"}
    add_ratios(rows)
    bad = perf_check.failed(perf_check.check(rows, baseline))
    assert any(f.status == "missing" and f.method == "sds-" for f in bad)


def test_improvement_is_reported_not_failed():
    baseline = perf_check.build_baseline(synthetic_rows(sds_time=0.6), SETTINGS, perf_check.DEFAULT_TOLERANCES)
    findings = perf_check.check(synthetic_rows(sds_time=0.1), baseline)
    assert not perf_check.failed(findings)
    assert any(f.status == "improved" for f in findings)


def test_baseline_refuses_failed_measurements_and_bad_tolerances():
    rows = synthetic_rows() + [{"method": "mist", "mode": "fair", "status": "failed", "error": "oom"}]
    with pytest.raises(PerfError, match="failed"):
        perf_check.build_baseline(rows, SETTINGS, perf_check.DEFAULT_TOLERANCES)
    assert perf_check.parse_tolerances("time=0.5")["time"] == 0.5
    with pytest.raises(PerfError, match="KIND"):
        perf_check.parse_tolerances("speed=0.5")


def test_committed_baseline_is_ratios_with_tolerances():
    baseline = perf_check.load_baseline(BASELINE)
    assert baseline["settings"]["arch"] in ("tiny-random", "toy")
    for entry in baseline["ratios"]:
        assert entry["value"] > 0 and entry["tolerance"] >= 0
        assert "s_per_step" not in entry  # ratios, never absolute times
    assert any(e["kind"] == "cpu-time" and e["method"] == "sds-" for e in baseline["ratios"])


# -- a real measurement in a child process ---------------------------------------------
def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from cloakbench.bench.cli.app import main; main()", "perf", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_check_fails_on_a_real_run_with_an_injected_delay(tmp_path):
    """The committed baseline, cut to advdm and sds- in fair mode and to one short repeat,
    against a real run where every sds- step busy-waits 0.5 s of CPU: the check must exit 1 and say why."""
    baseline = perf_check.load_baseline(BASELINE)
    baseline["settings"].update(
        methods=["advdm", "sds-"],
        modes=["fair"],
        steps=1,
        warmup=0,
        repeats=1,
        optimisations=["none"],
        batches=baseline["settings"]["batches"][:1],
        resolutions=baseline["settings"]["resolutions"][:1],
    )
    where = f" {baseline['settings']['resolutions'][0]}px x{baseline['settings']['batches'][0]}"
    baseline["ratios"] = [
        r
        for r in baseline["ratios"]
        if r["method"] == "sds-" and r["kind"] == "cpu-time" and "[fair]" in r["name"] and where in r["name"]
    ]
    assert len(baseline["ratios"]) == 1
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    done = _run_cli("--check", str(path), "--inject-delay", "sds-=0.5")
    assert done.returncode == 1, done.stderr
    assert "REGRESSED: sds- ratio cpu-time sds-/advdm [fair]" in done.stderr
    assert "baseline" in done.stderr and "tolerance" in done.stderr


def test_dry_run_lists_every_configuration_without_running():
    done = _run_cli(
        "--dry-run",
        "--arch",
        "sd15-arch",
        "--resolution",
        "256,512",
        "--methods",
        "sds-,photoguard",
        "--mode",
        "both",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "12 configurations" in done.stdout
    assert "cloakbench.bench.perf.worker" in done.stdout and "sd15-arch" in done.stdout
    reference = _run_cli("--dry-run", "--methods", "sds-", "--reference-mode", "--resolution", "128", timeout=60)
    assert reference.returncode == 0, reference.stderr
    assert "2 configurations" in reference.stdout and "[fair]" not in reference.stdout
    assert reference.stdout.count("[reference]") == 2
    bad = _run_cli("--dry-run", "--resolution", "100", timeout=60)
    assert bad.returncode == 2 and "multiples of 8" in bad.stderr


@pytest.mark.slow
def test_unmodified_run_passes_the_committed_baseline():
    done = _run_cli("--check", str(BASELINE), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
