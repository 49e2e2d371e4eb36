"""The report's answer first: the leaderboard, the worst case over attackers, categories and transfer.

One leaderboard row per protection and budget (``protection_setting``; the plan's ``eps``
when nothing was swept): imperceptibility, strength against each attacker, the mean over
attackers, the worst case, and the protection's cost. Every number is a mean of per-image
means with its 95 % cluster-bootstrap interval over images, seeds nested inside the image
(:mod:`reports.stats`), and says its ``n`` (images); in each column the best protection is
marked, and every other protection that a paired test on the per-image differences (exact
Wilcoxon signed-rank, Holm-corrected over the column) does not separate from it is marked
"≈" (the run cannot tell them apart). The mean over attackers is, per image, the mean over
the attackers of that image's means, so an attack with four settings is one attacker, not
four independent draws.

**Worst case** (Hönig et al., "Adversarial Perturbations Cannot Reliably Protect Artists From
Generative AI", arXiv:2406.12027; Carlini et al.'s adaptive-attack standard, arXiv:1902.06705):
an attacker is one attack at one setting (``sdedit@0.2``, ``jpeg+sdedit@0.5``). For each
protection, budget and metric, the strongest attacker is the one whose output on the
protected image is closest to its output on the clean image (``attack_vs_clean_attack``: the
highest similarity, or the lowest distance), i.e. the one the protection stops least. Its
mean and name are shown beside the mean over attackers. The attacker pool is every attack in
the run unless ``--attacker-pool`` names some (an attack label takes all its settings,
``label@setting`` one setting).

**Cost axis**: every row says how its protection is computed (``kind``: per-image optimisation,
amortized, or a baseline; from its family), and :func:`cost_axis` sets worst-case strength
against protect time per image, so a generator that protects in one forward pass is read
beside the per-image PGD methods it amortizes (the report's "Strength vs cost" figure).

**Memory** is what differs between protections: the CUDA peak allocated during the cell on a
GPU; on a CPU, the bytes saved for backward per step and the cell's working memory above its
starting RSS. Never the process's lifetime peak RSS (the weights dominate it; it is the same
for every protection).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pandas as pd

from cloakbench.core.schema import Pair
from cloakbench.protections import PROTECTIONS
from cloakbench.reports import format as fmt
from cloakbench.reports import palette, stats
from cloakbench.reports.run import GENERATIONS, NO_PROTECTION, Run, attack_label
from cloakbench.reports.stats import EMPTY, Estimate, bootstrap, mean_over_groups, over_images

STRENGTH_PAIR = Pair.ATTACK_VS_CLEAN_ATTACK.value
IMPERCEPTIBILITY_PAIR = Pair.PROTECTED_VS_CLEAN.value
STRENGTH_PREFERENCE = ("lpips", "clip-sim", "ssim", "psnr")
IMPERCEPTIBILITY_PREFERENCE = ("psnr", "lpips", "ssim")
IMPERCEPTIBILITY_LEADER_COLUMNS = 2

#: CPU memory figures written by the harness (cost rows); the first name present is used.
SAVED_PER_STEP_METRICS = ("saved_bytes_per_step",)
WORKING_MEMORY_METRICS = ("working_rss_bytes",)
CUDA_PEAK_METRIC = "peak_cuda_allocated_bytes"


class AttackerPoolError(ValueError):
    """``--attacker-pool`` names an attack that is not in the run."""


@dataclasses.dataclass(frozen=True)
class Attacker:
    purification: str
    mimicry: str
    setting: str  # the setting group (``all generations`` for set attacks)

    @property
    def label(self) -> str:
        return attack_label(self.purification, self.mimicry)

    @property
    def name(self) -> str:
        return f"{self.label}@{self.setting}" if self.setting and self.setting != GENERATIONS else self.label


@dataclasses.dataclass(frozen=True)
class Budget:
    """One leaderboard row's key: a protection at one setting."""

    protection: str
    setting: str  # canonical ``protection_setting`` (``eps=8``), or "" when the run has one setting

    @property
    def name(self) -> str:
        return f"{self.protection} ({self.setting})" if self.setting else self.protection


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["status"] == "ok") & rows["value"].notna()]


def higher_is_better(rows: pd.DataFrame, metric: str) -> bool | None:
    flags = set(rows[rows["metric"] == metric]["higher_is_better"]) & {"0", "1"}
    return flags.pop() == "1" if len(flags) == 1 else None


def pick_metrics(rows: pd.DataFrame, pair: str, preference, count: int) -> list[str]:
    ok = _ok(rows[rows["pair"] == pair])
    present = set(ok["metric"])
    return [metric for metric in preference if metric in present][:count]


def attackers(run: Run, pool: list[str] | None = None) -> list[Attacker]:
    """Attackers with strength rows, in plan order; only those in ``pool`` when given (unknown names refused)."""
    strength = run.rows[run.rows["pair"] == STRENGTH_PAIR]
    columns = ["purification", "mimicry", "setting_group"]
    keys = set(map(tuple, strength[columns].drop_duplicates().itertuples(index=False)))
    found = [Attacker(*key) for key in run.attacks() if key in keys]
    if not pool:
        return found
    known_labels = list(dict.fromkeys(a.label for a in found))
    chosen = []
    for wanted in pool:
        matches = [a for a in found if wanted in (a.label, a.name)]
        if not matches:
            raise AttackerPoolError(
                f"attacker pool: {wanted!r} is not an attack of this run; its attacks are "
                + (", ".join(known_labels) or "none")
                + " (a label takes all its settings, label@setting one)"
            )
        chosen += [a for a in matches if a not in chosen]
    return chosen


def _budget_sort_key(setting: str) -> tuple:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", setting)]
    return (numbers, setting)


def _plan_eps(run: Run) -> dict[str, str]:
    """``eps=…`` of each protection from the plan, for runs without a sweep (so the budget is visible)."""
    found = {}
    for entry in (run.manifest.get("plan") or {}).get("protections") or []:
        if isinstance(entry, dict) and isinstance(entry.get("config"), dict) and "eps" in entry["config"]:
            eps = entry["config"]["eps"]
            found[str(entry.get("name"))] = f"eps={eps:g}" if isinstance(eps, (int, float)) else f"eps={eps}"
    return found


def budgets(run: Run) -> list[Budget]:
    rows = run.rows
    found = []
    for protection in run.protections():
        settings = sorted(set(rows[rows["protection"] == protection]["protection_setting"]), key=_budget_sort_key)
        found += [Budget(protection, setting) for setting in settings]
    return found


def budget_rows(rows: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    return rows[(rows["protection"] == budget.protection) & (rows["protection_setting"] == budget.setting)]


def attacker_rows(rows: pd.DataFrame, attacker: Attacker) -> pd.DataFrame:
    return rows[
        (rows["purification"] == attacker.purification)
        & (rows["mimicry"] == attacker.mimicry)
        & (rows["setting_group"] == attacker.setting)
    ]


def estimate(rows: pd.DataFrame, pair: str, metric: str) -> Estimate:
    """Mean of per-image means of the ok rows, with the cluster-bootstrap interval over images."""
    selected = _ok(rows[(rows["pair"] == pair) & (rows["metric"] == metric)])
    return over_images(selected["value"].astype(float), selected["image"])


def naive_estimate(rows: pd.DataFrame, pair: str, metric: str) -> Estimate:
    """The same rows bootstrapped as independent (image, seed) draws: what the report no longer does."""
    selected = _ok(rows[(rows["pair"] == pair) & (rows["metric"] == metric)])
    return bootstrap(selected["value"].astype(float))


@dataclasses.dataclass
class WorstCase:
    estimate: Estimate
    attacker: Attacker | None
    per_attacker: dict[str, Estimate]


def worst_case(rows: pd.DataFrame, pool: list[Attacker], metric: str, higher: bool | None) -> WorstCase:
    """The attacker the protection stops least on ``metric``: highest similarity (or lowest distance)."""
    per_attacker: dict[str, Estimate] = {}
    best: tuple[float, Attacker, Estimate] | None = None
    strength = rows[(rows["pair"] == STRENGTH_PAIR) & (rows["metric"] == metric)]  # filter once, then per attacker
    for attacker in pool:
        found = estimate(attacker_rows(strength, attacker), STRENGTH_PAIR, metric)
        if found.n == 0 or math.isnan(found.mean):
            continue
        per_attacker[attacker.name] = found
        score = found.mean if higher is not False else -found.mean
        if best is None or score > best[0]:
            best = (score, attacker, found)
    if best is None:
        return WorstCase(EMPTY, None, per_attacker)
    return WorstCase(best[2], best[1], per_attacker)


def pooled_over_attackers(rows: pd.DataFrame, pool: list[Attacker], metric: str) -> Estimate:
    """The mean over the pool's attackers, per image, of each attacker's per-image mean; clustered by image.

    An attacker's settings and seeds are repeated measurements of one image, never pooled
    as independent draws (reports.stats): each image is one sample, each attacker weighs the same.
    """
    strength = rows[(rows["pair"] == STRENGTH_PAIR) & (rows["metric"] == metric)]
    return mean_over_groups([estimate(attacker_rows(strength, attacker), STRENGTH_PAIR, metric) for attacker in pool])


#: How a cell abbreviates its interval's method (reports/stats.py names them).
INTERVAL_TAGS = {stats.STUDENT_T: "t", stats.CLUSTER_BOOTSTRAP: "CB"}


def cell(found: Estimate, metric: str, *, extra: str = "") -> dict[str, Any]:
    """Display form of an estimate: mean, interval and n, and a tooltip saying what they are."""
    if found.n == 0:
        return {"text": "—", "ci": "", "n_text": "", "title": "no ok rows", "css": "missing", "mark": "", "value": None}
    interval = f"{fmt.number(found.low, metric)}–{fmt.number(found.high, metric)}" if found.has_interval else ""
    title = f"mean of {found.n} per-image mean(s) over {found.rows} row(s) (images × seeds × settings)"
    title += f"; {found.method}: {interval}" if interval else "; no interval (one image, or infinite values)"
    if extra:
        title = f"{extra}; {title}"
    return {
        "text": fmt.number(found.mean, metric),
        "ci": interval,
        "n_text": f"n={found.n}",
        # The interval's method, abbreviated on the cell (the note under the table spells both out).
        "interval_tag": INTERVAL_TAGS.get(found.method, ""),
        "interval_name": found.method,
        "title": title,
        "css": "",
        "mark": "",
        "value": found.mean,
        "low": found.low if found.has_interval else None,
        "high": found.high if found.has_interval else None,
        "n": found.n,
        "rows": found.rows,
    }


def mark_column(
    cells: list[dict[str, Any]], estimates: list[Estimate], names: list[str], better_high: bool | None, skip: list[bool]
) -> None:
    """Mark the best estimate, and "≈" every other that the paired test does not separate from it.

    The test (reports.stats): exact Wilcoxon signed-rank on the per-image differences against
    the best row, two-sided, Holm-corrected over the column's comparisons, at 5 %.
    """
    if better_high is None:
        return
    candidates = [
        i
        for i, (found, skipped) in enumerate(zip(estimates, skip))
        if not skipped and found.n and math.isfinite(found.mean)
    ]
    if len(candidates) < 2:
        return
    best = max(candidates, key=lambda i: estimates[i].mean if better_high else -estimates[i].mean)
    cells[best]["css"] = (cells[best]["css"] + " best").strip()
    cells[best]["title"] += "; best in this column"
    cells[best]["best"] = True
    others = [i for i in candidates if i != best]
    for index, comparison in zip(others, stats.compare_to_best([estimates[i] for i in others], estimates[best])):
        cells[index]["p_holm"] = comparison.adjusted
        verdict = (
            f"paired test against the best ({names[best]}) on {comparison.images} shared image(s): "
            f"p = {comparison.p_value:.3g}, Holm-adjusted {comparison.adjusted:.3g}"
        )
        if comparison.separated:
            cells[index]["title"] += f"; separated from the best: {verdict}"
        else:
            cells[index]["mark"] = "≈"
            cells[index]["title"] += f"; not separated from the best: {verdict}"


def memory_metrics(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """``(metric, label)`` of the memory figures that differ between protections, as measured in this run."""
    cost = _ok(rows[rows["pair"] == Pair.COST.value])
    cuda = cost[cost["metric"] == CUDA_PEAK_METRIC]
    if (cuda["value"] > 0).any():
        return [(CUDA_PEAK_METRIC, "CUDA peak")]
    chosen = []
    for candidates, label in ((SAVED_PER_STEP_METRICS, "saved / step"), (WORKING_MEMORY_METRICS, "working memory")):
        metric = next((m for m in candidates if (cost["metric"] == m).any()), None)
        if metric:
            chosen.append((metric, label))
    return chosen


def cost_cells(rows: pd.DataFrame, memory: list[tuple[str, str]]) -> dict[str, Any]:
    """Protect time per image (mean over protect cells) and the largest of each memory figure."""
    cost = _ok(rows[(rows["pair"] == Pair.COST.value) & (rows["attack"] == "")])
    wall = cost[cost["metric"] == "wall_s"]["value"]
    time_cell = (
        {"text": fmt.seconds(float(wall.mean())), "title": f"mean over {len(wall)} protect cell(s)"}
        if not wall.empty
        else {"text": "—", "title": "no timing rows"}
    )
    memory_cells, memory_values = [], []
    for metric, label in memory:
        values = cost[cost["metric"] == metric]["value"]
        memory_values.append(float(values.max()) if not values.empty else None)
        memory_cells.append(
            {"text": fmt.nbytes(float(values.max())), "title": f"{label}: largest of {len(values)} cell(s)"}
            if not values.empty
            else {"text": "—", "title": f"no {label} rows"}
        )
    return {
        "time": time_cell,
        "memory": memory_cells,
        "time_s": float(wall.mean()) if not wall.empty else None,
        "memory_bytes": memory_values,
    }


#: How each kind of protection is computed, for the cost axis (from its family, protections/base.py).
KINDS = {
    "baseline": "baseline (no optimisation)",
    "per-image": "per-image optimisation (PGD steps on every picture)",
    "amortized": "amortized (a generator trained once, one forward pass per picture)",
}


def protection_kind(name: str) -> str:
    """``amortized``, ``baseline`` or ``per-image``: what a protection pays per picture."""
    if name not in PROTECTIONS.names():  # a run folder may name a protection this install lacks
        return "per-image"
    family = PROTECTIONS.get(name).family
    return family if family in ("baseline", "amortized") else "per-image"


def cost_axis(entries: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """The trade-off of strength against protect time per image, per-image and amortized side by side.

    ``points``: one per non-reference row with both a time and a worst case, cheapest first;
    ``summary``: for each amortized row, its time and worst case beside the strongest per-image
    row's (the one ranked first), with the time ratio.
    """
    points = [
        {
            "name": e["name"],
            "protection": e["protection"],
            "kind": e["kind"],
            "color": e["color"],
            "time_s": e["time_s"],
            "worst": e["worst"].get("value"),
            "low": e["worst"].get("low"),
            "high": e["worst"].get("high"),
        }
        for e in entries
        if not e["is_reference"] and e.get("time_s") and e["worst"].get("value") is not None
    ]
    points.sort(key=lambda p: p["time_s"])
    per_image = [e for e in entries if e["kind"] == "per-image" and e["worst"].get("value") is not None]
    amortized = [e for e in entries if e["kind"] == "amortized" and e["worst"].get("value") is not None]
    sentences = []
    if per_image and amortized and label:
        strongest = per_image[0]  # entries are ranked: the first per-image row is the strongest
        for entry in amortized:
            if not entry.get("time_s") or not strongest.get("time_s"):
                continue
            ratio = strongest["time_s"] / entry["time_s"]
            sentences.append(
                f"{entry['name']} protects in {fmt.seconds(entry['time_s'])} per image, "
                f"{ratio:,.0f}× less time than {strongest['name']} ({fmt.seconds(strongest['time_s'])}); "
                f"worst-case {label} {entry['worst']['text']} against {strongest['worst']['text']}."
            )
    return {"points": points, "summary": " ".join(sentences), "kinds": KINDS}


#: More attackers than this and the leaderboard shows one column per attack label (its strongest setting).
MAX_ATTACKER_COLUMNS = 6


def attack_column_groups(chosen: list[Attacker]) -> list[tuple[str, list[Attacker]]]:
    """The leaderboard's strength columns: one per attacker, or one per attack label when there are many.

    With a label's several settings in one column, the cell is the worst case over them and
    names the setting, so the table stays readable without hiding the strongest attacker.
    """
    if len(chosen) <= MAX_ATTACKER_COLUMNS:
        return [(attacker.name, [attacker]) for attacker in chosen]
    groups: dict[str, list[Attacker]] = {}
    for attacker in chosen:
        groups.setdefault(attacker.label, []).append(attacker)
    return [(label if len(group) == 1 else f"{label} (strongest setting)", group) for label, group in groups.items()]


def leaderboard(run: Run, pool: list[str] | None = None) -> dict[str, Any]:
    """Everything the leaderboard, category table and transfer matrix show, as plain data."""
    rows = run.rows
    chosen = attackers(run, pool)
    strength_metrics = pick_metrics(rows, STRENGTH_PAIR, STRENGTH_PREFERENCE, 1)
    impercept_metrics = pick_metrics(
        rows, IMPERCEPTIBILITY_PAIR, IMPERCEPTIBILITY_PREFERENCE, IMPERCEPTIBILITY_LEADER_COLUMNS
    )
    strength_metric = strength_metrics[0] if strength_metrics else None
    strength_higher = higher_is_better(rows, strength_metric) if strength_metric else None
    memory = memory_metrics(rows)
    eps = _plan_eps(run)
    attack_columns = attack_column_groups(chosen)
    entries, estimates = [], {"impercept": [], "attacks": [], "mean": [], "worst": []}
    interval_example = ""
    for budget in budgets(run):
        mine = budget_rows(rows, budget)
        reference = budget.protection == NO_PROTECTION
        entry: dict[str, Any] = {
            "protection": budget.protection,
            "setting": budget.setting or eps.get(budget.protection, ""),
            "name": budget.name,
            "is_reference": reference,
            "color": palette.method_color(budget.protection),  # the same colour as in every figure
            "kind": protection_kind(budget.protection),
            "n_images": len({i for i in mine[mine["pair"] == IMPERCEPTIBILITY_PAIR]["image"] if i}),
        }
        impercept = [estimate(mine, IMPERCEPTIBILITY_PAIR, m) for m in impercept_metrics]
        entry["impercept"] = [cell(e, m) for e, m in zip(impercept, impercept_metrics)]
        estimates["impercept"].append(impercept)
        per_attack, mean, worst = [], EMPTY, None
        if strength_metric:
            strength = mine[(mine["pair"] == STRENGTH_PAIR) & (mine["metric"] == strength_metric)]
            per_attack, column_attackers = [], []
            for _label, group in attack_columns:
                if len(group) == 1:
                    per_attack.append(estimate(attacker_rows(strength, group[0]), STRENGTH_PAIR, strength_metric))
                    column_attackers.append("")
                else:  # a label's strongest setting, named in the cell
                    found = worst_case(strength, group, strength_metric, strength_higher)
                    per_attack.append(found.estimate)
                    column_attackers.append(found.attacker.name if found.attacker else "")
            mean = pooled_over_attackers(mine, chosen, strength_metric)
            worst = worst_case(mine, chosen, strength_metric, strength_higher)
            if worst.attacker is not None and not reference and not interval_example:
                interval_example = _interval_example(budget, worst, attacker_rows(strength, worst.attacker))
        entry["attacks"] = [cell(e, strength_metric or "") for e in per_attack]
        for found, name in zip(entry["attacks"], column_attackers if strength_metric else []):
            if name:
                found.update(attacker=name, title=f"strongest setting: {name}; {found['title']}")
        entry["mean"] = cell(mean, strength_metric or "", extra="pooled over the attacker pool")
        if worst is not None and worst.attacker is not None:
            entry["worst"] = cell(
                worst.estimate, strength_metric or "", extra=f"strongest attacker: {worst.attacker.name}"
            )
            entry["worst"]["attacker"] = worst.attacker.name
        else:
            entry["worst"] = dict(cell(EMPTY, ""), attacker="")
        if reference and all(e.n == 0 for e in per_attack):  # none: the attack on clean is the reference
            for part in [*entry["attacks"], entry["mean"], entry["worst"]]:
                part.update(
                    text="reference",
                    css="reference",
                    title="the attack on clean images: what the others are compared with",
                )
        estimates["attacks"].append(per_attack)
        estimates["mean"].append(mean)
        estimates["worst"].append(worst.estimate if worst is not None else EMPTY)
        entry.update(cost_cells(mine, memory))
        entries.append(entry)

    names = [e["name"] for e in entries]
    skip = [e["is_reference"] for e in entries]
    impercept_columns = []
    for index, metric in enumerate(impercept_metrics):
        higher = higher_is_better(rows, metric)
        mark_column(
            [e["impercept"][index] for e in entries],
            [found[index] for found in estimates["impercept"]],
            names,
            higher,
            skip,
        )
        impercept_columns.append(
            {
                "metric": metric,
                "label": fmt.metric_label(metric, _unit(rows, metric)),
                "direction": "" if higher is None else ("↑ more natural" if higher else "↓ more natural"),
            }
        )
    stronger_high = None if strength_higher is None else not strength_higher
    for index in range(len(attack_columns)):
        mark_column(
            [e["attacks"][index] for e in entries],
            [found[index] for found in estimates["attacks"]],
            names,
            stronger_high,
            skip,
        )
    mark_column([e["mean"] for e in entries], estimates["mean"], names, stronger_high, skip)
    mark_column([e["worst"] for e in entries], estimates["worst"], names, stronger_high, skip)
    strength_direction = "" if strength_higher is None else ("↓ stronger" if strength_higher else "↑ stronger")
    strength_label = fmt.metric_label(strength_metric, _unit(rows, strength_metric)) if strength_metric else ""
    entries = rank(entries, strength_higher)
    protect_models = sorted(set(rows["protect_model"]) - {""})
    attack_models = sorted(set(rows[rows["attack"] != ""]["attack_model"]) - {""})
    return {
        "rows": entries,
        "attackers": [a.name for a in chosen],
        "attack_columns": [name for name, _ in attack_columns],
        "pool_given": bool(pool),
        "strength_metric": strength_metric or "",
        "strength_label": strength_label,
        "sort": _sort_text(strength_label, strength_higher) if strength_metric else "",
        "headline": headline(entries, strength_label),
        "cost_axis": cost_axis(entries, strength_label),
        "strength_direction": strength_direction,
        "impercept_columns": impercept_columns,
        "memory_labels": [label for _, label in memory],
        "memory_note": _memory_note(rows, memory),
        "interval_method": stats.INTERVAL_METHOD,
        "test_method": stats.TEST_METHOD,
        "interval_example": interval_example,
        "models": {"protect": protect_models, "attack": attack_models},
        "pooled_models": len(protect_models) > 1 or len(attack_models) > 1,
        "categories": categories(run, chosen, strength_metric, strength_higher),
        "transfer": transfer(run, chosen, strength_metric, strength_higher),
        "adaptive": adaptive_worst_cases(run, chosen, strength_metric, strength_higher),
    }


def rank(entries: list[dict[str, Any]], strength_higher: bool | None) -> list[dict[str, Any]]:
    """The reference first, then by worst-case strength, strongest first; rows without one last, in plan order.

    Strongest = the lowest worst-case similarity (or the highest distance): the protection
    that holds best against the attacker it stops least. Each row gets its ``rank``.
    """
    reference = [e for e in entries if e["is_reference"]]
    scored = [e for e in entries if not e["is_reference"] and e["worst"].get("value") is not None]
    unscored = [e for e in entries if not e["is_reference"] and e["worst"].get("value") is None]
    if strength_higher is not None:
        sign = 1.0 if strength_higher else -1.0  # similarity: lower is stronger
        scored.sort(key=lambda e: sign * e["worst"]["value"])
    ordered = reference + scored + unscored
    for position, entry in enumerate(ordered):
        entry["rank"] = "" if entry["is_reference"] else position + 1 - len(reference)
    return ordered


def _sort_text(label: str, strength_higher: bool | None) -> str:
    if strength_higher is None:
        return "in plan order (the strength metric has no direction)"
    side = "lowest" if strength_higher else "highest"
    return f"ranked by worst-case {label}, strongest first ({side} {label} against the attacker each stops least)"


def headline(entries: list[dict[str, Any]], label: str) -> str:
    """One sentence: who holds best against the strongest attacker, by how much, at what cost."""
    ranked = [e for e in entries if not e["is_reference"] and e["worst"].get("value") is not None]
    if not ranked or not label:
        return ""
    best, worst = ranked[0], ranked[0]["worst"]
    interval = f", interval {worst['ci']}" if worst.get("ci") else ""
    tied = [e["name"] for e in ranked[1:] if e["worst"].get("mark") == "≈"]
    cost = f", at {fmt.seconds(best['time_s'])} per image" if best.get("time_s") is not None else ""
    text = (
        f"Against the strongest attacker in this run, {best['name']} holds best: worst-case {label} "
        f"{worst['text']} ({worst.get('attacker') or '?'}{interval}, n = {worst.get('n')} images){cost}."
    )
    if tied:
        text += f" Not separated from it on these images: {', '.join(tied)}."
    return text


def _interval_example(budget: Budget, worst: WorstCase, rows: pd.DataFrame) -> str:
    """One sentence setting a cell's interval over images beside the bootstrap of the same rows as independent draws."""
    found = worst.estimate
    metric = str(rows["metric"].iloc[0]) if not rows.empty else ""
    naive = naive_estimate(rows, STRENGTH_PAIR, metric)
    if not (found.has_interval and naive.has_interval and found.high > found.low):
        return ""

    def span(e: Estimate) -> str:
        return f"{fmt.number(e.low, metric)}–{fmt.number(e.high, metric)}"

    text = (
        f"For example, {budget.name}'s worst case ({worst.attacker.name}): {span(found)} with n = {found.n} "
        f"images ({found.method}); bootstrapping its {naive.n} image × seed rows as independent draws would give {span(naive)} "
        f"({(naive.high - naive.low) / (found.high - found.low):.0%} of the width)."
    )
    if found.method == stats.STUDENT_T:
        text += (
            f" Below {stats.STUDENT_T_BELOW} images the interval is Student's t on the per-image means: a bootstrap "
            "over so few images could not leave their range and would claim more than they hold."
        )
    return text


def _unit(rows: pd.DataFrame, metric: str) -> str:
    units = [u for u in rows[rows["metric"] == metric]["unit"] if u]
    return units[0] if units else ""


def _memory_note(rows: pd.DataFrame, memory: list[tuple[str, str]]) -> str:
    if memory and memory[0][0] == CUDA_PEAK_METRIC:
        return "Memory: the CUDA peak allocated during the protect cell."
    if memory:
        return (
            "Memory on CPU: the bytes saved for backward per step and the cell's working memory above its "
            "starting RSS (the largest over cells); the process's lifetime peak RSS is not shown, as it is "
            "the same for every protection."
        )
    if (rows["metric"] == "peak_rss_bytes").any():
        return (
            "Memory: this run recorded only the process's lifetime peak RSS, which is the same for every "
            "protection (the weights dominate it), so no memory column is shown; rerun to measure the "
            "per-cell figures."
        )
    return "Memory: no memory rows in this run."


def categories(run: Run, pool: list[Attacker], metric: str | None, higher: bool | None) -> dict[str, Any] | None:
    """Worst-case strength per protection budget and image category, when the run has categories."""
    rows = run.rows
    names = sorted(set(rows["category"]) - {""})
    if not names or metric is None:
        return None
    table = []
    for budget in budgets(run):
        if budget.protection == NO_PROTECTION:
            continue
        mine = budget_rows(rows, budget)
        cells = []
        for category in names:
            worst = worst_case(mine[mine["category"] == category], pool, metric, higher)
            found = cell(
                worst.estimate, metric, extra=f"strongest attacker: {worst.attacker.name}" if worst.attacker else ""
            )
            found["attacker"] = worst.attacker.name if worst.attacker else ""
            cells.append(found)
        table.append({"name": budget.name, "cells": cells})
    return {"names": names, "rows": table}


def transfer(run: Run, pool: list[Attacker], metric: str | None, higher: bool | None) -> dict[str, Any] | None:
    """Protect-model × attack-model matrices of worst-case strength, when the run has more than one model."""
    rows = run.rows
    protect_models = sorted(set(rows["protect_model"]) - {""})
    attack_models = sorted(set(rows[rows["attack"] != ""]["attack_model"]) - {""})
    if metric is None or len(set(protect_models) | set(attack_models)) <= 1:
        return None
    matrices = []
    for budget in budgets(run):
        if budget.protection == NO_PROTECTION:
            continue
        mine = budget_rows(rows, budget)
        grid = []
        for protect_model in protect_models:
            line = []
            for attack_model in attack_models:
                these = mine[(mine["protect_model"] == protect_model) & (mine["attack_model"] == attack_model)]
                worst = worst_case(these, pool, metric, higher)
                found = cell(
                    worst.estimate, metric, extra=f"strongest attacker: {worst.attacker.name}" if worst.attacker else ""
                )
                found["attacker"] = worst.attacker.name if worst.attacker else ""
                line.append(found)
            grid.append({"model": protect_model, "cells": line})
        matrices.append({"name": budget.name, "rows": grid})
    return {"protect_models": protect_models, "attack_models": attack_models, "matrices": matrices}


#: The control protection whose adaptive worst case a protection must beat (random noise, same budget).
NOISE_CONTROL = "noise"


def attacker_is_adaptive(attacker: Attacker) -> bool:
    """Whether any stage of the attacker's chain declares ``adaptive`` (an unregistered name: no)."""
    from cloakbench.mimicry import MIMICRY

    parts = [p for p in attacker.purification.split("+") if p] + [attacker.mimicry]
    return any(part in MIMICRY and MIMICRY.get(part).adaptive for part in parts)


def adaptive_worst_cases(
    run: Run, pool: list[Attacker], metric: str | None, higher: bool | None
) -> dict[str, Any] | None:
    """Per protection budget, the worst case over the non-adaptive and over the adaptive attackers.

    RobustBench's lesson (Croce et al., arXiv 2010.09670): a defence is as good as the strongest
    *adaptive* attack on it. An attacker is adaptive when a stage of its chain declares so
    (``Mimicry.adaptive``: ``encoder-harden``, ``counter-pgd``). A protection is flagged when its
    adaptive worst case is weaker than random noise's (``noise``, the same pool): against that
    copier it protects no better than noise does. ``None`` when the run has no adaptive attacker.
    """
    adaptive = [a for a in pool if attacker_is_adaptive(a)]
    if metric is None or not adaptive:
        return None
    fixed = [a for a in pool if a not in adaptive]
    rows = run.rows
    noise = None
    if NOISE_CONTROL in run.protections():
        noise_rows = rows[rows["protection"] == NOISE_CONTROL]
        noise = worst_case(noise_rows, adaptive, metric, higher).estimate
    table = []
    for budget in budgets(run):
        if budget.protection == NO_PROTECTION:
            continue
        mine = budget_rows(rows, budget)
        cells = []
        for group in (fixed, adaptive):
            worst = worst_case(mine, group, metric, higher)
            found = cell(
                worst.estimate, metric, extra=f"strongest attacker: {worst.attacker.name}" if worst.attacker else ""
            )
            found["attacker"] = worst.attacker.name if worst.attacker else ""
            cells.append(found)
        adaptive_worst = worst_case(mine, adaptive, metric, higher).estimate
        below = (
            budget.protection != NOISE_CONTROL
            and noise is not None
            and adaptive_worst.n > 0
            and noise.n > 0
            and higher is not None
            # weaker protection = the attacker's output closer to its output on the clean image
            and (adaptive_worst.mean > noise.mean if higher else adaptive_worst.mean < noise.mean)
        )
        separated = below and not adaptive_worst.overlaps(noise)
        table.append({"name": budget.name, "cells": cells, "below_noise": bool(below), "separated": bool(separated)})
    return {
        "adaptive": [a.name for a in adaptive],
        "non_adaptive": [a.name for a in fixed],
        "noise": cell(noise, metric) if noise is not None else None,
        "rows": table,
    }
