"""``bench plot``: every figure of the report as a standalone file, every table as CSV and LaTeX.

Figures are the report's own (reports.plots), saved with matplotlib in each requested
format: PDF and SVG are vector (the comparison figures embed their images as rasters inside
the vector page; PDF fonts are TrueType, Type 42), PNG at twice the report's resolution.
Tables are built from the same data as the report's (reports.leaderboard, reports.tables).
The CSV files hold plain numbers, intervals and n as their own columns (for scripts); the
leaderboard's LaTeX is the paper's table (:func:`leaderboard_latex`): booktabs rules, each
cell the mean with its interval as ``$m^{+a}_{-b}$`` (``$m \\pm a$`` when symmetric at the
printed precision) in one column, the best of each column bold, ≈ where the paired test does
not separate a row from the best, units in the headers (dB, s, MiB). It needs
``\\usepackage{booktabs}``. The other tables go through ``DataFrame.to_latex``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cloakbench.reports import format as fmt
from cloakbench.reports import stats
from cloakbench.reports.leaderboard import leaderboard
from cloakbench.reports.plots import all_plots
from cloakbench.reports.run import Run
from cloakbench.reports.tables import summary

logger = logging.getLogger(__name__)

FORMATS = ("pdf", "svg", "png")


class ExportError(ValueError):
    """A bad ``--format`` or an output folder that cannot be used."""


def parse_formats(text: str) -> list[str]:
    formats = [part.strip().lower().lstrip(".") for part in text.split(",") if part.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ExportError(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated), e.g. pdf,png")
    return list(dict.fromkeys(formats))


def _value(cell: dict[str, Any]) -> float | None:
    value = cell.get("value")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _estimate_columns(prefix: str, cell: dict[str, Any]) -> dict[str, Any]:
    return {
        prefix: _value(cell),
        f"{prefix} low": cell.get("low"),
        f"{prefix} high": cell.get("high"),
        f"{prefix} n": cell.get("n"),
        f"{prefix} ≈ best": cell.get("mark") == "≈",
    }


def leaderboard_frame(board: dict[str, Any]) -> pd.DataFrame:
    """One row per protection and budget: means, 95 % interval bounds, worst-case attacker, cost."""
    records = []
    for row in board["rows"]:
        record: dict[str, Any] = {"protection": row["protection"], "budget": row["setting"]}
        for column, found in zip(board["impercept_columns"], row["impercept"]):
            record.update(_estimate_columns(f"{column['metric']} protected vs clean", found))
        metric = board["strength_metric"]
        if metric and not row["is_reference"]:
            for name, found in zip(board["attack_columns"], row["attacks"]):
                record.update(_estimate_columns(f"{metric} {name}", found))
                if found.get("attacker"):
                    record[f"{name} setting"] = found["attacker"]
            record.update(_estimate_columns(f"{metric} mean", row["mean"]))
            record.update(_estimate_columns(f"{metric} worst case", row["worst"]))
            record["worst-case attacker"] = row["worst"].get("attacker", "")
        record["protect time per image (s)"] = row.get("time_s")
        for label, text in zip(board["memory_labels"], row["memory_bytes"]):
            record[f"{label} (bytes)"] = text
        records.append(record)
    return pd.DataFrame.from_records(records)


def summary_frame(table: dict[str, Any]) -> pd.DataFrame:
    """The report's summary: one row per protection budget and attack setting, means as shown."""
    records = []
    metrics = [c["metric"] for c in table["strength_columns"]]
    for group in table["groups"]:
        for attack in group["attacks"]:
            if attack is None:
                continue
            record = {"protection": group["protection"], "attack": attack["attack"], "setting": attack["setting"]}
            record.update({metric: cell["text"] for metric, cell in zip(metrics, attack["strength"])})
            records.append(record)
        for label, cells in (
            ("mean over attackers", group["mean_over_attackers"]),
            ("worst case", group["worst_case"]),
        ):
            if cells:
                record = {"protection": group["protection"], "attack": label, "setting": ""}
                record.update({metric: cell["text"] for metric, cell in zip(metrics, cells)})
                records.append(record)
    return pd.DataFrame.from_records(records)


def categories_frame(board: dict[str, Any]) -> pd.DataFrame | None:
    table = board.get("categories")
    if not table:
        return None
    records = []
    for row in table["rows"]:
        for category, found in zip(table["names"], row["cells"]):
            records.append(
                {
                    "protection": row["name"],
                    "category": category,
                    **_estimate_columns(f"{board['strength_metric']} worst case", found),
                    "attacker": found.get("attacker", ""),
                }
            )
    return pd.DataFrame.from_records(records)


def transfer_frame(board: dict[str, Any]) -> pd.DataFrame | None:
    table = board.get("transfer")
    if not table:
        return None
    records = []
    for matrix in table["matrices"]:
        for row in matrix["rows"]:
            for attack_model, found in zip(table["attack_models"], row["cells"]):
                records.append(
                    {
                        "protection": matrix["name"],
                        "protect model": row["model"],
                        "attack model": attack_model,
                        **_estimate_columns(f"{board['strength_metric']} worst case", found),
                        "attacker": found.get("attacker", ""),
                    }
                )
    return pd.DataFrame.from_records(records)


def _write_table(frame: pd.DataFrame, folder: Path, name: str, caption: str, latex: str | None = None) -> list[Path]:
    """``name.csv`` and ``name.tex`` (``latex`` when given, else pandas' booktabs ``to_latex``)."""
    csv_path, tex_path = folder / f"{name}.csv", folder / f"{name}.tex"
    frame.to_csv(csv_path, index=False)
    if latex is not None:
        tex_path.write_text(latex, encoding="utf-8")
        return [csv_path, tex_path]
    latex = frame.to_latex(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="--", caption=caption, label=f"tab:{name}", escape=True
    )
    tex_path.write_text(latex, encoding="utf-8")
    return [csv_path, tex_path]


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_text(text: str) -> str:
    """Plain text made safe for LaTeX (names like ``sds-``, ``jpeg+sdedit@0.5``, ``eps=8``)."""
    escaped = "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))
    return escaped.replace("≈", r"$\approx$").replace("∞", r"$\infty$").replace("−", "-").replace("→", r"$\to$")


def _math_number(value: float, metric: str) -> str:
    if math.isinf(value):
        return r"\infty" if value > 0 else r"-\infty"
    return fmt.number(value, metric).replace("−", "-")


def latex_estimate(cell: dict[str, Any], metric: str) -> str:
    """``$m^{+a}_{-b}$`` (``$m \\pm a$`` when symmetric as printed), bold when best, ``≈`` when not separated."""
    value = _value(cell)
    if value is None:
        return "--"
    mean = _math_number(value, metric)
    if cell.get("best"):
        mean = rf"\mathbf{{{mean}}}"
    low, high = cell.get("low"), cell.get("high")
    if low is not None and high is not None and math.isfinite(value):
        plus, minus = _math_number(high - value, metric), _math_number(value - low, metric)
        text = rf"{mean} \pm {plus}" if plus == minus else rf"{mean}^{{+{plus}}}_{{-{minus}}}"
    else:
        text = mean
    mark = r"\,\approx" if cell.get("mark") == "≈" else ""
    return f"${text}{mark}$"


def _arrow(direction: str) -> str:
    return r" $\uparrow$" if direction.startswith("↑") else (r" $\downarrow$" if direction.startswith("↓") else "")


def leaderboard_latex(board: dict[str, Any], caption: str) -> str:
    """The leaderboard as a booktabs table: mean and interval in one column, best bold, ≈, units."""
    metric = board["strength_metric"]
    impercept = board["impercept_columns"]
    attacks = board["attack_columns"] if metric else []
    strength_names = [*attacks, "mean", "worst case"] if metric else []
    memory = board["memory_labels"]
    header_groups = [("", 2)]
    if impercept:
        header_groups.append((r"imperceptibility", len(impercept)))
    if metric:
        strength_title = f"strength: {latex_text(board['strength_label'])}{_arrow(board['strength_direction'])}"
        header_groups.append((strength_title, len(strength_names)))
        header_groups.append(("", 1))  # the worst-case attacker
    header_groups.append(("cost", 1 + len(memory)))
    names = ["protection", "budget"]
    names += [latex_text(c["label"]) + _arrow(c["direction"]) for c in impercept]
    names += [latex_text(n) for n in strength_names]
    if metric:
        names.append("worst-case attacker")
    names += ["time / image (s)"] + [f"{latex_text(label)} (MiB)" for label in memory]
    lines = [
        r"% cloakbench leaderboard (bench plot); needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        r"\label{tab:leaderboard}",
        rf"\begin{{tabular}}{{ll{'r' * (len(names) - 2)}}}",
        r"\toprule",
    ]
    group_cells, rules, column = [], [], 1
    for title, width in header_groups:
        if title:
            group_cells.append(rf"\multicolumn{{{width}}}{{c}}{{{title}}}")  # titles are LaTeX already
            rules.append(rf"\cmidrule(lr){{{column}-{column + width - 1}}}")
        else:
            group_cells += [""] * width
        column += width
    lines.append(" & ".join(group_cells) + r" \\")
    lines.append(" ".join(rules))
    lines.append(" & ".join(names) + r" \\")
    lines.append(r"\midrule")
    for row in board["rows"]:
        cells = [latex_text(row["protection"]), latex_text(row["setting"] or "--")]
        cells += [latex_estimate(c, column["metric"]) for c, column in zip(row["impercept"], impercept)]
        if metric:
            if row["is_reference"]:
                cells += ["reference"] * len(strength_names) + ["--"]
            else:
                cells += [latex_estimate(c, metric) for c in [*row["attacks"], row["mean"], row["worst"]]]
                cells.append(latex_text(row["worst"].get("attacker", "")) or "--")
        time_s = row.get("time_s")
        cells.append(f"{time_s:.3g}" if time_s is not None else "--")
        cells += [f"{value / 2**20:.1f}" if value is not None else "--" for value in row["memory_bytes"]]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


@dataclasses.dataclass
class Exported:
    figures: list[Path]
    tables: list[Path]
    missing: list[str]


def export(run: Run, out_dir: str | Path, formats: list[str], pool: list[str] | None = None) -> Exported:
    """Write every figure in every format and every table as CSV and LaTeX into ``out_dir``."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} is a file; give --out a folder")
    folder.mkdir(parents=True, exist_ok=True)
    plots, missing = all_plots(run, pool, encode=False)
    figures = []
    for plot in plots:
        figures += plot.save(folder, formats)
    board = leaderboard(run, pool)
    n_images = max((c.get("n") or 0 for row in board["rows"] for c in row["impercept"]), default=0)
    caption = (
        f"Protections on {n_images} image(s): means of per-image means with {latex_text(stats.INTERVAL_METHOD)} "
        r"(as $m^{+a}_{-b}$). Bold: best in its column; $\approx$: not separated from the best by an "
        f"{latex_text(stats.TEST_METHOD)} at 5\\%. Strength: {latex_text(board['strength_label'])} between the "
        "attack's output on the protected and on the clean image."
    )
    tables = _write_table(leaderboard_frame(board), folder, "leaderboard", "", latex=leaderboard_latex(board, caption))
    tables += _write_table(summary_frame(summary(run, pool)), folder, "summary", "Protection strength per attack")
    for name, frame, caption in (
        ("categories", categories_frame(board), "Worst case per image category"),
        ("transfer", transfer_frame(board), "Worst case per protect and attack model"),
    ):
        if frame is not None:
            tables += _write_table(frame, folder, name, caption)
    logger.info("wrote %d figure file(s) and %d table file(s) to %s", len(figures), len(tables), folder)
    return Exported(figures, tables, missing)
