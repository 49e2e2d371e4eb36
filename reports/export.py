"""``bench plot``: every figure of the report as a standalone file, every table as CSV and LaTeX.

Figures are the report's own (reports.plots), saved with matplotlib in each requested
format: PDF and SVG are vector (the comparison figures embed their images as rasters inside
the vector page), PNG at twice the report's resolution. Tables are built from the same data
as the report's (reports.leaderboard, reports.tables) with plain numbers, intervals as their
own columns, so a paper's table is one ``\\input`` away (``DataFrame.to_latex``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

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
    return {prefix: _value(cell), f"{prefix} low": cell.get("low"), f"{prefix} high": cell.get("high")}


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


def _write_table(frame: pd.DataFrame, folder: Path, name: str, caption: str) -> list[Path]:
    csv_path, tex_path = folder / f"{name}.csv", folder / f"{name}.tex"
    frame.to_csv(csv_path, index=False)
    latex = frame.to_latex(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="--", caption=caption, label=f"tab:{name}", escape=True
    )
    tex_path.write_text(latex, encoding="utf-8")
    return [csv_path, tex_path]


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
    tables = _write_table(
        leaderboard_frame(board),
        folder,
        "leaderboard",
        "Leaderboard: means of per-image means and 95\\% cluster-bootstrap intervals over images",
    )
    tables += _write_table(summary_frame(summary(run, pool)), folder, "summary", "Protection strength per attack")
    for name, frame, caption in (
        ("categories", categories_frame(board), "Worst case per image category"),
        ("transfer", transfer_frame(board), "Worst case per protect and attack model"),
    ):
        if frame is not None:
            tables += _write_table(frame, folder, name, caption)
    logger.info("wrote %d figure file(s) and %d table file(s) to %s", len(figures), len(tables), folder)
    return Exported(figures, tables, missing)
