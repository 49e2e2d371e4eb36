"""The results store and the runner: resume, kill -9, corruption, locks, plan changes, failing cells."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloakbench.bench.compare import run_compare
from cloakbench.bench.spec import CompareSpec
from cloakbench.bench.store import RunStore, StoreError
from cloakbench.core.ldm import ModelError
from tests.support.grid import register_test_protections, write_images

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def with_test_protections(monkeypatch):
    register_test_protections(monkeypatch.setitem)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), count=3)


def spec_for(out: Path, image_dir: Path, methods: str = "none,test-slow", **extra) -> CompareSpec:
    defaults = dict(
        images=[str(image_dir)],
        methods=methods,
        attacks="identity",
        metrics="psnr,ssim,linf",
        model="tiny-random",
        out=out,
        write_report=False,
    )
    defaults.update(extra)
    return CompareSpec(**defaults)


def read_rows(run_dir: Path, *, without_cost: bool = True) -> list[dict]:
    with open(run_dir / "rows.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r for r in rows if not (without_cost and r["pair"] == "cost")]


def test_second_run_recomputes_nothing_and_rows_are_tidy(tmp_path, image_dir, with_test_protections):
    first = run_compare(spec_for(tmp_path / "run", image_dir))
    assert (first.computed, first.reused, first.failed) == (12, 0, 0)  # 3 images x (2 protect + 2 attack)
    first_rows = read_rows(tmp_path / "run")  # saved before the second run rewrites rows.csv
    second = run_compare(spec_for(tmp_path / "run", image_dir))
    assert (second.computed, second.reused) == (0, 12)
    rows = read_rows(tmp_path / "run")
    assert rows == first_rows  # reused cells give the same rows (cost rows excluded: timings differ)
    assert {"protected_vs_clean", "attack_vs_clean", "attack_vs_clean_attack"} <= {r["pair"] for r in rows}
    linf = [float(r["value"]) for r in rows if r["metric"] == "linf" and r["protection"] == "test-slow"]
    assert linf and max(linf) <= 2.0  # the published PNG holds the ±2/255 budget
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["cells"] == {"total": 12, "reused": 12, "computed": 0, "failed": 0, "unavailable": 0}
    assert {"python", "torch", "diffusers"} <= set(manifest["versions"])
    assert manifest["git_commit"] and manifest["finished_utc"]
    costs = read_rows(tmp_path / "run", without_cost=False)
    assert any(r["pair"] == "cost" and r["metric"] == "wall_s" and float(r["value"]) > 0.5 for r in costs)


def _done_cells(run_dir: Path) -> int:
    try:
        with sqlite3.connect(run_dir / "journal.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM cells WHERE state='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _grid_process(image_dir: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.grid", str(image_dir), str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_minus_nine_then_rerun_gives_the_rows_of_an_uninterrupted_run(tmp_path, image_dir):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    victim = _grid_process(image_dir, killed)
    deadline = time.monotonic() + 120
    while _done_cells(killed) < 4 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
    assert victim.poll() is None, "the grid finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    finished_before = _done_cells(killed)
    assert 4 <= finished_before < 12
    uninterrupted = _grid_process(image_dir, reference)
    resumed = _grid_process(image_dir, killed)
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read().decode()[-2000:]
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["cells"]["reused"] == finished_before
    assert manifest["cells"]["computed"] == 12 - finished_before
    drop_run = lambda rows: [{k: v for k, v in r.items() if k != "run"} for r in rows]
    assert drop_run(read_rows(killed)) == drop_run(read_rows(reference))


def test_flipped_or_truncated_artifact_is_detected_and_recomputed(tmp_path, image_dir, with_test_protections, caplog):
    run_dir = tmp_path / "run"
    run_compare(spec_for(run_dir, image_dir))
    before = read_rows(run_dir)
    artifacts = sorted((run_dir / "artifacts").rglob("*.png"))
    flipped = bytearray(artifacts[0].read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    artifacts[0].write_bytes(bytes(flipped))
    artifacts[1].write_bytes(artifacts[1].read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        summary = run_compare(spec_for(run_dir, image_dir))
    assert summary.computed >= 2
    assert "fails its SHA-256 check" in caplog.text
    assert read_rows(run_dir) == before


def test_second_process_on_the_same_run_is_refused(tmp_path, image_dir, with_test_protections):
    with RunStore(tmp_path / "run"), pytest.raises(StoreError, match=r"in use by pid \d+"):
        run_compare(spec_for(tmp_path / "run", image_dir))


def test_changed_plan_is_refused_unless_forced(tmp_path, image_dir, with_test_protections):
    run_compare(spec_for(tmp_path / "run", image_dir))
    with pytest.raises(StoreError, match=r"different plan \(changed: .*seed"):
        run_compare(spec_for(tmp_path / "run", image_dir, seed=1))
    forced = run_compare(spec_for(tmp_path / "run", image_dir, seed=1, force=True))
    assert forced.failed == 0
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["plan"]["seed"] == 1


def test_out_of_memory_cell_is_recorded_and_the_next_cell_runs(tmp_path, image_dir, with_test_protections):
    summary = run_compare(spec_for(tmp_path / "run", image_dir, methods="none,test-oom,test-slow"))
    # 3 oom protect cells + their 3 attack cells fail; everything else finishes.
    assert summary.failed == 6
    rows = read_rows(tmp_path / "run")
    failures = [r for r in rows if r["status"] == "failed"]
    assert any(r["note"].startswith("oom: CUDA out of memory at 64x64") for r in failures)
    assert any("nothing to attack" in r["note"] for r in failures)
    assert any(
        r["protection"] == "test-slow" and r["pair"] == "attack_vs_clean_attack" and r["status"] == "ok" for r in rows
    )


def test_hanging_cell_times_out_and_the_run_goes_on(tmp_path, image_dir, with_test_protections):
    started = time.monotonic()
    summary = run_compare(spec_for(tmp_path / "run", image_dir, methods="none,test-hang", cell_timeout_s=0.5))
    assert time.monotonic() - started < 60
    assert summary.failed == 6
    notes = {r["note"] for r in read_rows(tmp_path / "run") if r["status"] == "failed"}
    assert "timeout: timeout after 0.5 s" in notes


def test_missing_weights_fail_in_preflight_before_any_work(tmp_path, image_dir):
    out = tmp_path / "run"
    with pytest.raises(ModelError, match="does not exist"):
        run_compare(spec_for(out, image_dir, model=str(tmp_path / "no-such-model"), methods="none"))
    assert not out.exists()


def test_bad_inputs_are_skipped_listed_and_the_run_goes_on(tmp_path, image_dir, with_test_protections):
    mixed = tmp_path / "mixed"
    write_images(mixed, count=2)
    (mixed / "broken.png").write_text("not an image")
    (mixed / "empty.jpg").write_bytes(b"")
    summary = run_compare(spec_for(tmp_path / "run", mixed, methods="none"))
    assert summary.failed == 0 and summary.cells == 4
    skipped = json.loads((tmp_path / "run" / "manifest.json").read_text())["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["broken.png", "empty.jpg"]
    assert "not a PNG, JPEG or WebP" in skipped[0]["reason"] and "0 bytes" in skipped[1]["reason"]


def test_unknown_override_name_fails_before_work(tmp_path, image_dir):
    from cloakbench.core.config import ConfigError

    with pytest.raises(ConfigError, match="no protection, attack or metric"):
        run_compare(spec_for(tmp_path / "run", image_dir, methods="none", overrides={"sdedt": {"steps": "2"}}))
    assert not (tmp_path / "run").exists()


def test_an_attack_computed_from_other_published_bytes_is_recomputed(
    tmp_path, image_dir, with_test_protections, caplog
):
    """Attack keys name their protect cell, not its bytes: if the published PNG comes out differently
    (a GPU run without --deterministic), the attacks that read the old bytes must not be reused."""
    run_dir = tmp_path / "run"
    run_compare(spec_for(run_dir, image_dir))
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        protect = [
            (key, json.loads(artifacts))
            for key, artifacts, label in db.execute(
                "SELECT key, artifacts, label FROM cells WHERE kind='protect' AND state='done'"
            )
            if json.loads(label)["protection"] == "test-slow"
        ]
        key, _artifacts = protect[0]
        other = protect[1][1]  # another image's published PNG, as if this cell had come out differently
        db.execute("UPDATE cells SET artifacts=? WHERE key=?", (json.dumps(other), key))
    with caplog.at_level(logging.WARNING):
        summary = run_compare(spec_for(run_dir, image_dir))
    assert "computed from inputs that have changed" in caplog.text
    assert summary.computed == 1  # the one attack that read the swapped PNG; its protect cell stays reused


def test_a_missing_amortized_protector_makes_its_cells_unavailable_naming_the_file(tmp_path, image_dir):
    missing = tmp_path / "no-protector"
    spec = spec_for(
        tmp_path / "run", image_dir, methods="none,amortized", overrides={"amortized": {"protector": str(missing)}}
    )
    summary = run_compare(spec)
    assert (summary.failed, summary.unavailable) == (0, 6)  # 3 protect cells and the 3 attacks on them
    rows = [r for r in read_rows(tmp_path / "run") if r["protection"] == "amortized"]
    assert rows and all(r["status"] == "unavailable" for r in rows)
    assert all(str(missing / "generator.safetensors") in r["note"] for r in rows)
    assert all("bench train-protector" in r["note"] for r in rows)
