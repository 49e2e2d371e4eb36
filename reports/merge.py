"""One report from several run folders (``bench report RUN1 RUN2 … --out DIR``).

Runs on two models, on CPU and GPU, or on two dates merge when their rows measure the same
things: every row keeps its folder (the ``source`` column) so its artifact is found there,
and rows of older runs get their model from their own manifest (the transfer matrix then
shows each run's model). Runs are refused, with the reason, when pooling their rows would
put two different computations under one name (README, "The report"):

- the same folder twice;
- a metric whose unit or direction differs between runs;
- a protection or attack of the same name at a different version, or with different
  settings that the rows do not tell apart (no ``protection_setting``);
- no image in common, so no protection's numbers can be set side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cloakbench.reports.run import Run, RunFolderError, load_run


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


def merge_runs(run_dirs: list[str | Path], out_dir: str | Path) -> Run:
    """Load every run folder and pool their rows into one :class:`Run`, or refuse (IncomparableRuns)."""
    paths = [Path(path) for path in run_dirs]
    resolved = [path.resolve() for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise IncomparableRuns(f"{paths[index]} is given twice: each run folder merges once")
    runs = [load_run(path) for path in paths]
    _check_metrics(runs)
    _check_methods(runs)
    images = [set(run.rows[run.rows["pair"] == "protected_vs_clean"]["image"]) - {""} for run in runs]
    if all(images) and not set.intersection(*images):
        raise IncomparableRuns(
            "cannot merge "
            + ", ".join(str(p) for p in paths)
            + ": they share no image (compared by pixel hash), so no protection's numbers "
            "can be set side by side; run them on the same images"
        )
    frames = []
    for index, run in enumerate(runs):
        rows = run.rows.copy()
        rows["source"] = index
        frames.append(rows)
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
    return Run(
        run_dir=Path(out_dir),
        manifest=manifest,
        rows=pd.concat(frames, ignore_index=True),
        run_dirs=[run.run_dir for run in runs],
        manifests=[run.manifest for run in runs],
    )
