"""Render ``run_dir/report.html``: one self-contained file built from the run folder alone.

Safety (docs/RELIABILITY.md, "Report out"): Jinja2 with ``autoescape=True`` for every template
(``select_autoescape`` would not match ``.html.j2``), no ``|safe`` anywhere, data for
machines through ``|tojson``, a Content-Security-Policy that allows nothing but inline
styles and ``data:`` images, every image re-encoded by Pillow. No absolute path is written
(the report must work from a copied folder and is meant to be shared).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from cloakbench.core.io import write_atomic
from cloakbench.reports import format as fmt
from cloakbench.reports.encoder_study import encoder_study
from cloakbench.reports.grids import AMPLIFY, COLUMNS, build_grids
from cloakbench.reports.leaderboard import leaderboard
from cloakbench.reports.merge import merge_runs
from cloakbench.reports.noreference import finetuning_panel, noreference_panel, not_shown
from cloakbench.reports.plots import QUICK_TEXT, all_plots
from cloakbench.reports.run import Run, load_run, plan_names, shorten_paths
from cloakbench.reports.tables import problems, summary

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
REPORT_NAME = "report.html"


def _models_line(manifest: dict[str, Any], model: dict[str, Any]) -> str:
    """The run's model, or every (name, weights) of a merged folder that met several (reports/merge.py)."""
    merged = [m for m in manifest.get("models") or [] if isinstance(m, dict)]
    if len(merged) > 1:
        return "; ".join(
            f"{m.get('shown_as') or m.get('name', '—')}, weights {str(m.get('weights_hash', '?'))[:16]}" for m in merged
        )
    return f"{model.get('name', '—')} ({model.get('dtype', '?')}), weights {str(model.get('weights_hash', '?'))[:16]}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = fmt.seconds
    env.filters["nbytes"] = fmt.nbytes
    return env


def _command_text(command: Any) -> str:
    if isinstance(command, (list, tuple)):
        import shlex

        command = shlex.join(str(part) for part in command)
    return shorten_paths(str(command or ""))


def manifest_view(run: Run) -> dict[str, Any]:
    """The manifest fields a reader needs, as display text (paths shortened)."""
    manifest = run.manifest
    model = manifest.get("model") or {}
    plan = manifest.get("plan") or {}
    versions = manifest.get("versions") or {}
    commit = str(manifest.get("git_commit") or "unknown")
    if manifest.get("git_dirty"):
        commit += " (uncommitted changes)"
    images = [
        str(image.get("name", "")) if isinstance(image, dict) else str(image) for image in plan.get("images") or []
    ]

    # Every run seed (--seeds 0,1), not only the first: the cells ran once per seed.
    seeds = [seed for seed in (plan.get("seeds") or [plan.get("seed")]) if seed is not None]

    def names(key: str) -> str:
        return ", ".join(plan_names(plan.get(key))) or "—"

    fields = [
        ("run", manifest.get("run", run.run_dir.name)),
        ("started (UTC)", manifest.get("created_utc", "—")),
        ("finished (UTC)", manifest.get("finished_utc") or "not finished"),
        ("device", manifest.get("device", "—")),
        ("model", _models_line(manifest, model)),
        ("git commit", commit),
        ("seeds" if len(seeds) > 1 else "seed", ", ".join(map(str, seeds)) or "—"),
        ("protections", names("protections")),
        ("attacks", names("attacks")),
        ("metrics", names("metrics")),
        ("images", f"{len(images)}: " + ", ".join(images) if images else "—"),
    ]
    merged = []
    for other in manifest.get("merged_from") or []:
        if not isinstance(other, dict):
            continue
        duplicates = int(other.get("duplicate_cells") or 0)
        merged.append(
            shorten_paths(
                f"{other.get('run') or other.get('folder', '—')}: model {other.get('model') or '—'}, "
                f"device {other.get('device') or '—'}, started {other.get('created_utc') or '—'}"
                + (
                    f"; {duplicates} cell(s) already in an earlier run, counted once (that run's rows kept)"
                    if duplicates
                    else ""
                )
            )
        )
    return {
        "present": bool(manifest),
        "merged": merged,
        "methods": method_settings(plan),
        "fields": [(label, shorten_paths(str(value))) for label, value in fields],
        "versions": sorted((str(k), str(v)) for k, v in versions.items()),
        "command": _command_text(manifest.get("command")),
    }


def setting_value(value: Any) -> str:
    """A setting as a reader writes it: floats to 6 significant digits (``2.5500000000000003`` -> ``2.55``)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(setting_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {setting_value(item)}" for key, item in value.items()) + "}"
    return str(value)


def _settings_text(config: Any) -> str:
    """``key=value`` pairs, floats rounded; empty strings (an unset optional path) are left out."""
    if not isinstance(config, dict):
        return ""
    return ", ".join(f"{key}={setting_value(value)}" for key, value in config.items() if value != "") or "—"


def method_settings(plan: dict[str, Any]) -> list[dict[str, str]]:
    """What each protection, attack and metric ran with (name, version, config), from the plan."""
    rows = []
    for kind, key in (("protection", "protections"), ("attack", "attacks"), ("metric", "metrics")):
        for entry in plan.get(key) or []:
            if not isinstance(entry, dict):
                rows.append({"kind": kind, "name": str(entry), "version": "", "settings": ""})
                continue
            if kind == "attack" and isinstance(entry.get("attack"), dict):
                parts = [
                    f"{p.get('name', '?')}: {_settings_text(p.get('config'))}"
                    for p in entry.get("purifications") or []
                    if isinstance(p, dict)
                ]
                attack = entry["attack"]
                parts.append(f"{attack.get('name', '?')}: {_settings_text(attack.get('config'))}")
                rows.append(
                    {
                        "kind": kind,
                        "name": str(entry.get("spec") or attack.get("name", "")),
                        "version": str(attack.get("version", "")),
                        "settings": "; ".join(parts),
                    }
                )
                continue
            rows.append(
                {
                    "kind": kind,
                    "name": str(entry.get("name") or entry.get("spec") or ""),
                    "version": str(entry.get("version", "")),
                    "settings": _settings_text(entry.get("config")),
                }
            )
    return [dict(row, settings=shorten_paths(row["settings"])) for row in rows]


def skipped_view(run: Run) -> list[dict[str, str]]:
    skipped = []
    for entry in run.manifest.get("skipped") or []:
        if not isinstance(entry, dict):
            entry = {"path": str(entry), "reason": ""}
        path = str(entry.get("path", ""))
        # Only the file name: the folder it came from is the user's business, not the report's.
        name = Path(path.replace("\\", "/")).name or path
        reason = str(entry.get("reason", ""))
        if path:
            reason = reason.replace(path, name)
            reason = reason[len(name) + 2 :] if reason.startswith(name + ": ") else reason
        skipped.append({"name": name, "reason": shorten_paths(reason)})
    return skipped


def strict_json(value: Any) -> Any:
    """``value`` with non-finite floats made strict-JSON safe: NaN -> null, ±inf -> "inf" / "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def render(run: Run, pool: list[str] | None = None) -> str:
    """The report's HTML; ``pool`` limits the attackers of the worst case (default: every attack)."""
    board = leaderboard(run, pool)
    plots, missing_plots = all_plots(run, pool)
    grids, omitted = build_grids(run)
    table = summary(run, pool)
    issues = problems(run)
    context = {
        "leaderboard": board,
        "quick": run.quick,
        "quick_text": QUICK_TEXT,
        "csp": CSP,
        "run_name": str(run.manifest.get("run") or run.run_dir.name),
        "manifest": manifest_view(run),
        "summary": table,
        "plots": plots,
        "missing_plots": missing_plots,
        "grids": grids,
        "grid_columns": COLUMNS,
        "grids_omitted": omitted,
        "amplify": AMPLIFY,
        "skipped": skipped_view(run),
        "unavailable": issues["unavailable"],
        "failed": issues["failed"],
        "n_rows": len(run.rows),
        "noreference": noreference_panel(run),
        "finetuning": finetuning_panel(run),
        "encoder_study": encoder_study(run),
        "not_shown": not_shown(run),
        # Machine-readable copy of the summary, for scripts that scrape reports (never executed:
        # the CSP allows no script, and the type is not JavaScript).
        "summary_json": strict_json(
            {
                "run": str(run.manifest.get("run") or run.run_dir.name),
                "summary": table,
                "leaderboard": board,
                "unavailable": issues["unavailable"],
                "failed": issues["failed"],
            }
        ),
    }
    return environment().get_template("report.html.j2").render(**context)


def write_report(
    run_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    pool: list[str] | None = None,
    merge: Sequence[str | os.PathLike] | None = None,
) -> Path:
    """Render the report of the run in ``run_dir`` to ``<out_dir or run_dir>/report.html``; return its path.

    ``merge``: more run folders to pool with ``run_dir`` into one report (reports.merge; refused,
    with the reason, when their rows cannot be compared). ``pool``: the attacker pool of the
    worst case. Reads only ``rows.csv``, ``manifest.json`` and the artifacts the rows name;
    writes atomically (:func:`cloakbench.core.io.write_atomic`).
    """
    run_dir = Path(run_dir)
    target_dir = Path(out_dir) if out_dir is not None else run_dir
    if merge:
        run = merge_runs([run_dir, *merge], target_dir)
    else:
        run = load_run(run_dir)
    html = render(run, pool)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / REPORT_NAME
    write_atomic(target, html.encode("utf-8"))
    logger.info("report written: %s (%d bytes)", target, len(html))
    return target
