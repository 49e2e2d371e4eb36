"""The report's figures: matplotlib (Agg backend, no display) figures.

Each builder takes a :class:`reports.run.Run` (and the attacker pool) and returns a
:class:`Plot` holding its open figure, or ``None`` when the run has no data for it (the report
then says why). The report embeds each as a PNG ``data:`` URI (JPEG for the image figures);
``bench plot`` saves the same figures as standalone PDF/SVG/PNG files. Axis labels carry the
direction that reads as "better", since similarity and distance metrics point opposite ways.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display, and no GUI backend picked up from the environment
import matplotlib.pyplot as plt
import pandas as pd

from cloakbench.core.schema import Pair
from cloakbench.reports import format as fmt
from cloakbench.reports import palette
from cloakbench.reports.leaderboard import attackers, budget_rows, budgets, estimate, leaderboard, worst_case
from cloakbench.reports.run import GENERATIONS, NO_PROTECTION, Run, attack_label
from cloakbench.reports.tables import IMPERCEPTIBILITY_PAIR, STRENGTH_PAIR, memory_metric

NOISE = "noise"
X_PREFERENCE = ("lpips", "ssim", "psnr")
Y_PREFERENCE = ("lpips", "clip-sim", "ssim", "psnr")
DPI = 110
#: Stamped on the report and on every figure of a ``--quick`` run.
QUICK_TEXT = "--quick run: every step count shrunk — a smoke test of the pipeline, not a measurement"
#: Fonts embedded as TrueType (Type 42), never Type 3, in PDF and PS files.
EMBEDDED_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42}


@dataclasses.dataclass
class Plot:
    title: str
    caption: str
    alt: str
    figure: Any  # matplotlib Figure, open until encoded or saved
    name: str = ""  # file name stem for ``bench plot``
    photo: bool = False  # made of images: JPEG in the report (smaller than PNG)
    data_uri: str = ""

    def encode(self) -> Plot:
        """Fill ``data_uri`` (PNG, or JPEG for image figures) and close the figure."""
        buffer = io.BytesIO()
        if self.photo:
            self.figure.savefig(buffer, format="jpeg", dpi=DPI, bbox_inches="tight", pil_kwargs={"quality": 85})
            kind = "jpeg"
        else:
            self.figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
            kind = "png"
        plt.close(self.figure)
        self.data_uri = f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return self

    def save(self, folder, formats) -> list:
        """Write ``folder/<name>.<format>`` for each format (vector for pdf/svg) and close the figure.

        PDF and PostScript embed TrueType (Type 42) fonts: matplotlib's default, Type 3, is
        refused by the ACM and IEEE submission checkers (``pdffonts`` lists the type).
        """
        written = []
        for kind in formats:
            path = folder / f"{self.name}.{kind}"
            with matplotlib.rc_context(EMBEDDED_FONTS):
                self.figure.savefig(path, format=kind, dpi=2 * DPI, bbox_inches="tight")
            written.append(path)
        plt.close(self.figure)
        return written


def _safe(text: str) -> str:
    # "$" would switch matplotlib into mathtext; names are text, not formulas.
    return text.replace("$", r"\$")


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    finite = rows["value"].map(lambda v: isinstance(v, float) and math.isfinite(v))
    return rows[(rows["status"] == "ok") & finite]


def _pick(rows: pd.DataFrame, pair: str, preference) -> str | None:
    ok = _ok(rows[rows["pair"] == pair])
    for metric in preference:
        if (ok["metric"] == metric).any():
            return metric
    return None


def _higher(rows: pd.DataFrame, metric: str) -> bool | None:
    flags = set(rows[rows["metric"] == metric]["higher_is_better"]) & {"0", "1"}
    return flags.pop() == "1" if len(flags) == 1 else None


def _colors(names):
    """The protection's own colour (reports.palette: from the registry order, the same in every run)."""
    return palette.colors(names)


def strength_vs_imperceptibility(run: Run, pool: list[str] | None = None) -> Plot | None:
    """Worst-case strength against imperceptibility, one curve per protection across its budgets.

    Each point is one protection at one budget: x = mean imperceptibility, y = the worst case
    over the attacker pool (reports.leaderboard); error bars are the 95 % cluster-bootstrap
    intervals over images, seeds nested in the image (reports.stats). Points of a protection are joined in budget order.
    """
    rows = run.rows
    x_metric = _pick(rows, IMPERCEPTIBILITY_PAIR, X_PREFERENCE)
    y_metric = _pick(rows, STRENGTH_PAIR, Y_PREFERENCE)
    if x_metric is None or y_metric is None:
        return None
    chosen = attackers(run, pool)
    y_higher = _higher(rows, y_metric)
    curves: dict[str, list[tuple]] = {}
    for budget in budgets(run):
        if budget.protection == NO_PROTECTION:
            continue
        mine = budget_rows(rows, budget)
        x = estimate(mine, IMPERCEPTIBILITY_PAIR, x_metric)
        worst = worst_case(mine, chosen, y_metric, y_higher)
        if x.n == 0 or worst.attacker is None or not math.isfinite(x.mean):
            continue
        curves.setdefault(budget.protection, []).append((budget.setting, x, worst.estimate))
    if not curves:
        return None
    colors = _colors(run.protections())
    figure, axes = plt.subplots(figsize=(6.8, 4.6))

    def error(found):
        if not found.has_interval:
            return [[0.0], [0.0]]
        return [[max(found.mean - found.low, 0.0)], [max(found.high - found.mean, 0.0)]]

    for protection, points in curves.items():
        color = colors[protection]
        axes.plot([x.mean for _, x, _ in points], [y.mean for _, _, y in points], "-", color=color, alpha=0.7)
        for index, (setting, x, y) in enumerate(points):
            axes.errorbar(
                [x.mean],
                [y.mean],
                xerr=error(x),
                yerr=error(y),
                fmt="o",
                ms=6,
                color=color,
                capsize=3,
                label=_safe(protection) if index == 0 else None,
            )
            if setting and len(points) > 1:
                axes.annotate(
                    _safe(setting), (x.mean, y.mean), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color
                )
    x_higher = _higher(rows, x_metric)
    x_hint = "" if x_higher is None else ("  (→ more natural)" if x_higher else "  (← more natural)")
    y_hint = "" if y_higher is None else ("  (↓ stronger protection)" if y_higher else "  (↑ stronger protection)")
    axes.set_xlabel(f"{fmt.METRIC_LABELS.get(x_metric, x_metric)} protected vs clean{x_hint}")
    axes.set_ylabel(
        f"worst-case {fmt.METRIC_LABELS.get(y_metric, y_metric)}, attack(protected) vs attack(clean){y_hint}",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    axes.margins(x=0.15, y=0.12)
    axes.legend(fontsize=8, loc="best", title="protection", title_fontsize=8)
    swept = any(len(points) > 1 for points in curves.values())
    caption = (
        f"Each point is one protection at one budget: x = mean {fmt.METRIC_LABELS.get(x_metric, x_metric)} "
        f"between protected and clean images; y = {fmt.METRIC_LABELS.get(y_metric, y_metric)} between the "
        "attack's output on protected and on clean images, for the strongest attacker in the pool (worst "
        "case). Error bars: 95 % cluster-bootstrap intervals over images (seeds nested in the image). "
        + (
            "Lines join each protection's budgets in sweep order."
            if swept
            else "One budget per protection in this run (no sweep), so no curves."
        )
    )
    return Plot(
        "Protection strength vs imperceptibility",
        caption,
        f"strength ({y_metric}) against imperceptibility ({x_metric}) per protection and budget",
        figure,
        name="strength_vs_imperceptibility",
    )


#: Marker of each kind of protection on the cost axis (reports.leaderboard.protection_kind).
KIND_MARKERS = {"per-image": "o", "amortized": "*", "baseline": "s"}


def strength_vs_cost(run: Run, pool: list[str] | None = None) -> Plot | None:
    """Worst-case strength against protect time per image (log scale): the cost axis of the leaderboard.

    One point per protection and budget, its marker saying how it is computed (per-image PGD,
    amortized, baseline); y error bars are the worst case's 95 % cluster-bootstrap interval.
    The same points as ``reports.leaderboard.cost_axis``.
    """
    board = leaderboard(run, pool)
    points = board["cost_axis"]["points"]
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(6.8, 4.6))
    seen_kinds = set()
    for point in points:
        kind = point["kind"]
        low, high = point["low"], point["high"]
        yerr = [[0.0], [0.0]] if low is None or high is None else [[point["worst"] - low], [high - point["worst"]]]
        axes.errorbar(
            [point["time_s"]],
            [point["worst"]],
            yerr=yerr,
            fmt=KIND_MARKERS.get(kind, "o"),
            ms=11 if kind == "amortized" else 6,
            color=point["color"],
            capsize=3,
        )
        axes.annotate(
            _safe(point["name"]),
            (point["time_s"], point["worst"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=7,
        )
        seen_kinds.add(kind)
    for kind in ("per-image", "amortized", "baseline"):  # the legend says what the markers mean
        if kind in seen_kinds:
            axes.plot([], [], KIND_MARKERS[kind], color="#555555", label=kind)
    axes.set_xscale("log")
    higher = _higher(run.rows, board["strength_metric"])
    y_hint = "" if higher is None else ("  (↓ stronger protection)" if higher else "  (↑ stronger protection)")
    axes.set_xlabel("protect time per image, s (log scale)  (← cheaper)")
    axes.set_ylabel(f"worst-case {board['strength_label']}{y_hint}", fontsize=9)
    axes.grid(alpha=0.3, which="both")
    axes.margins(x=0.2, y=0.15)
    axes.legend(fontsize=8, loc="best", title="how it is computed", title_fontsize=8)
    caption = (
        "The cost axis: each point is one protection at one budget; x = its mean wall-clock protect time per "
        "image in this run (log scale), y = its worst case over the attacker pool (as in the leaderboard, "
        "interval: 95 % cluster bootstrap over images). Stars are amortized protectors (one forward pass of a "
        "trained generator), circles per-image optimisation (PGD steps on every picture), squares baselines. "
        + board["cost_axis"]["summary"]
    )
    return Plot(
        "Strength vs cost",
        caption,
        "worst-case strength against protect time per image, per protection",
        figure,
        name="strength_vs_cost",
    )


def cost_bars(run: Run) -> Plot | None:
    rows = run.rows
    cost = _ok(rows[(rows["pair"] == Pair.COST.value) & (rows["attack"] == "")])
    if cost.empty:
        return None
    memory, memory_label = memory_metric(rows)
    protections = [p for p in run.protections() if (cost["protection"] == p).any()]
    # A sweep's budgets and seeds are pooled here (mean per protect cell, i.e. per image);
    # the leaderboard gives the cost per budget.
    times, memories = [], []
    for protection in protections:
        these = cost[cost["protection"] == protection]
        times.append(these[these["metric"] == "wall_s"]["value"].mean())
        peak = these[these["metric"] == memory]["value"] if memory else these["value"].iloc[:0]
        memories.append(peak.max() / 2**20 if not peak.empty else float("nan"))
    colors = _colors(run.protections())
    height = max(2.2, 0.45 * len(protections) + 1.2)
    if memory:
        figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, height))
        panels = [(left, times, fmt.seconds), (right, memories, lambda v: f"{v:.1f} MiB")]
    else:  # no per-cell memory figure: time only (the lifetime peak RSS says nothing about a protection)
        figure, left = plt.subplots(figsize=(5.6, height))
        panels = [(left, times, fmt.seconds)]
    labels = [_safe(p) for p in protections]
    bar_colors = [colors[p] for p in protections]
    left.barh(labels, times, color=bar_colors)
    left.set_xlabel("protect time per image (s)  (← cheaper)")
    if memory:
        right.barh(labels, memories, color=bar_colors)
        right.set_xlabel(f"{memory_label} (MiB)  (← cheaper)")
        right.set_yticklabels([])
    for axes, values, render in panels:
        axes.invert_yaxis()
        axes.grid(axis="x", alpha=0.3)
        for index, value in enumerate(values):
            if math.isfinite(value):
                axes.annotate(render(value), (value, index), textcoords="offset points", xytext=(3, -3), fontsize=8)
        axes.margins(x=0.25)
    if memory:
        caption = (
            f"Cost of computing each protection: wall-clock time per image (mean over protect cells), and "
            f"the largest {memory_label} of a protect cell."
        )
    else:
        caption = (
            "Cost of computing each protection: wall-clock time per image (mean over protect cells). No "
            "per-cell memory figure in this run (the process's lifetime peak RSS is not shown: it is the "
            "same for every protection)."
        )
    return Plot(
        "Cost per protection",
        caption,
        "bar charts of time and memory per protection",
        figure,
        name="cost_per_protection",
    )


def _numeric(setting: str) -> float | None:
    try:
        return float(setting)
    except ValueError:
        return None


def setting_curves(run: Run) -> Plot | None:
    """Similarity against the attack's numeric setting (SDEdit strength), one line per protection."""
    rows = run.rows
    y_metric = _pick(rows, STRENGTH_PAIR, Y_PREFERENCE)
    if y_metric is None:
        return None
    strength = _ok(rows[(rows["pair"] == STRENGTH_PAIR) & (rows["metric"] == y_metric)])
    strength = strength[strength["setting"].map(lambda s: _numeric(s) is not None)]
    attacks = [
        a for a in dict.fromkeys(strength["attack"]) if strength[strength["attack"] == a]["setting"].nunique() >= 2
    ]
    if not attacks:
        return None
    attacks = attacks[:4]
    colors = _colors(run.protections())
    figure, axes_list = plt.subplots(1, len(attacks), figsize=(4.6 * len(attacks), 3.8), squeeze=False)
    for axes, attack in zip(axes_list[0], attacks):
        these = strength[strength["attack"] == attack]
        for protection in [p for p in run.protections() if (these["protection"] == p).any()]:
            line = these[these["protection"] == protection].groupby("setting")["value"].mean()
            points = sorted((_numeric(s), v) for s, v in line.items())
            axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                color=colors[protection],
                linestyle="--" if protection == NO_PROTECTION else "-",
                label=_safe(protection),
            )
        axes.set_title(_safe(attack), fontsize=10)
        axes.set_xlabel("setting (e.g. SDEdit strength)")
        axes.grid(alpha=0.3)
    higher = _higher(rows, y_metric)
    hint = "" if higher is None else ("  (↓ stronger)" if higher else "  (↑ stronger)")
    axes_list[0][0].set_ylabel(f"{fmt.METRIC_LABELS.get(y_metric, y_metric)} vs attack on clean{hint}")
    axes_list[0][-1].legend(fontsize=8, title="protection", title_fontsize=8)
    caption = (
        f"Mean {fmt.METRIC_LABELS.get(y_metric, y_metric)} between the attack's output on protected and "
        "on clean images, per setting of the attack (for SDEdit: the strength, the fraction of the "
        "diffusion run)."
    )
    return Plot(
        "Similarity per attack setting",
        caption,
        "line plots of similarity per setting",
        figure,
        name="similarity_per_setting",
    )


def amplification(run: Run) -> Plot | None:
    rows = run.rows
    values = _ok(rows[(rows["pair"] == Pair.ANALYSIS.value) & (rows["metric"] == "amplification")])
    if values.empty:
        return None
    protections = [p for p in run.protections() if (values["protection"] == p).any()]
    colors = _colors(run.protections())
    figure, axes = plt.subplots(figsize=(6.4, max(2.4, 0.5 * len(protections) + 1.2)))
    means = []
    for index, protection in enumerate(protections):
        mine = values[values["protection"] == protection]["value"]
        means.append(mine.mean())
        axes.barh([index], [mine.mean()], color=colors[protection], alpha=0.6)
        axes.scatter(mine, [index] * len(mine), color="black", s=12, zorder=3)
        axes.annotate(
            f"{mine.mean():.3g}×", (mine.mean(), index), textcoords="offset points", xytext=(4, 6), fontsize=8
        )
    positive = [m for m in means if m > 0]
    if positive and max(positive) / min(positive) > 20:
        axes.set_xscale("log")
    if NOISE in protections:
        baseline = values[values["protection"] == NOISE]["value"].mean()
        axes.axvline(baseline, color="crimson", linestyle="--", label=f"noise baseline ({baseline:.3g}×)")
        axes.legend(fontsize=8, loc="lower right")
    axes.set_yticks(range(len(protections)), [_safe(p) for p in protections])
    axes.invert_yaxis()
    axes.set_xlabel("encoder amplification (‖δz‖/‖z‖) / (‖δx‖/‖x‖)")
    axes.grid(axis="x", alpha=0.3)
    caption = (
        "How much the VAE encoder magnifies each protection's perturbation (posterior means; bars = "
        "mean, dots = images). "
        + (
            "The dashed line is random noise at the same budget: encoder-targeting methods should lie "
            "far to its right (Xue et al., arXiv:2311.12832)."
            if NOISE in protections
            else "The noise baseline was not run, so there is no reference line."
        )
    )
    return Plot(
        "Encoder amplification per protection",
        caption,
        "bar chart of amplification per protection",
        figure,
        name="encoder_amplification",
    )


COMPARISON_IMAGES = 3
COMPARISON_TILE_INCHES = 1.15


def _middle(values: list) -> Any:
    return values[(len(values) - 1) // 2]


def comparison_figures(run: Run) -> list[Plot]:
    """One figure per attack: rows = images; columns = clean, then the attack's output per protection.

    The first output column is the attack on the clean image (protection ``none``). One setting
    is chosen per figure: the middle of the attack's settings (e.g. SDEdit 0.3 of 0.1–0.5) and
    the middle budget of each protection's sweep, so every column is at the same operating point.
    """
    from cloakbench.reports.grids import ImageLookup  # grids decodes artifacts through Pillow

    lookup = ImageLookup(run)
    names = run.image_names()
    available = sorted((i for i in names if i in lookup.images), key=lambda i: (names[i], i))
    images = available[:COMPARISON_IMAGES]
    by_attack: dict[tuple[str, str], list[str]] = {}
    for purification, mimicry, setting in run.attacks():
        if lookup.has_attack_outputs(purification, mimicry, setting):
            by_attack.setdefault((purification, mimicry), []).append(setting)
    protection_budgets: dict[str, list[str]] = {}
    for budget in budgets(run):
        protection_budgets.setdefault(budget.protection, []).append(budget.setting)
    figures = []
    for (purification, mimicry), settings in by_attack.items():
        setting = _middle(settings)
        columns = [(p, _middle(b)) for p, b in protection_budgets.items()]
        grid = []
        for image in images:
            line = [lookup.pixels(lookup.clean(image))[0]]
            for protection, budget in columns:
                key = lookup.attacked(image, protection, purification, mimicry, setting, budget)
                line.append(lookup.pixels(key)[0])
            if any(tile is not None for tile in line[1:]):
                grid.append((names[image], line))
        if not grid:
            continue
        n_columns = len(columns) + 1
        figure, axes_grid = plt.subplots(
            len(grid),
            n_columns,
            squeeze=False,
            figsize=(COMPARISON_TILE_INCHES * n_columns, COMPARISON_TILE_INCHES * len(grid) + 0.5),
        )
        titles = ["clean"] + [
            ("none (attack on clean)" if p == NO_PROTECTION else p) + (f"\n{b}" if b else "") for p, b in columns
        ]
        for row_index, (image_name, line) in enumerate(grid):
            for column_index, tile in enumerate(line):
                axes = axes_grid[row_index][column_index]
                axes.set_xticks([])
                axes.set_yticks([])
                if tile is None:
                    axes.text(0.5, 0.5, "no output", ha="center", va="center", fontsize=7, color="grey")
                else:
                    axes.imshow(tile, interpolation="nearest")
                if row_index == 0:
                    axes.set_title(_safe(titles[column_index]), fontsize=7)
                if column_index == 0:
                    axes.set_ylabel(_safe(image_name[:18]), fontsize=7)
        label = attack_label(purification, mimicry)
        figure.subplots_adjust(wspace=0.04, hspace=0.06)
        shown = f"{label} at setting {setting}" if setting and setting != GENERATIONS else label
        where = ", ".join(
            part
            for part in (
                f"attack model {lookup.attack_model}" if lookup.attack_model else "",
                f"run seed {lookup.run_seed}" if lookup.run_seed else "",
            )
            if part
        )
        caption = (
            f"{shown}{f' ({where})' if where else ''}: each row is an image; the first column is the clean "
            "image, the second the attack's output on it, the others the attack's output on each "
            "protection's image (the middle budget of each sweep). The closer a column looks to the second, "
            "the less the protection stopped the attack. "
            f"Showing {len(grid)} of {len(available)} image(s)."
        )
        figures.append(
            Plot(
                f"Comparison: {label}",
                caption,
                f"image comparison for {label}",
                figure,
                name="comparison_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", label),
                photo=True,
            )
        )
    return figures


def all_plots(run: Run, pool: list[str] | None = None, *, encode: bool = True) -> tuple[list[Plot], list[str]]:
    """The figures that have data (encoded as data URIs unless ``encode=False``), and a note for each that has none."""
    plots, missing = [], []
    for builder, absent in (
        (
            lambda r: strength_vs_imperceptibility(r, pool),
            "Strength vs imperceptibility: needs ok similarity rows for both protected_vs_clean and "
            "attack_vs_clean_attack.",
        ),
        (
            lambda r: strength_vs_cost(r, pool),
            "Strength vs cost: needs protect-phase time rows and a worst case (attack_vs_clean_attack rows).",
        ),
        (cost_bars, "Cost per protection: no protect-phase cost rows."),
        (setting_curves, "Similarity per setting: no attack was run at two or more numeric settings."),
        (amplification, "Encoder amplification: no analysis rows."),
    ):
        plot = builder(run)
        if plot is None:
            missing.append(absent)
        else:
            plots.append(plot)
    comparisons = comparison_figures(run)
    if not comparisons:
        missing.append("Comparison figures: no attack has per-image outputs with artifacts.")
    plots += comparisons
    if run.quick:  # a figure copied into a slide or a paper keeps the warning
        for plot in plots:
            plot.figure.suptitle(QUICK_TEXT, color="#9a5b00", fontsize=8, fontweight="bold", y=1.02)
    if encode:
        plots = [plot.encode() for plot in plots]
    return plots, missing
