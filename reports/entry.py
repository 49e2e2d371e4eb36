"""A leaderboard entry's figures, computed from its cells alone (docs/LEADERBOARD.md, "The entry").

An entry (written by :mod:`cloakbench.bench.leaderboard`) carries every cell of one protection
under one protocol: each cell's key, image, setting and metric values. :func:`figures` turns
those cells into the entry's numbers, and nothing else does: the run writes them with it, and
``bench leaderboard verify`` recomputes them with it from the entry's own cells, so an edited
figure, or an edited cell value, no longer agrees.

Per budget (``eps=8``): imperceptibility (``protected_vs_clean``) and, per attacker of the
protocol's pool, every strength metric (``attack_vs_clean_attack``), each as the mean of
per-image means with its 95 % cluster-bootstrap interval and ``n`` images
(:func:`cloakbench.reports.leaderboard.estimate`); the worst case over the non-adaptive pool
(``measured``), over the adaptive pool (``adaptive``) and over both (``worst``, the headline), by
:func:`cloakbench.reports.leaderboard.worst_case`; the cost of the protect cells. **Reported** is
the submitter's figure or, without one, ``measured``. A budget is **unreliable** when the
adaptive worst case is a weaker protection than the reported figure and its interval excludes
that figure (with one image, its mean alone decides), i.e. an adaptive evaluation beat what was
reported (RobustBench's ``unreliable``; Croce et al., arXiv 2010.09670).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from cloakbench.core.schema import Pair
from cloakbench.reports.leaderboard import STRENGTH_PAIR, Attacker, attacker_rows, estimate, worst_case
from cloakbench.reports.run import attack_label
from cloakbench.reports.stats import Estimate

IMPERCEPTIBILITY_PAIR = Pair.PROTECTED_VS_CLEAN.value
COST_PAIR = Pair.COST.value
#: The pairs an entry keeps per cell: what its figures are computed from.
KEPT_PAIRS = (IMPERCEPTIBILITY_PAIR, STRENGTH_PAIR, COST_PAIR)
#: Cost figures: timing and memory are measured, not recomputed by verify (another machine differs).
COST_METRICS = ("wall_s", "working_rss_bytes", "saved_bytes_per_step", "peak_cuda_allocated_bytes")


def rows_frame(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """The cells' rows as the report's tidy frame (the columns :mod:`reports.leaderboard` reads)."""
    records = []
    for cell in cells:
        for pair, metric, setting, value, higher in cell["rows"]:
            records.append(
                {
                    "image": cell["image"],
                    "protection": cell["protection"],
                    "protection_setting": cell["protection_setting"],
                    "purification": cell.get("purification", ""),
                    "mimicry": cell.get("mimicry", ""),
                    "attack": attack_label(cell.get("purification", ""), cell.get("mimicry", "")),
                    "setting_group": setting,
                    "pair": pair,
                    "metric": metric,
                    "value": math.nan if value is None else float(value),
                    "higher_is_better": higher,
                    "status": "ok",
                }
            )
    columns = ["image", "protection", "protection_setting", "purification", "mimicry", "attack", "setting_group"]
    columns += ["pair", "metric", "value", "higher_is_better", "status"]
    return pd.DataFrame.from_records(records, columns=columns)


def number(value: float) -> float | None:
    """JSON has no NaN or infinity: ``None`` for NaN, the float otherwise (``±inf`` as a string)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) if math.isfinite(value) else None


def estimate_record(found: Estimate) -> dict[str, Any]:
    return {
        "mean": number(found.mean),
        "low": number(found.low) if found.has_interval else None,
        "high": number(found.high) if found.has_interval else None,
        "n": found.n,
        "rows": found.rows,
    }


def _higher(rows: pd.DataFrame, metric: str) -> bool | None:
    flags = set(rows[rows["metric"] == metric]["higher_is_better"]) & {"0", "1"}
    return flags.pop() == "1" if len(flags) == 1 else None


def pool_attackers(rows: pd.DataFrame, pool: list[str]) -> list[Attacker]:
    """The attackers (attack label at one setting) of the pool found in the rows, in pool then setting order."""
    strength = rows[rows["pair"] == STRENGTH_PAIR]
    keys = sorted(set(map(tuple, strength[["purification", "mimicry", "setting_group"]].itertuples(index=False))))
    found = [Attacker(*key) for key in keys]
    return [a for label in pool for a in sorted((a for a in found if a.label == label), key=lambda a: a.setting)]


def _worst(rows: pd.DataFrame, attackers: list[Attacker], metric: str, higher: bool | None) -> dict[str, Any]:
    found = worst_case(rows, attackers, metric, higher)
    return {**estimate_record(found.estimate), "attacker": found.attacker.name if found.attacker else ""}


def weaker(value: float, than: float, similarity_higher: bool | None) -> bool:
    """Whether strength ``value`` is a weaker protection than ``than`` (closer copies: higher similarity)."""
    return value > than if similarity_higher is not False else value < than


def is_unreliable(adaptive: dict[str, Any], reported: float | None, similarity_higher: bool | None) -> bool:
    """The adaptive worst case beat the reported figure: weaker, and its interval excludes it (see the docstring)."""
    if reported is None or adaptive.get("mean") is None:
        return False
    if not weaker(adaptive["mean"], reported, similarity_higher):
        return False
    bound = adaptive["low"] if similarity_higher is not False else adaptive["high"]
    return bound is None or weaker(bound, reported, similarity_higher) or bound == reported


def cost(rows: pd.DataFrame) -> dict[str, Any]:
    """Protect time per image (mean over the protect cells) and the largest memory figures."""
    protect = rows[(rows["pair"] == COST_PAIR) & (rows["attack"] == "")]
    found: dict[str, Any] = {}
    wall = protect[protect["metric"] == "wall_s"]["value"].dropna()
    found["protect_s_per_image"] = number(float(wall.mean())) if not wall.empty else None
    found["protect_cells"] = len(wall)
    for metric in COST_METRICS[1:]:
        values = protect[protect["metric"] == metric]["value"].dropna()
        if not values.empty:
            found[f"{metric}_max"] = number(float(values.max()))
    return found


def figures(cells: list[dict[str, Any]], protocol: dict[str, Any], reported: dict[str, float]) -> dict[str, Any]:
    """Every figure of an entry from its cells (see the module docstring); ``protocol`` is its plain view.

    ``protocol``: ``budgets`` (the settings, ``eps=4`` …), ``non_adaptive`` and ``adaptive``
    (attack labels), ``imperceptibility`` and ``strength`` (metric names), ``headline_metric``.
    ``reported``: the submitter's figure per budget setting (may be empty).
    """
    rows = rows_frame(cells)
    headline = protocol["headline_metric"]
    higher = _higher(rows, headline)
    budgets = []
    for setting in protocol["budgets"]:
        mine = rows[rows["protection_setting"] == setting]
        fixed = pool_attackers(mine, protocol["non_adaptive"])
        adaptive = pool_attackers(mine, protocol["adaptive"])
        attacks = []
        for attacker in fixed + adaptive:
            theirs = attacker_rows(mine, attacker)
            attacks.append(
                {
                    "attacker": attacker.name,
                    "adaptive": attacker in adaptive,
                    "metrics": {m: estimate_record(estimate(theirs, STRENGTH_PAIR, m)) for m in protocol["strength"]},
                }
            )
        measured = _worst(mine, fixed, headline, higher)
        adaptive_worst = _worst(mine, adaptive, headline, higher)
        claimed = reported.get(setting)
        reported_value = float(claimed) if claimed is not None else measured["mean"]
        budgets.append(
            {
                "setting": setting,
                "imperceptibility": {
                    m: estimate_record(estimate(mine, IMPERCEPTIBILITY_PAIR, m)) for m in protocol["imperceptibility"]
                },
                "attacks": attacks,
                "reported": {"value": reported_value, "source": "submitter" if claimed is not None else "measured"},
                "measured": measured,
                "adaptive": adaptive_worst,
                "worst": _worst(mine, fixed + adaptive, headline, higher),
                "unreliable": is_unreliable(adaptive_worst, reported_value, higher),
                "cost": cost(mine),
            }
        )
    return {
        "headline_metric": headline,
        "headline_higher_is_better": higher,
        "budgets": budgets,
        "unreliable": any(b["unreliable"] for b in budgets),
    }


def measured_part(figures_record: dict[str, Any]) -> dict[str, Any]:
    """The figures without the cost (measured time and memory differ on every machine; verify compares the rest)."""
    budgets = [{k: v for k, v in budget.items() if k != "cost"} for budget in figures_record["budgets"]]
    return {**figures_record, "budgets": budgets}
