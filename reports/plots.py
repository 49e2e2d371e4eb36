"""The report's plots: matplotlib (Agg backend, no display) rendered to PNG ``data:`` URIs.

Each builder takes a :class:`reports.run.Run` and returns a :class:`Plot` or ``None`` when the
run has no data for it (the report then says why). Axis labels carry the direction that
reads as "better", since similarity and distance metrics point opposite ways.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math

import matplotlib

matplotlib.use("Agg")  # no display, and no GUI backend picked up from the environment
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cloakbench.reports import format as fmt  # noqa: E402
from cloakbench.reports.run import NO_PROTECTION, Run  # noqa: E402
from cloakbench.reports.tables import IMPERCEPTIBILITY_PAIR, STRENGTH_PAIR, memory_metric  # noqa: E402

NOISE = "noise"
X_PREFERENCE = ("lpips", "ssim", "psnr")
Y_PREFERENCE = ("lpips", "clip-sim", "ssim", "psnr")
DPI = 110


@dataclasses.dataclass
class Plot:
    title: str
    caption: str
    alt: str
    data_uri: str


def _safe(text: str) -> str:
    # "$" would switch matplotlib into mathtext; names are text, not formulas.
    return text.replace("$", r"\$")


def _to_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def strength_vs_imperceptibility(run: Run) -> Plot | None:
    rows = run.rows
    x_metric = _pick(rows, IMPERCEPTIBILITY_PAIR, X_PREFERENCE)
    y_metric = _pick(rows, STRENGTH_PAIR, Y_PREFERENCE)
    if x_metric is None or y_metric is None:
        return None
    x_rows = _ok(rows[(rows["pair"] == IMPERCEPTIBILITY_PAIR) & (rows["metric"] == x_metric)])
    y_rows = _ok(rows[(rows["pair"] == STRENGTH_PAIR) & (rows["metric"] == y_metric)])
    protections = [p for p in run.protections() if p in set(x_rows["protection"]) and p in set(y_rows["protection"])]
    if not protections:
        return None
    colors = _colors(run.protections())
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for protection in protections:
        x = x_rows[x_rows["protection"] == protection]["value"].mean()
        per_attack = y_rows[y_rows["protection"] == protection].groupby(["attack", "setting_group"])["value"].mean()
        y = per_attack.mean()
        axes.errorbar([x], [y], yerr=[[y - per_attack.min()], [per_attack.max() - y]], fmt="o", ms=8,
                      color=colors[protection], capsize=4,
                      label=_safe(protection + (" (reference)" if protection == NO_PROTECTION else "")))
        axes.annotate(_safe(protection), (x, y), textcoords="offset points", xytext=(7, 5), fontsize=9)
    x_higher, y_higher = _higher(rows, x_metric), _higher(rows, y_metric)
    x_hint = "" if x_higher is None else ("  (→ more natural)" if x_higher else "  (← more natural)")
    y_hint = "" if y_higher is None else ("  (↓ stronger protection)" if y_higher else "  (↑ stronger protection)")
    axes.set_xlabel(f"{fmt.METRIC_LABELS.get(x_metric, x_metric)} protected vs clean{x_hint}")
    axes.set_ylabel(f"{fmt.METRIC_LABELS.get(y_metric, y_metric)} attack(protected) vs attack(clean){y_hint}")
    axes.grid(alpha=0.3)
    axes.margins(x=0.15, y=0.1)  # room for the point labels at the edges
    axes.legend(fontsize=8, loc="best", title="protection", title_fontsize=8)
    caption = (f"Each point is one protection: x = mean {fmt.METRIC_LABELS.get(x_metric, x_metric)} between "
               f"protected and clean images; y = mean over attacks and settings of "
               f"{fmt.METRIC_LABELS.get(y_metric, y_metric)} between the attack's output on protected and on "
               "clean images; bars span the attack with the lowest and the highest mean.")
    return Plot("Protection strength vs imperceptibility", caption,
                f"scatter of {y_metric} against {x_metric} per protection", _to_uri(figure))


def cost_bars(run: Run) -> Plot | None:
    rows = run.rows
    cost = _ok(rows[(rows["pair"] == "cost") & (rows["attack"] == "")])
    if cost.empty:
        return None
    memory, memory_label = memory_metric(rows)
    protections = [p for p in run.protections() if (cost["protection"] == p).any()]
    times, memories = [], []
    for protection in protections:
        mine = rows[rows["protection"] == protection]
        n_images = max(len({i for i in mine["image"] if i}), 1)
        these = cost[cost["protection"] == protection]
        times.append(these[these["metric"] == "wall_s"]["value"].sum() / n_images)
        peak = these[these["metric"] == memory]["value"]
        memories.append(peak.max() / 2 ** 20 if not peak.empty else float("nan"))
    colors = _colors(run.protections())
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, max(2.2, 0.45 * len(protections) + 1.2)))
    labels = [_safe(p) for p in protections]
    bar_colors = [colors[p] for p in protections]
    left.barh(labels, times, color=bar_colors)
    left.set_xlabel("protect time per image (s)  (← cheaper)")
    right.barh(labels, memories, color=bar_colors)
    right.set_xlabel(f"{memory_label} (MiB)  (← cheaper)")
    right.set_yticklabels([])
    for axes, values, render in ((left, times, fmt.seconds), (right, memories, lambda v: f"{v:.0f} MiB")):
        axes.invert_yaxis()
        axes.grid(axis="x", alpha=0.3)
        for index, value in enumerate(values):
            if math.isfinite(value):
                axes.annotate(render(value), (value, index), textcoords="offset points", xytext=(3, -3), fontsize=8)
        axes.margins(x=0.25)
    caption = (f"Cost of computing each protection: wall-clock time per image, and the largest {memory_label} "
               "of a protect cell.")
    return Plot("Cost per protection", caption, "bar charts of time and memory per protection", _to_uri(figure))


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
    attacks = [a for a in dict.fromkeys(strength["attack"]) if strength[strength["attack"] == a]["setting"].nunique() >= 2]
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
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colors[protection],
                      linestyle="--" if protection == NO_PROTECTION else "-", label=_safe(protection))
        axes.set_title(_safe(attack), fontsize=10)
        axes.set_xlabel("setting (e.g. SDEdit strength)")
        axes.grid(alpha=0.3)
    higher = _higher(rows, y_metric)
    hint = "" if higher is None else ("  (↓ stronger)" if higher else "  (↑ stronger)")
    axes_list[0][0].set_ylabel(f"{fmt.METRIC_LABELS.get(y_metric, y_metric)} vs attack on clean{hint}")
    axes_list[0][-1].legend(fontsize=8, title="protection", title_fontsize=8)
    caption = (f"Mean {fmt.METRIC_LABELS.get(y_metric, y_metric)} between the attack's output on protected and "
               "on clean images, per setting of the attack (for SDEdit: the strength, the fraction of the "
               "diffusion run)." )
    return Plot("Similarity per attack setting", caption, "line plots of similarity per setting", _to_uri(figure))


def amplification(run: Run) -> Plot | None:
    rows = run.rows
    values = _ok(rows[(rows["pair"] == "analysis") & (rows["metric"] == "amplification")])
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
        axes.annotate(f"{mine.mean():.3g}×", (mine.mean(), index), textcoords="offset points",
                      xytext=(4, 6), fontsize=8)
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
    caption = ("How much the VAE encoder magnifies each protection's perturbation (posterior means; bars = "
               "mean, dots = images). "
               + ("The dashed line is random noise at the same budget: encoder-targeting methods should lie "
                  "far to its right (Xue et al., arXiv:2311.12832)."
                  if NOISE in protections else "The noise baseline was not run, so there is no reference line."))
    return Plot("Encoder amplification per protection", caption, "bar chart of amplification per protection",
                _to_uri(figure))


def all_plots(run: Run) -> tuple[list[Plot], list[str]]:
    """The plots that have data, and a note for each one that does not."""
    plots, missing = [], []
    for builder, absent in (
        (strength_vs_imperceptibility, "Strength vs imperceptibility: needs ok similarity rows for both "
                                       "protected_vs_clean and attack_vs_clean_attack."),
        (cost_bars, "Cost per protection: no protect-phase cost rows."),
        (setting_curves, "Similarity per setting: no attack was run at two or more numeric settings."),
        (amplification, "Encoder amplification: no analysis rows."),
    ):
        plot = builder(run)
        if plot is None:
            missing.append(absent)
        else:
            plots.append(plot)
    return plots, missing
