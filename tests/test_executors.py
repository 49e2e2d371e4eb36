"""Executors give the serial run's rows, whatever the workers and the order cells finish in;
a worker killed mid-cell costs a rerun of that cell, never a wrong or missing row
(docs/SCALING.md). Every run here is the tiny-random model at 64², two images, --quick."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from cloakbench.bench.batching import BatchSizer
from cloakbench.bench.compare import run_compare
from cloakbench.bench.executors import (
    ExecutorError,
    LocalPoolExecutor,
    RayExecutor,
    _Queue,
    cell_group,
    executor_factory,
)
from cloakbench.bench.spec import CompareSpec
from cloakbench.bench.store import StoreError, network_filesystem

ACCEPTANCE_METHODS = "none,noise,sds-,advdm"  # the acceptance grid
# A cell long enough (a few seconds) to be killed in the middle of: AdvDM at 30 PGD steps.
KILL_OVERRIDES = {"advdm": {"steps": 30}}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    from cloakbench.core.images import png_bytes, quantize_8bit

    folder = tmp_path_factory.mktemp("images")
    coarse = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1234))
    smooth = quantize_8bit(torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False))
    for index, image in enumerate(smooth):
        (folder / f"im{index}.png").write_bytes(png_bytes(image))
    return folder


def make_spec(image_dir: Path, out: Path, methods: str = ACCEPTANCE_METHODS, overrides=None) -> CompareSpec:
    return CompareSpec(
        images=[str(image_dir)],
        methods=methods,
        attacks="sdedit",
        model="tiny-random",
        quick=True,
        out=out,
        overrides=dict(overrides or {}),
        write_report=False,
    )


def comparable_rows(rows_csv: Path) -> list[tuple]:
    """rows.csv sorted, without what differs by design: the run's name, and the cost rows'
    measured values and notes (wall-clock, memory, the worker that measured them)."""
    rows = []
    with open(rows_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            row.pop("run")
            if row["pair"] == "cost":
                row["value"], row["note"] = "", ""
            rows.append(tuple(sorted(row.items())))
    return sorted(rows)


@pytest.fixture(scope="module")
def serial_rows(image_dir, tmp_path_factory) -> list[tuple]:
    summary = run_compare(make_spec(image_dir, tmp_path_factory.mktemp("serial") / "run"))
    assert summary.failed == 0 and summary.computed == summary.cells > 0
    return comparable_rows(summary.rows_csv)


@pytest.fixture(scope="module")
def serial_kill_grid_rows(image_dir, tmp_path_factory) -> list[tuple]:
    spec = make_spec(image_dir, tmp_path_factory.mktemp("serial-kill") / "run", "none,advdm", KILL_OVERRIDES)
    summary = run_compare(spec)
    assert summary.failed == 0
    return comparable_rows(summary.rows_csv)


@pytest.fixture(autouse=True)
def quiet_ray_memory_monitor(monkeypatch):
    """The machine these tests share runs other jobs: Ray's memory monitor would kill a tiny
    worker for memory that others use (https://docs.ray.io/en/latest/ray-core/scheduling/ray-oom-prevention.html).
    The private Ray these tests start turns it off; the kernel's OOM killer still applies."""
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")


def pool_factory(kind: str, made: list):
    """``executor_factory(kind, workers=2)`` that also keeps the executor it made."""
    inner = executor_factory(kind, workers=2, threads=1)

    def factory(spec, components, intake):
        made.append(inner(spec, components, intake))
        return made[-1]

    return factory


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_pool_executors_give_the_serial_rows(kind, image_dir, tmp_path, serial_rows):
    if kind == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cloakbench[ray]')")
    events: list = []
    made: list = []
    summary = run_compare(
        make_spec(image_dir, tmp_path / "run"), lambda k, i: events.append((k, i)), pool_factory(kind, made)
    )
    assert summary.failed == 0 and summary.computed == summary.cells
    assert comparable_rows(summary.rows_csv) == serial_rows
    workers = {info["worker"] for k, info in events if k == "start"}
    assert workers == {f"{kind}-0", f"{kind}-1"}, "both workers ran cells"
    with open(summary.rows_csv, newline="") as handle:
        notes = {row["note"] for row in csv.DictReader(handle) if row["pair"] == "cost"}
    assert notes and all(note.startswith(f"worker {kind}-") and "cpu" in note for note in notes)


# The Ray variant (about a minute: a private Ray, an actor restart) runs with `make test-slow`;
# the local pool's kill is in the default suite.
@pytest.mark.parametrize("kind", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_worker_killed_mid_cell_costs_only_a_rerun(kind, image_dir, tmp_path, serial_kill_grid_rows):
    if kind == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cloakbench[ray]')")
    made: list = []
    killed: list = []
    timeline: list = []
    pids: dict = {}

    def kill(pid: int, cell: dict) -> None:
        time.sleep(0.5)  # well inside a cell of 30 PGD steps
        os.kill(pid, signal.SIGKILL)
        killed.append(cell)
        timeline.append(("killed", cell))

    def on_event(kind_of_event: str, info: dict) -> None:
        timeline.append((kind_of_event, info.get("cell")))
        if killed:
            return
        if (
            kind == "local"
            and kind_of_event == "worker"
            and info["state"] == "running"
            and info["cell"].get("protection") == "advdm"
        ):
            kill(info["pid"], info["cell"])
        if (
            kind == "ray"
            and kind_of_event == "start"
            and info["cell"].get("protection") == "advdm"
            and "attack" not in info["cell"]
        ):
            pids.update(pids or made[0].worker_pids())
            kill(pids[info["worker"]], info["cell"])

    spec = make_spec(image_dir, tmp_path / "run", "none,advdm", KILL_OVERRIDES)
    summary = run_compare(spec, on_event, pool_factory(kind, made))
    assert killed, "a worker was killed"
    done_at = timeline.index(("done", killed[0]))
    assert timeline.index(("killed", killed[0])) < done_at, "the kill landed before the cell finished"
    assert summary.failed == 0 and summary.computed == summary.cells
    assert comparable_rows(summary.rows_csv) == serial_kill_grid_rows
    if kind == "local":
        assert made[0].deaths == 1
        starts = [cell for k, cell in timeline if k == "start"]
        assert starts.count(killed[0]) == 2, "the killed cell was run again"


@pytest.mark.slow  # three worker deaths in a row, about a minute: `make test-slow`
def test_a_cell_whose_worker_always_dies_is_recorded_failed(image_dir, tmp_path):
    """The retry limit: the same cell killed on every attempt fails with a reason; the rest is done."""
    made: list = []
    victims: list = []

    def on_event(kind, info):
        if (
            kind == "worker"
            and info["state"] == "running"
            and info["cell"].get("protection") == "advdm"
            and info["cell"].get("image") == "im0"
            and "attack" not in info["cell"]
        ):
            victims.append(info["pid"])
            os.kill(info["pid"], signal.SIGKILL)

    spec = make_spec(image_dir, tmp_path / "run", "none,advdm", KILL_OVERRIDES)
    summary = run_compare(spec, on_event, pool_factory("local", made))
    assert len(victims) == 3 == made[0].deaths
    with open(summary.rows_csv, newline="") as handle:
        failures = [row for row in csv.DictReader(handle) if row["status"] == "failed"]
    # The protect cell, then its attack cell ("nothing to attack") and nothing else.
    assert any("died 3 times (last: signal 9)" in row["note"] for row in failures)
    assert summary.failed == 2 and summary.computed == summary.cells - 2


def test_resume_after_a_pool_run_reuses_every_cell(image_dir, tmp_path):
    spec = make_spec(image_dir, tmp_path / "run", "none,noise")
    first = run_compare(spec, executor_factory=executor_factory("local", workers=2))
    again = run_compare(spec, executor_factory=executor_factory("local", workers=2))
    assert again.reused == again.cells == first.computed and again.computed == 0
    assert comparable_rows(again.rows_csv) == comparable_rows(first.rows_csv)


def test_queue_keeps_a_worker_on_its_group():
    from cloakbench.bench.execute import CellTask
    from cloakbench.bench.plan import Cell, ImageRef

    def task(key, protection):
        return CellTask(Cell(key, "protect", protection, 0, (ImageRef("a", "h"),), model="m"))

    one = BatchSizer(1)  # batches of one cell (bench compare's default)
    queue = _Queue([task("1", "a"), task("2", "b"), task("3", "a"), task("4", "b"), task("5", "b")])
    (first,) = queue.next_for(None, one)
    assert first.cell.key == "2", "an idle worker with no group takes the largest group"
    assert [t.cell.key for t in queue.next_for(cell_group(first), one)] == ["4"]
    assert [t.cell.key for t in queue.next_for(("m", "a"), one)] == ["1"]
    queue.put_back(first)
    assert [t.cell.key for t in queue.next_for(("m", "b"), one)] == ["2"], "a task put back runs next in its group"


def test_executor_flags_are_checked_before_any_work():
    with pytest.raises(ExecutorError, match="choose one of serial, local, ray"):
        executor_factory("threads")
    with pytest.raises(ExecutorError, match="--workers 0"):
        executor_factory("local", workers=0)
    with pytest.raises(ExecutorError, match="--workers 3 needs --executor local or ray"):
        executor_factory("serial", workers=3)
    with pytest.raises(ExecutorError, match="go with --executor ray"):
        executor_factory("local", ray_address="auto")
    assert (
        executor_factory("local", workers=2)(make_spec(Path("x"), Path("y")), None, None).__class__ is LocalPoolExecutor
    )


def test_ray_gpu_share_is_checked(image_dir, tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ExecutorError, match="--gpus-per-worker -1"):
        RayExecutor(make_spec(image_dir, tmp_path), None, None, gpus_per_worker=-1)
    assert RayExecutor(CompareSpec(device="cuda"), None, None).gpus_per_worker == 1.0
    assert RayExecutor(CompareSpec(device="cpu"), None, None).gpus_per_worker == 0.0


def test_network_filesystem_is_named(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\nserver:/export /mnt/shared nfs4 rw 0 0\n//nas/runs /mnt/nas cifs rw 0 0\n"
    )
    assert network_filesystem(Path("/mnt/shared/runs/a"), mounts) == "nfs4"
    assert network_filesystem(Path("/mnt/nas"), mounts) == "cifs"
    assert network_filesystem(Path("/mnt/sharedother/run"), mounts) is None
    assert network_filesystem(tmp_path / "run", mounts) is None
    assert network_filesystem(tmp_path, tmp_path / "missing") is None


def test_compare_refuses_an_out_on_a_network_filesystem(image_dir, tmp_path, monkeypatch):
    import cloakbench.bench.compare as driver

    monkeypatch.setattr(driver, "network_filesystem", lambda path: "nfs4")
    with pytest.raises(StoreError, match=r"network filesystem \(nfs4\).*local disk"):
        run_compare(make_spec(image_dir, tmp_path / "run", "none"))
    assert not (tmp_path / "run").exists(), "refused before the run folder is made"


def test_cli_names_a_bad_executor_flag_in_one_sentence(image_dir, tmp_path):
    from typer.testing import CliRunner

    from cloakbench.bench.cli.app import app

    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--images",
            str(image_dir),
            "--model",
            "tiny-random",
            "--quick",
            "--methods",
            "none",
            "--out",
            str(tmp_path / "run"),
            "--executor",
            "local",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code != 0
    assert "--workers 0: give at least 1 worker" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
