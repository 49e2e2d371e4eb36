"""One run folder from several (``bench report RUN1 RUN2 … --out DIR``).

Runs on two models, on CPU and GPU, or on two dates merge when their rows measure the same
things. The merged folder is itself a run folder: ``rows.csv`` (the schema's columns, the
rows of every run with duplicates counted once), ``manifest.json`` (the first run's, with
the union of the plans and a ``merged_from`` list naming every run) and ``artifacts/`` (each
artifact the rows name, hard-linked from its run, or copied across file systems; they are
content-addressed, so two runs' artifacts never collide). ``bench report DIR`` and ``bench
plot DIR`` then read it like any run, and the folder can be copied on its own.

**A cell counts once.** A cell's key (the ``cell`` column) is the hash of everything that
determines its result (image, method, version, settings, model weights, seed; bench/plan.py),
so the same key in two runs is the same computation measured twice; pooling both would count
each image × seed twice and narrow every interval. A row is a duplicate when an earlier run
has a row of the same cell key *and* the same image, methods, settings, seeds, models, pair
and metric (:data:`IDENTITY_COLUMNS`; rows without a cell key, in hand-written folders, by
those alone; and the models too, as older rows get theirs from their own manifest). The
first run keeps its rows; later runs' duplicates are dropped, and the merged manifest says
how many cells each run lost (``merged_from[i].duplicate_cells``).

Runs are refused, with the reason, when pooling their rows would put two different
computations under one name (README, "The report"):

- the same folder twice, or an output folder that is one of the runs or a `bench compare`
  run folder (it would overwrite that run's rows);
- a metric whose unit or direction differs between runs;
- a protection or attack of the same name at a different version, or with different
  settings that the rows do not tell apart (no ``protection_setting``);
- no image in common, so no protection's numbers can be set side by side.

**Models are identified by weights, not name.** Two runs of one model name with different
weights (``tiny-random`` under two weight seeds, a folder retrained in place) measured two
models: their rows' ``protect_model``/``attack_model`` become ``NAME@<first 12 hex of the
weights hash>`` so the report never pools them, and the merged manifest's ``models`` lists
every (name, weights hash) with the runs that used it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from cloakbench.core.io import write_atomic
from cloakbench.core.schema import COLUMNS, OBSERVATION_COLUMNS, Pair
from cloakbench.reports.run import Run, RunFolderError, load_run

logger = logging.getLogger(__name__)

#: What identifies a row's observation, beside its cell key (core/schema.py).
IDENTITY_COLUMNS = OBSERVATION_COLUMNS


class IncomparableRuns(RunFolderError):
    """Runs whose rows cannot be pooled into one report; the message says why."""


def _entries(plan: dict[str, Any], key: str) -> dict[str, tuple[str, str]]:
    """name -> (version, settings as canonical JSON) of a plan's protections or attacks."""
    found = {}
    for entry in plan.get(key) or []:
        if not isinstance(entry, dict):
            continue
        if key == "attacks" and isinstance(entry.get("attack"), dict):
            name = str(entry.get("spec") or entry["attack"].get("name", ""))
            parts = [entry["attack"]] + [p for p in entry.get("purifications") or [] if isinstance(p, dict)]
            version = ",".join(str(part.get("version", "")) for part in parts)
            config = json.dumps([part.get("config") for part in parts], sort_keys=True)
        else:
            name = str(entry.get("name") or entry.get("spec") or "")
            version = str(entry.get("version", ""))
            config = json.dumps(entry.get("config"), sort_keys=True)
        found[name] = (version, config)
    return found


def _check_metrics(runs: list[Run]) -> None:
    seen: dict[tuple[str, str], tuple[str, str, str]] = {}
    for run in runs:
        ok = run.rows[(run.rows["status"] == "ok") & (run.rows["metric"] != "")]
        for (pair, metric), group in ok.groupby(["pair", "metric"], sort=True):
            unit = next((u for u in group["unit"] if u), "")
            direction = next((h for h in group["higher_is_better"] if h in ("0", "1")), "")
            if (pair, metric) not in seen:
                seen[(pair, metric)] = (unit, direction, run.run_dir.name)
                continue
            first_unit, first_direction, first_run = seen[(pair, metric)]
            if (unit and first_unit and unit != first_unit) or (
                direction and first_direction and direction != first_direction
            ):
                raise IncomparableRuns(
                    f"cannot merge {first_run} and {run.run_dir.name}: metric {metric} ({pair}) is measured "
                    f"in {first_unit or 'no unit'} (higher is better: {first_direction or '?'}) in one and "
                    f"{unit or 'no unit'} (higher is better: {direction or '?'}) in the other"
                )


def _check_methods(runs: list[Run]) -> None:
    for key, column in (("protections", "protection"), ("attacks", "attack")):
        seen: dict[str, tuple[tuple[str, str], Run]] = {}
        for run in runs:
            for name, (version, config) in _entries(run.manifest.get("plan") or {}, key).items():
                if name not in seen:
                    seen[name] = ((version, config), run)
                    continue
                (first_version, first_config), first = seen[name]
                if version != first_version:
                    raise IncomparableRuns(
                        f"cannot merge {first.run_dir.name} and {run.run_dir.name}: {name} is version "
                        f"{first_version} in one and {version} in the other, so their numbers differ by method, "
                        "not by run; rerun the older one"
                    )
                swept = (
                    all((r.rows[r.rows[column] == name]["protection_setting"] != "").all() for r in (first, run))
                    if column == "protection"
                    else False
                )
                if config != first_config and not swept:
                    raise IncomparableRuns(
                        f"cannot merge {first.run_dir.name} and {run.run_dir.name}: {name} ran with settings "
                        f"{first_config} in one and {config} in the other, and the rows do not tell them apart; "
                        "rerun with the same settings or as a --sweep"
                    )


def _deduplicated(runs: list[Run]) -> tuple[pd.DataFrame, list[int]]:
    """Every run's rows, a row already in an earlier run dropped; how many cells each run lost."""
    seen: set[tuple] = set()
    frames, dropped = [], []
    for run in runs:
        rows = run.rows
        keys = [tuple(values) for values in rows[["cell", *IDENTITY_COLUMNS]].itertuples(index=False)]
        duplicate = pd.Series([key in seen for key in keys], index=rows.index)
        cells = rows.loc[duplicate, "cell"]
        dropped.append(int(cells[cells != ""].nunique()) + int((cells == "").sum()))
        seen.update(keys)
        frames.append(rows[~duplicate])
    return pd.concat(frames, ignore_index=True), dropped


def _check_out(paths: list[Path], out_dir: Path) -> None:
    target = out_dir.resolve()
    for path in paths:
        if path.resolve() == target:
            raise IncomparableRuns(
                f"--out {out_dir} is one of the runs being merged; the merged rows would overwrite its own: "
                "give --out a new folder"
            )
    if (out_dir / "journal.sqlite").exists():
        raise IncomparableRuns(
            f"--out {out_dir} is a `bench compare` run folder (it has a journal); the merged rows would "
            "overwrite its own: give --out a new folder"
        )


def _link_artifacts(runs: list[Run], rows: pd.DataFrame, out_dir: Path) -> int:
    """Hard-link (or copy) every artifact the rows name into ``out_dir`` at the same relative path."""
    linked = 0
    for (source, relative), _ in rows[rows["artifact"] != ""].groupby(["source", "artifact"], sort=False):
        found = runs[int(source)].artifact_path(relative)
        if found is None:
            continue
        target = out_dir / relative
        if target.is_file() and target.stat().st_size == found.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(found, target)
        except FileExistsError:
            target.unlink()
            os.link(found, target)
        except OSError:  # another file system, or links not allowed: copy
            shutil.copyfile(found, target)
        linked += 1
    return linked


def _value_text(value: float) -> str:
    return "" if pd.isna(value) else repr(float(value))


def write_rows(rows: pd.DataFrame, path: Path) -> None:
    """``rows.csv`` with the schema's columns in order (the store's format: full-precision floats)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in rows[list(COLUMNS)].itertuples(index=False):
        writer.writerow([_value_text(v) if c == "value" else v for c, v in zip(COLUMNS, record)])
    write_atomic(path, buffer.getvalue().encode("utf-8"))


def _merged_manifest(runs: list[Run], dropped: list[int]) -> dict[str, Any]:
    manifest = dict(runs[0].manifest)
    manifest["run"] = " + ".join(str(run.manifest.get("run") or run.run_dir.name) for run in runs)
    manifest["plan"] = dict(manifest.get("plan") or {})
    for key in ("protections", "attacks", "metrics"):
        merged: list[Any] = []
        names: set[str] = set()
        for run in runs:
            for entry in (run.manifest.get("plan") or {}).get(key) or []:
                name = str(entry.get("name") or entry.get("spec") or "") if isinstance(entry, dict) else str(entry)
                if name not in names:
                    names.add(name)
                    merged.append(entry)
        manifest["plan"][key] = merged
    seeds: list[Any] = []
    for run in runs:
        plan = run.manifest.get("plan") or {}
        for seed in plan.get("seeds") or [plan.get("seed")]:
            if seed is not None and seed not in seeds:
                seeds.append(seed)
    if seeds:
        manifest["plan"]["seeds"] = seeds
    # A merged folder of --quick runs is a --quick folder: any quick run marks it.
    if any(((run.manifest.get("settings") or {}).get("quick")) for run in runs):
        manifest["settings"] = dict(manifest.get("settings") or {}, quick=True)
    manifest["merged_from"] = [
        {
            "run": str(run.manifest.get("run") or run.run_dir.name),
            "folder": run.run_dir.name,
            "model": (run.manifest.get("model") or {}).get("name", "")
            if isinstance(run.manifest.get("model"), dict)
            else "",
            "weights_hash": _model_of(run)[1],
            "device": str(run.manifest.get("device", "")),
            "created_utc": str(run.manifest.get("created_utc", "")),
            "duplicate_cells": count,
        }
        for run, count in zip(runs, dropped)
    ]
    return manifest


def _model_of(run: Run) -> tuple[str, str]:
    model = run.manifest.get("model")
    if not isinstance(model, dict):
        return "", ""
    return str(model.get("name") or ""), str(model.get("weights_hash") or "")


def _separate_models(runs: list[Run]) -> list[dict[str, Any]]:
    """Relabel the rows of a model name that has different weights in different runs (``NAME@hash12``);
    the models met, with their weights hashes and runs, for the merged manifest."""
    hashes: dict[str, set[str]] = {}
    for run in runs:
        name, weights = _model_of(run)
        if name:
            hashes.setdefault(name, set()).add(weights)
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        name, weights = _model_of(run)
        if not name:
            continue
        shown = name
        if len(hashes[name]) > 1:
            shown = f"{name}@{weights[:12]}"
            for column in ("protect_model", "attack_model"):
                run.rows.loc[run.rows[column] == name, column] = shown
        entry = models.setdefault(
            (name, weights), {"name": name, "weights_hash": weights, "shown_as": shown, "runs": []}
        )
        entry["runs"].append(str(run.manifest.get("run") or run.run_dir.name))
    return list(models.values())


def merge_runs(run_dirs: list[str | Path], out_dir: str | Path) -> Run:
    """Merge the run folders into the run folder ``out_dir`` and load it, or refuse (IncomparableRuns)."""
    paths = [Path(path) for path in run_dirs]
    out_dir = Path(out_dir)
    resolved = [path.resolve() for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise IncomparableRuns(f"{paths[index]} is given twice: each run folder merges once")
    _check_out(paths, out_dir)
    runs = [load_run(path) for path in paths]
    _check_metrics(runs)
    _check_methods(runs)
    images = [set(run.rows[run.rows["pair"] == Pair.PROTECTED_VS_CLEAN.value]["image"]) - {""} for run in runs]
    if all(images) and not set.intersection(*images):
        raise IncomparableRuns(
            "cannot merge "
            + ", ".join(str(p) for p in paths)
            + ": they share no image (compared by pixel hash), so no protection's numbers "
            "can be set side by side; run them on the same images"
        )
    for index, run in enumerate(runs):
        run.rows["source"] = index
    models = _separate_models(runs)  # before deduplication: a model's identity is part of a row's
    rows, dropped = _deduplicated(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    linked = _link_artifacts(runs, rows, out_dir)
    write_rows(rows, out_dir / "rows.csv")
    manifest = _merged_manifest(runs, dropped)
    manifest["models"] = models
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    logger.info(
        "merged %d run(s) into %s: %d row(s), %d duplicate cell(s) counted once, %d artifact(s) linked",
        len(runs),
        out_dir,
        len(rows),
        sum(dropped),
        linked,
    )
    return load_run(out_dir)
