"""scripts/gpu_check.sh: the prepared GPU run (issue #13), checked on the CPU with --dry-run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run(*args, timeout=600, smoke=False):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CLOAKBENCH_GPU_CHECK_SMOKE": "1" if smoke else "0",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def test_gpu_check_refuses_bad_usage():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    unknown = run("--fast")
    assert unknown.returncode == 2 and "unknown option --fast" in unknown.stderr
    budget = run("--budget", "soon")
    assert budget.returncode == 2 and "--budget needs a number" in budget.stderr


def dry_run_summary(folder, smoke):
    done = run("--dry-run", "--budget", "300", folder, smoke=smoke)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((folder / "gpu_dry-run_summary.json").read_text())
    assert summary["dry_run"] is True and summary["budget_s"] == 300
    groups = {g["group"]: g["status"] for g in summary["groups"]}
    # Real SD 1.5 weights are not cached here: that group is named as skipped, with the reason.
    assert groups == {
        "perf_sd15-arch_512_b1": "dry-run",
        "perf_sd15-arch_512_b4": "dry-run",
        "batch_max_512": "dry-run",
        "perf_sd15_512_b1": "skipped",
        "opt_sds-_512": "dry-run",
        "compare": "dry-run",
        "pytest_cuda": "dry-run",
    }
    printed = done.stdout
    for needed in (
        "--methods all --batch 1 --opt none,bf16 --mode fair,reference",
        "--batch 4",
        "--batch 8,16,32",
        "--device cuda --resolution 512",
        "channels-last+bf16",
        "compile",
        "bench compare",
    ):
        assert needed in printed, needed
    assert "nothing was measured on a GPU" in printed
    return summary


def test_gpu_check_dry_run_lists_every_group_and_checks_the_commands(tmp_path):
    dry_run_summary(tmp_path, smoke=False)
    assert not (tmp_path / "gpu_dry-run_logs" / "perf_tiny-random_smoke.json").exists()


@pytest.mark.slow
def test_gpu_check_dry_run_smoke_tests_the_subprocess_path_on_the_cpu(tmp_path):
    dry_run_summary(tmp_path, smoke=True)
    # The CPU smoke test of the subprocess path wrote rows, reference mode checkpointed.
    rows = json.loads((tmp_path / "gpu_dry-run_logs" / "perf_tiny-random_smoke.json").read_text())
    assert {(r["method"], r["mode"], r["status"]) for r in rows} >= {
        ("sds-", "fair", "ok"),
        ("sds-", "reference", "ok"),
    }
    assert all(r["settings"]["unet_gradient_checkpointing"] == (r["mode"] == "reference") for r in rows)
