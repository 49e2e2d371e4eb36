"""The summary tables of the report, aggregated from the long-format rows.

One group per protection and budget (imperceptibility and protection cost, the same for
every attack) with one line per attack and setting (protection strength and attack cost),
then the mean over the attacker pool and the worst case (reports.leaderboard). Values are
means of per-image means (each image's seeds averaged first, reports.stats); L∞ is the maximum (the budget actually spent). A cell whose rows
are all unavailable says so, with the reason in its tooltip, instead of a number.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from cloakbench.core.schema import Pair
from cloakbench.reports import format as fmt
from cloakbench.reports.leaderboard import (
    CUDA_PEAK_METRIC,
    IMPERCEPTIBILITY_PAIR,
    STRENGTH_PAIR,
    Attacker,
    attackers,
    budget_rows,
    budgets,
    memory_metrics,
    pooled_over_attackers,
    worst_case,
)
from cloakbench.reports.run import NO_PROTECTION, Run, attack_label, shorten_paths
from cloakbench.reports.stats import per_image_means

VERSUS_CLEAN_PAIR = Pair.ATTACK_VS_CLEAN.value
GENERATION_PAIR = Pair.GENERATIONS_VS_CONCEPT.value
PREFERRED_ORDER = ("psnr", "ssim", "ms-ssim", "lpips", "clip-sim", "linf", "l2", "fid", "kid")
IMPERCEPTIBILITY_METRICS = ("psnr", "ssim", "lpips", "linf")
MAX_OVER_IMAGES = {"linf"}


@dataclasses.dataclass
class Column:
    metric: str
    label: str
    unit: str
    higher_is_better: bool | None
    direction: str  # e.g. "↓ stronger" for a strength column


@dataclasses.dataclass
class Cell:
    text: str
    title: str = ""
    css: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


REFERENCE_CELL = Cell(
    "reference", "the attack's output on clean images, which the rows below are compared with", "missing"
)


def _hib(rows: pd.DataFrame) -> bool | None:
    flags = {flag for flag in rows["higher_is_better"] if flag in ("0", "1")}
    if len(flags) == 1:
        return flags.pop() == "1"
    return None


def _unit(rows: pd.DataFrame) -> str:
    units = [unit for unit in rows["unit"] if unit]
    return units[0] if units else ""


def metric_order(metrics) -> list[str]:
    present = list(dict.fromkeys(metrics))
    return [m for m in PREFERRED_ORDER if m in present] + sorted(m for m in present if m not in PREFERRED_ORDER)


def columns_for(
    rows: pd.DataFrame, pair: str, *, strength: bool, only=None, hidden: list[str] | None = None
) -> list[Column]:
    """One column per metric with a value in ``pair`` rows, with the direction that reads as "better".

    Metrics without a single ok value (weights missing, images too small) get no column, which
    keeps the table readable; their names go to ``hidden`` and the reasons to the Unavailable section.
    """
    selected = rows[rows["pair"] == pair]
    columns = []
    for metric in metric_order(selected["metric"]):
        if only is not None and metric not in only:
            continue
        of_metric = selected[selected["metric"] == metric]
        if not ((of_metric["status"] == "ok") & of_metric["value"].notna()).any():
            if hidden is not None and metric not in hidden:
                hidden.append(metric)
            continue
        higher = _hib(of_metric)
        unit = _unit(of_metric)
        if higher is None:
            direction = ""
        elif strength:  # a similarity that is lower means the attack copied less
            direction = "↓ stronger" if higher else "↑ stronger"
        else:
            direction = "↑ more natural" if higher else "↓ more natural"
        label = fmt.metric_label(metric, unit)
        if metric in MAX_OVER_IMAGES:
            label += " max"
        columns.append(Column(metric, label, unit, higher, direction))
    return columns


def aggregate(rows: pd.DataFrame, metric: str) -> Cell:
    """Mean (or max) of the ok values of ``rows`` for ``metric``, or why there is none."""
    of_metric = rows[rows["metric"] == metric]
    if of_metric.empty:
        return Cell("—", "not measured", "missing")
    ok = of_metric[(of_metric["status"] == "ok") & of_metric["value"].notna()]
    if ok.empty:
        statuses = sorted(set(of_metric["status"]) - {"ok"}) or ["no value"]
        notes = sorted({shorten_paths(note) for note in of_metric["note"] if note})
        return Cell(" / ".join(statuses), "; ".join(notes), "unavailable")
    values = ok["value"].astype(float)
    # The mean of per-image means (seeds of one image are one sample, reports.stats), as the leaderboard.
    # Rows without an image column (hand-built frames) are each their own image.
    images, means = per_image_means(values, ok["image"] if "image" in ok else map(str, range(len(ok))))
    value = values.max() if metric in MAX_OVER_IMAGES else float(np.mean(means))
    partial = len(ok) < len(of_metric)
    title = (
        f"max over {len(ok)} row(s)"
        if metric in MAX_OVER_IMAGES
        else f"mean of {len(images)} per-image mean(s) over {len(ok)} row(s)"
    )
    if partial:
        title += f"; {len(of_metric) - len(ok)} row(s) not ok"
    finite = values[values.map(math.isfinite)]
    if len(values) > 1 and len(finite) == len(values):
        title += f"; range {fmt.number(finite.min(), metric)} – {fmt.number(finite.max(), metric)}"
    return Cell(fmt.number(float(value), metric) + ("*" if partial else ""), title, "partial" if partial else "")


def _cost_rows(rows: pd.DataFrame, protection: str, attack: str | None, setting: str | None = None) -> pd.DataFrame:
    """Cost rows of the protect phase (``attack`` None) or of one attack.

    The runner times an attack once for all its settings (cost rows with an empty setting);
    per-setting cost rows are used when they exist.
    """
    cost = rows[(rows["pair"] == Pair.COST.value) & (rows["protection"] == protection)]
    if attack is None:
        return cost[cost["attack"] == ""]
    cost = cost[cost["attack"] == attack]
    if setting is not None and (cost["setting_group"] == setting).any():
        cost = cost[cost["setting_group"] == setting]
    return cost


def memory_metric(rows: pd.DataFrame) -> tuple[str, str]:
    """The memory figure that differs between cells: CUDA peak on a GPU, else the CPU working memory.

    Never the process's lifetime peak RSS (the weights dominate it): ``("", …)`` when the run
    has no per-cell figure, and the cells say so.
    """
    figures = memory_metrics(rows)
    if figures and figures[0][0] == CUDA_PEAK_METRIC:
        return figures[0][0], "peak CUDA allocated"
    working = [metric for metric, label in figures if label == "working memory"]
    if working:
        return working[0], "working memory"
    if figures:
        return figures[0][0], figures[0][1]
    return "", "memory"


def time_per_image(cost: pd.DataFrame, n_images: int) -> tuple[float, int] | None:
    """Wall-clock seconds per image: the mean over cells of each cell's ``wall_s`` per image it covers.

    A per-image cell (a protection, SDEdit on one image) covers one image, so this is the mean
    over its cells: with ``--seeds 0,1`` each image has two cells, and the sum over cells divided
    by the images would count every image twice. A set cell (``image == "concept"``: textual
    inversion learns from every image at once) covers ``n_images``. ``None`` without timing rows;
    else ``(seconds, cells)``.
    """
    wall = cost[(cost["metric"] == "wall_s") & (cost["status"] == "ok") & cost["value"].notna()]
    if wall.empty:
        return None
    covered = [max(n_images, 1) if image == "concept" else 1 for image in wall["image"]]
    return float((wall["value"].astype(float) / covered).mean()), len(wall)


def cost_cells(cost: pd.DataFrame, n_images: int, memory: str) -> tuple[Cell, Cell]:
    peak = cost[(cost["metric"] == memory) & (cost["status"] == "ok")]["value"].dropna()
    timed = time_per_image(cost, n_images)
    if timed is None:
        time_cell = Cell("—", "no timing rows", "missing")
    else:
        per_image, cells = timed
        time_cell = Cell(fmt.seconds(per_image), f"mean over {cells} timed cell(s) of the time per image")
    if not memory:
        memory_cell = Cell(
            "—",
            "no per-cell memory figure in this run (the process's lifetime peak RSS is "
            "not shown: it is the same for every protection)",
            "missing",
        )
    elif peak.empty:
        memory_cell = Cell("—", "no memory rows", "missing")
    else:
        memory_cell = Cell(fmt.nbytes(peak.max()), f"largest of {len(peak)} cell(s)")
    return time_cell, memory_cell


def _over_attackers(mine: pd.DataFrame, pool: list[Attacker], columns: list[Column]) -> tuple[list[dict], list[dict]]:
    """Per strength column: the mean over the attacker pool and the worst case, naming the attacker."""
    means, worst = [], []
    for column in columns:
        pooled = pooled_over_attackers(mine, pool, column.metric)
        means.append(
            Cell(
                fmt.number(pooled.mean, column.metric) if pooled.n else "—",
                f"per image, the mean over {len(pool)} attacker(s) of their per-image means; mean over "
                f"{pooled.n} image(s)"
                if pooled.n
                else "no ok rows",
                "" if pooled.n else "missing",
            ).as_dict()
        )
        found = worst_case(mine, pool, column.metric, column.higher_is_better)
        if found.attacker is None:
            worst.append(Cell("—", "no ok rows", "missing").as_dict())
            continue
        worst.append(
            dict(
                Cell(
                    f"{fmt.number(found.estimate.mean, column.metric)} ({found.attacker.name})",
                    f"the strongest attacker on this metric: {found.attacker.name}, mean of "
                    f"{found.estimate.n} per-image mean(s) over {found.estimate.rows} row(s)",
                    "worst",
                ).as_dict(),
                attacker=found.attacker.name,
            )
        )
    return means, worst


def summary(run: Run, pool: list[str] | None = None) -> dict[str, Any]:
    """Everything the summary table needs, as plain data for the template.

    One group per protection and budget; after its attack lines, the mean over the attacker
    pool and the worst case (the strongest attacker per metric, named; reports.leaderboard).
    """
    rows = run.rows
    hidden: list[str] = []
    strength_columns = columns_for(rows, STRENGTH_PAIR, strength=True, hidden=hidden)
    versus_clean_columns = columns_for(rows, VERSUS_CLEAN_PAIR, strength=True, hidden=hidden)
    generation_columns = columns_for(rows, GENERATION_PAIR, strength=True, hidden=hidden)
    impercept_columns = columns_for(
        rows, IMPERCEPTIBILITY_PAIR, strength=False, only=IMPERCEPTIBILITY_METRICS, hidden=hidden
    )
    memory, memory_label = memory_metric(rows)
    groups = []
    chosen = attackers(run, pool)
    for budget in budgets(run):
        protection = budget.protection
        mine = budget_rows(rows, budget)
        if mine.empty:
            continue
        protected = mine[mine["pair"] == IMPERCEPTIBILITY_PAIR]
        n_images = len({image for image in protected["image"] if image})
        protect_time, protect_memory = cost_cells(_cost_rows(mine, protection, None), n_images, memory)
        attacks = []
        for purification, mimicry, setting in run.attacks():
            label = attack_label(purification, mimicry)
            these = mine[
                (mine["purification"] == purification)
                & (mine["mimicry"] == mimicry)
                & (mine["setting_group"] == setting)
            ]
            if these.empty:
                continue
            strength = these[these["pair"] == STRENGTH_PAIR]
            reference = protection == NO_PROTECTION and strength.empty
            versus_clean = these[these["pair"] == VERSUS_CLEAN_PAIR]
            generation = these[these["pair"] == GENERATION_PAIR]
            attack_time, attack_memory = cost_cells(_cost_rows(mine, protection, label, setting), n_images, memory)
            attacks.append(
                {
                    "attack": label,
                    "setting": setting,
                    # The attack on clean images is what the other rows are compared with.
                    "strength": [
                        (REFERENCE_CELL if reference else aggregate(strength, c.metric)).as_dict()
                        for c in strength_columns
                    ],
                    "versus_clean": [aggregate(versus_clean, c.metric).as_dict() for c in versus_clean_columns],
                    "generation": [aggregate(generation, c.metric).as_dict() for c in generation_columns],
                    "has_generation": not generation.empty,
                    "has_versus_clean": not versus_clean.empty,
                    "time": attack_time.as_dict(),
                    "memory": attack_memory.as_dict(),
                }
            )
        means, worst = _over_attackers(mine, chosen, strength_columns)
        if protection == NO_PROTECTION or not chosen:
            means, worst = [], []
        groups.append(
            {
                "protection": budget.name,
                "mean_over_attackers": means,
                "worst_case": worst,
                "is_reference": protection == NO_PROTECTION,
                "n_images": n_images,
                "imperceptibility": [aggregate(protected, c.metric).as_dict() for c in impercept_columns],
                "time": protect_time.as_dict(),
                "memory": protect_memory.as_dict(),
                "attacks": attacks or [None],
            }
        )
    return {
        "strength_columns": [dataclasses.asdict(c) for c in strength_columns],
        "versus_clean_columns": [dataclasses.asdict(c) for c in versus_clean_columns],
        "generation_columns": [dataclasses.asdict(c) for c in generation_columns],
        "impercept_columns": [dataclasses.asdict(c) for c in impercept_columns],
        "memory_label": memory_label,
        "hidden_metrics": [fmt.METRIC_LABELS.get(m, m) for m in hidden],
        "groups": groups,
    }


def problems(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Unavailable metrics (grouped by metric and reason) and failed rows (grouped by where and why)."""
    rows = run.rows
    unavailable = []
    bad = rows[rows["status"] == "unavailable"]
    for (metric, note), group in bad.groupby(["metric", "note"], sort=True):
        unavailable.append(
            {
                "metric": metric,
                "reason": shorten_paths(note) or "(no reason recorded)",
                "count": len(group),
                "pairs": ", ".join(sorted(set(group["pair"]))),
            }
        )
    failed = []
    broken = rows[rows["status"] == "failed"]
    for (protection, attack, setting, note), group in broken.groupby(
        ["protection", "attack", "setting", "note"], sort=True
    ):
        failed.append(
            {
                "protection": protection,
                "attack": attack,
                "setting": setting,
                "reason": shorten_paths(note) or "(no reason recorded)",
                "count": len(group),
                "metrics": ", ".join(sorted(set(group["metric"]))),
            }
        )
    return {"unavailable": unavailable, "failed": failed}
