"""``run_compare``: plan a grid, run its cells on an executor, record everything (the driver).

The driver is the only writer of the run folder's journal (docs/RELIABILITY.md, "Store"):
it plans (:mod:`cloakbench.bench.plan`, no model loaded), refuses a changed plan unless
``--force``, skips cells that are done and intact, hands the rest to an executor stage by
stage (:mod:`cloakbench.bench.executors`), verifies each outcome's artifacts by hash and records
it, then writes ``rows.csv`` in plan order and the report.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from cloakbench.bench.execute import CellTask, Outcome, failure_outcome
from cloakbench.bench.executors import Executor, SerialExecutor, Started, WorkerNote
from cloakbench.bench.plan import (
    PLAN_CELL_LIMIT,
    Cell,
    Components,
    Plan,
    build_plan,
    count_cells,
    describe_plan_change,
    is_widening,
    variant_key,
)
from cloakbench.bench.spec import CompareSpec
from cloakbench.bench.store import RunStore, StoreError, measured_cell_seconds, network_filesystem, say_duration
from cloakbench.core import provenance
from cloakbench.core.datasets import load_dataset
from cloakbench.core.images import IntakeResult
from cloakbench.core.schema import Pair
from cloakbench.core.zoo import ModelFacts, model_facts

log = logging.getLogger(__name__)

Event = Callable[[str, dict], None]
ExecutorFactory = Callable[[CompareSpec, Components, IntakeResult], Executor]


@dataclass
class RunSummary:
    run_dir: Path
    cells: int
    reused: int
    computed: int
    failed: int
    unavailable: int
    skipped: list
    rows_csv: Path
    report: Path | None
    seconds: float
    #: ``(cell label, reason)`` of every cell that failed in this run (the exit status is 1 if any).
    failed_cells: list = dataclasses.field(default_factory=list)


def build_manifest(
    spec: CompareSpec, plan: Plan, model_identity: dict, intake: IntakeResult, previous: dict | None, executor: str
) -> dict:
    commit, dirty = provenance.git_state()
    now = datetime.now(UTC).isoformat()
    return {
        "run": spec.out.name,
        "created_utc": (previous or {}).get("created_utc", now),
        "resumed_utc": now if previous else None,
        "finished_utc": None,
        "command": spec.command,
        "versions": provenance.versions(),
        "device": provenance.device_name(spec.device),
        "executor": executor,
        "git_commit": commit,
        "git_dirty": dirty,
        "model": model_identity,
        "plan": plan.description,
        "plan_hash": plan.hash,
        "skipped": [dataclasses.asdict(s) for s in intake.skipped],
        "image_notes": {im.name: im.notes for im in intake.images},
        # Each image's category, prompt and mask hash, as the dataset (manifest, prompts.toml) gave them.
        "dataset": intake.describe() if hasattr(intake, "describe") else [],
        "settings": {
            "quick": spec.quick,
            "dtype": spec.dtype,
            "deterministic": spec.deterministic,
            "overrides": spec.overrides,
            "cell_timeout_s": spec.cell_timeout_s,
        },
    }


class _Tally:
    """Counts what happened to the cells, and tells the CLI as it goes."""

    def __init__(self, emit: Event):
        self.emit = emit
        self.reused = self.computed = self.failed = self.unavailable = 0
        self.failed_cells: list[tuple[dict, str]] = []

    def record(self, store: RunStore, outcome: Outcome, cell: Cell, consumed: list[str] = ()) -> None:
        """Journal one outcome; ``consumed`` are the hashes of the artifacts the cell read."""
        label = cell.label
        if outcome.status == "done" and not store.artifacts.intact(outcome.artifacts):
            outcome = dataclasses.replace(
                outcome, status="failed", reason="error: an artifact the worker wrote fails its SHA-256 check"
            )
        if outcome.worker:
            outcome.rows = [with_worker(row, outcome.worker) for row in outcome.rows]
        if outcome.status == "done":
            store.mark_done(outcome.key, outcome.artifacts, outcome.rows, consumed)
            self.computed += 1
            self.emit("done", {"cell": label, "worker": outcome.worker})
            return
        if store.cell_state(outcome.key) is None:
            store.mark_running(outcome.key, cell.kind, label)
        store.mark_failed(outcome.key, outcome.reason, outcome.rows)
        if outcome.status == "failed":
            self.failed_cells.append((label, outcome.reason))
            log.error("cell %s failed: %s", label, outcome.reason)
            self.failed += 1
            self.emit("failed", {"cell": label, "reason": outcome.reason, "worker": outcome.worker})
        else:
            log.info("cell %s unavailable: %s", label, outcome.reason)
            self.unavailable += 1
            self.emit("unavailable", {"cell": label, "reason": outcome.reason})


def with_worker(row: dict, worker: str) -> dict:
    """A cost row names the worker that measured it, and its device (docs/SCALING.md, "Progress and cost")."""
    if row.get("pair") != Pair.COST.value:
        return row
    note = f"worker {worker}"
    return {**row, "note": f"{row['note']}; {note}" if row.get("note") else note}


def check_attack_models(components: Components, attack_facts: dict[str, ModelFacts]) -> None:
    """Refuse, before any cell, an attack that needs an inpainting UNet on a model without one: every
    such cell would fail, and a rerun could not help (the model lacks the weights). A flow model
    inpaints with its own transformer (``ModelFacts.can_inpaint``) and is not refused."""
    for attack_spec, setting in components.attack_variants:
        _, attack = components.attacks[variant_key(attack_spec, setting)]
        if not attack.needs_inpaint_unet:
            continue
        for name, facts in attack_facts.items():
            if not facts.can_inpaint:
                raise StoreError(
                    f"--attacks {attack_spec} needs an inpainting UNet, and model {name} has none (no inpaint_unet/ "
                    "folder); give an --attack-model that has one, or drop it from --attacks"
                )


def plan_time_estimate(cells: int, out: Path) -> str:
    """How long ``cells`` cells take one after another at the rate measured in ``out``'s journal, saying
    where the rate comes from; "no rate measured yet" when ``out`` has no finished cell with a time.

    Cells of one plan differ (a protect cell costs more than a PSNR), so this is an order of magnitude."""
    measured = measured_cell_seconds(out)
    if measured is None:
        return f"no rate measured yet: {out} holds no finished cell to time"
    mean, count = measured
    return (
        f"≈ {say_duration(cells * mean)} one cell at a time, at the {mean:.2g} s per cell measured over "
        f"{count:,} finished cells in {out}"
    )


def run_compare(
    spec: CompareSpec,
    on_event: Event | None = None,
    executor_factory: ExecutorFactory | None = None,
    max_cells: int | None = PLAN_CELL_LIMIT,
) -> RunSummary:
    """Plan, (re)run and record a compare grid; returns what happened.

    ``max_cells``: a plan of at least this many cells is refused before it is built (``None``: any size;
    ``bench compare --yes``)."""
    started = time.perf_counter()
    emit = on_event or (lambda kind, info: None)
    if spec.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    components = Components.from_spec(spec)  # every name and setting checked before any work
    facts = model_facts(spec.model, seed=spec.seed, allow_pickle=spec.allow_pickle)
    attack_facts = {
        name: facts if name == spec.model else model_facts(name, seed=spec.seed, allow_pickle=spec.allow_pickle)
        for name in spec.attack_model_names
    }
    check_attack_models(components, attack_facts)
    intake = load_dataset(spec.images, facts.resolution)
    if not intake.images:
        reasons = "; ".join(s.reason for s in intake.skipped) or "no files found"
        raise StoreError(f"no usable images in {', '.join(spec.images)}: {reasons}")
    if max_cells is not None and (cells := count_cells(spec, components, intake)) >= max_cells:
        raise StoreError(
            f"this plan has {cells:,} cells ({plan_time_estimate(cells, spec.out)}; at least {max_cells:,} needs "
            "a confirmation); pass --yes or narrow it (fewer --sweep values, seeds, images or attacks)"
        )
    plan = build_plan(spec, components, facts, intake, attack_facts)
    remote = network_filesystem(spec.out)
    if remote:
        raise StoreError(
            f"--out {spec.out} is on a network filesystem ({remote}); the run journal is SQLite, which "
            "must live on the driver's local disk: give an --out on a local disk (docs/SCALING.md)"
        )
    executor = (executor_factory or SerialExecutor)(spec, components, intake)
    tally = _Tally(emit)
    try:
        with RunStore(spec.out) as store:
            previous = store.read_manifest()
            # A widened plan (more seeds, sweep values, images, attack models) keeps every
            # finished cell, so it is accepted as is; any other change needs --force.
            if (
                previous
                and previous.get("plan_hash") != plan.hash
                and not spec.force
                and not is_widening(store.finished_keys(), plan)
            ):
                raise StoreError(
                    f"{spec.out} holds a run with a different plan (changed: "
                    f"{describe_plan_change(previous.get('plan', {}), plan.description)}); use another --out, or "
                    "--force to switch this run to the new plan (finished cells that still match are reused)"
                )
            manifest = build_manifest(spec, plan, facts.identity(spec.dtype), intake, previous, executor.name)
            store.write_manifest(manifest)
            emit("plan", {"cells": len(plan.cells), "images": len(intake.images), "skipped": len(intake.skipped)})
            for stage in plan.stages():
                _run_stage(stage, store, executor, tally, emit)
                store.write_rows_csv(c.key for c in plan.cells)
            rows_csv = store.write_rows_csv(c.key for c in plan.cells)
            manifest["finished_utc"] = datetime.now(UTC).isoformat()
            manifest["cells"] = {
                "total": len(plan.cells),
                "reused": tally.reused,
                "computed": tally.computed,
                "failed": tally.failed,
                "unavailable": tally.unavailable,
            }
            store.write_manifest(manifest)
    finally:
        executor.close()
    report = render_report(spec.out) if spec.write_report else None
    return RunSummary(
        spec.out,
        len(plan.cells),
        tally.reused,
        tally.computed,
        tally.failed,
        tally.unavailable,
        intake.skipped,
        rows_csv,
        report,
        time.perf_counter() - started,
        failed_cells=tally.failed_cells,
    )


def _run_stage(stage: list, store: RunStore, executor: Executor, tally: _Tally, emit: Event) -> None:
    """Skip the done cells of one stage, resolve the inputs of the others, run them, record each."""
    tasks, cells, consumed_by = [], {}, {}
    looked_up: dict[str, list | None] = {}

    def finished(key: str) -> list | None:
        """A cell of an earlier stage, looked up (and its files hashed) once per stage, not once per reader."""
        if key not in looked_up:
            looked_up[key] = store.done_artifacts(key)
        return looked_up[key]

    for cell in stage:
        # Earlier stages are recorded, so what this cell reads is known before it is looked up.
        inputs = [finished(key) for key in cell.inputs]
        twin = finished(cell.twin) if cell.twin else None
        task = None
        if all(artifacts is not None for artifacts in inputs):
            task = CellTask(cell, tuple(a for artifacts in inputs for a in artifacts[:1]), tuple(twin or ()))
        consumed = [a.sha256 for a in task.inputs + task.twin] if task else None
        if store.done_artifacts(cell.key, consumed) is not None:
            tally.reused += 1
            emit("reused", {"cell": cell.label})
            continue
        if task is None:
            missing = [ref.name for ref, artifacts in zip(cell.images, inputs) if artifacts is None]
            # A protection unavailable here (no trained protector for the model) leaves its attacks
            # unavailable too, with its reason, rather than failed: a rerun cannot help.
            unavailable = [
                (store.cell_state(key) or ("", ""))[1]
                for key, artifacts in zip(cell.inputs, inputs)
                if artifacts is None and any(row.get("status") == "unavailable" for row in store.cell_rows(key))
            ]
            if unavailable:
                reason = f"protection {cell.protection} is unavailable: {unavailable[0]}"
                outcome = failure_outcome(cell, store.run_name, reason, status="unavailable")
                tally.record(store, outcome, cell)
                continue
            tally.record(
                store,
                failure_outcome(
                    cell,
                    store.run_name,
                    f"error: protection {cell.protection} failed on {', '.join(missing)}; nothing to attack",
                ),
                cell,
            )
            continue
        tasks.append(task)
        cells[cell.key], consumed_by[cell.key] = cell, consumed

    for event in executor.run(tasks):
        if isinstance(event, Started):
            store.mark_running(event.task.cell.key, event.task.cell.kind, event.task.cell.label)
            emit("start", {"cell": event.task.cell.label, "worker": event.worker})
        elif isinstance(event, WorkerNote):
            emit("worker", event.info)
        else:
            tally.record(store, event, cells[event.key], consumed_by[event.key])


def render_report(run_dir: Path) -> Path | None:
    from cloakbench.reports.html import write_report

    return write_report(Path(run_dir))
