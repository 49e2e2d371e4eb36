"""The report's no-reference panel and the leaderboard's fine-tuning panel (docs/METRICS.md,
"No-reference and face metrics"), and why a metric is not shown at all.

- :func:`noreference_panel`: per protection and budget, the no-reference quality of the
  published image itself (``pair = protected``: does the protection make the picture look
  worse to a quality model?) and, per set attack, of its generations (``pair = generations``:
  BRISQUE, FDFR) and their identity to the subject (``generations_vs_concept``: ISM).
- :func:`finetuning_panel`: the leaderboard's fine-tuning view: one row per protection and
  budget, one column per fine-tuning attack (``lora``, ``dreambooth``) and metric (BRISQUE of
  the generations, FDFR, ISM), means with 95 % bootstrap intervals, the best protection marked
  (higher BRISQUE and FDFR, lower ISM = the protection spoiled the mimicry more).
- :func:`not_shown`: each metric without a single value in the run, with the reason its rows
  carry (the file, the place, what to install).

Separate from ``reports/tables.py`` and ``reports/leaderboard.py`` on purpose: these panels
read only the no-reference rows and reuse the leaderboard's estimates and marks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cloakbench.core.schema import Pair
from cloakbench.reports import format as fmt
from cloakbench.reports.leaderboard import NO_PROTECTION, budget_rows, budgets, cell, estimate, mark_column
from cloakbench.reports.run import Run, shorten_paths

PROTECTED_PAIR = Pair.PROTECTED.value
GENERATIONS_PAIR = Pair.GENERATIONS.value
IDENTITY_PAIR = Pair.GENERATIONS_VS_CONCEPT.value
#: The no-reference and identity metrics, in display order, with the pair each is read from.
GENERATION_METRICS = (("brisque", GENERATIONS_PAIR), ("fdfr", GENERATIONS_PAIR), ("ism", IDENTITY_PAIR))
FINETUNING_ATTACKS = ("lora", "dreambooth")


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["status"] == "ok") & rows["value"].notna()]


def _higher(rows: pd.DataFrame, metric: str) -> bool | None:
    flags = set(rows[rows["metric"] == metric]["higher_is_better"]) & {"0", "1"}
    return flags.pop() == "1" if len(flags) == 1 else None


def _why(rows: pd.DataFrame) -> str:
    notes = sorted({shorten_paths(note) for note in rows["note"] if note})
    return "; ".join(notes) or "no ok rows"


def _estimate_cell(rows: pd.DataFrame, pair: str, metric: str) -> tuple[dict[str, Any], Any]:
    """A display cell (mean, interval) of ``metric`` in ``pair`` rows, or why there is none; and the estimate."""
    selected = rows[(rows["pair"] == pair) & (rows["metric"] == metric)]
    found = estimate(rows, pair, metric)
    shown = cell(found, metric)
    if found.n == 0:
        statuses = sorted(set(selected["status"]) - {"ok"})
        shown.update(
            text=" / ".join(statuses) if statuses else "—",
            title=_why(selected) if not selected.empty else "not measured",
            css="unavailable" if statuses else "missing",
        )
    notes = sorted({note for note in _ok(selected)["note"] if note})
    if notes:
        shown["title"] += "; " + "; ".join(shorten_paths(n) for n in notes)
    return shown, found


def _direction(higher: bool | None, *, strength: bool) -> str:
    if higher is None:
        return ""
    if strength:  # a worse generation (or fewer faces, less identity) means a stronger protection
        return "↑ stronger" if not higher else "↓ stronger"
    return "↑ better quality" if higher else "↓ better quality"


def _set_attacks(run: Run) -> list[str]:
    rows = run.rows
    labels = rows[rows["pair"].isin((GENERATIONS_PAIR, IDENTITY_PAIR)) & (rows["attack"] != "")]["attack"]
    # Fine-tuning attacks first (the papers' subject), then other set attacks (textual inversion).
    return sorted(set(labels), key=lambda label: (label.split("+")[-1] not in FINETUNING_ATTACKS, label))


def noreference_panel(run: Run) -> dict[str, Any] | None:
    """Rows per protection budget: quality of the protected image, then each set attack's generations."""
    rows = run.rows
    nr = rows[rows["pair"].isin((PROTECTED_PAIR, GENERATIONS_PAIR, IDENTITY_PAIR))]
    if not (nr["pair"].isin((PROTECTED_PAIR, GENERATIONS_PAIR)) | (nr["metric"] == "ism")).any():
        return None
    protected = nr[nr["pair"] == PROTECTED_PAIR]
    # A metric with no value anywhere (weights missing) gets no column; not_shown() says why.
    protected_metrics = [
        m for m in fmt.ordered(set(protected["metric"])) if not _ok(protected[protected["metric"] == m]).empty
    ]
    generation_metrics = [
        (m, pair) for m, pair in GENERATION_METRICS if (nr[(nr["pair"] == pair)]["metric"] == m).any()
    ]
    attacks = _set_attacks(run)
    entries = []
    for budget in budgets(run):
        mine = budget_rows(nr, budget)
        if mine.empty:
            continue
        quality = [_estimate_cell(mine, PROTECTED_PAIR, m)[0] for m in protected_metrics]
        per_attack = []
        for label in attacks:
            these = mine[mine["attack"] == label]
            per_attack.append([_estimate_cell(these, pair, m)[0] for m, pair in generation_metrics])
        entries.append(
            {
                "name": budget.name,
                "is_reference": budget.protection == NO_PROTECTION,
                "quality": quality,
                "attacks": per_attack,
            }
        )
    return {
        "protected_columns": [
            {"label": fmt.metric_label(m), "direction": _direction(_higher(nr, m), strength=False)}
            for m in protected_metrics
        ],
        "attacks": attacks,
        "generation_columns": [
            {"label": fmt.metric_label(m), "direction": _direction(_higher(nr, m), strength=True)}
            for m, _ in generation_metrics
        ],
        "rows": entries,
    }


def finetuning_panel(run: Run) -> dict[str, Any] | None:
    """The leaderboard's fine-tuning panel: protections × (fine-tuning attack, metric), best marked."""
    rows = run.rows
    tuned = rows[rows["mimicry"].isin(FINETUNING_ATTACKS)]
    columns = []
    for label in sorted(set(tuned["attack"])):
        for metric, pair in GENERATION_METRICS:
            of = tuned[(tuned["attack"] == label) & (tuned["pair"] == pair) & (tuned["metric"] == metric)]
            if not of.empty:
                columns.append((label, metric, pair))
    if not columns:
        return None
    entries, estimates = [], []
    for budget in budgets(run):
        mine = budget_rows(tuned, budget)
        cells, found = [], []
        for label, metric, pair in columns:
            shown, value = _estimate_cell(mine[mine["attack"] == label], pair, metric)
            cells.append(shown)
            found.append(value)
        entries.append({"name": budget.name, "is_reference": budget.protection == NO_PROTECTION, "cells": cells})
        estimates.append(found)
    names = [entry["name"] for entry in entries]
    skip = [entry["is_reference"] for entry in entries]
    headers = []
    for index, (label, metric, _pair) in enumerate(columns):
        higher = _higher(tuned, metric)
        stronger_high = None if higher is None else not higher
        mark_column([e["cells"][index] for e in entries], [f[index] for f in estimates], names, stronger_high, skip)
        headers.append(
            {"attack": label, "label": fmt.metric_label(metric), "direction": _direction(higher, strength=True)}
        )
    return {"columns": headers, "rows": entries}


def not_shown(run: Run) -> list[dict[str, str]]:
    """Every metric with rows but no value anywhere in the run, with the reason(s) its rows give."""
    rows = run.rows[run.rows["metric"] != ""]
    shown = set(_ok(rows)["metric"])
    found = []
    for metric in fmt.ordered(set(rows["metric"]) - shown):
        of = rows[rows["metric"] == metric]
        if (of["status"] == "unavailable").any() or (of["status"] == "failed").any():
            found.append({"metric": fmt.metric_label(metric), "reason": _why(of)})
    return found
