"""The summary, the leaderboard, the plots and rows.csv agree (#27, "Correct aggregates").

Each figure is derived here from ``rows.csv`` alone (Python's csv module and plain arithmetic,
not the report's reader), then compared with what each part of the report shows. The runs
have two seeds, so an aggregate that divides a sum by the images instead of the cells is off
by two (the bug #27 found: the summary said 768 ms where the leaderboard said 384 ms).
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cloakbench.reports import format as fmt
from cloakbench.reports.leaderboard import leaderboard
from cloakbench.reports.plots import cost_bars, setting_curves
from cloakbench.reports.run import load_run
from cloakbench.reports.tables import summary
from tests.test_report_leaderboard import write_sweep_run


def read(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "rows.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def name(protection: str, budget: str) -> str:
    """A leaderboard row's name: the protection, and its budget when swept."""
    return f"{protection} ({budget})" if budget else protection


def attack(row: dict[str, str]) -> str:
    return "+".join(part for part in (row["purification"], row["mimicry"]) if part)


def protect_times(rows, key) -> dict:
    """Mean ``wall_s`` over protect cells (one cell = one image × seed), grouped by ``key(row)``."""
    found = defaultdict(list)
    for row in rows:
        if row["pair"] == "cost" and row["metric"] == "wall_s" and not attack(row):
            found[key(row)].append(float(row["value"]))
    return {group: statistics.mean(values) for group, values in found.items()}


def strength_rows(rows, metric: str) -> list[dict[str, str]]:
    return [r for r in rows if r["pair"] == "attack_vs_clean_attack" and r["metric"] == metric and r["status"] == "ok"]


def strength_means(rows, metric: str) -> dict:
    """Mean strength per (leaderboard row name, attack, setting)."""
    found = defaultdict(list)
    for row in strength_rows(rows, metric):
        found[(name(row["protection"], row["protection_setting"]), attack(row), row["setting"])].append(
            float(row["value"])
        )
    return {key: statistics.mean(values) for key, values in found.items()}


def check_agreement(run_dir: Path) -> None:
    rows = read(run_dir)
    assert len({row["run_seed"] for row in rows if row["run_seed"]}) == 2  # the case that went wrong
    run = load_run(run_dir)
    table, board = summary(run), leaderboard(run)
    groups = {group["protection"]: group for group in table["groups"]}
    # Protect time per image: the per-cell mean, in the leaderboard and in the summary.
    times = protect_times(rows, lambda row: name(row["protection"], row["protection_setting"]))
    assert times
    for entry in board["rows"]:
        if entry["name"] in times:
            assert entry["time_s"] == pytest.approx(times[entry["name"]])
            assert groups[entry["name"]]["time"]["text"] == fmt.seconds(times[entry["name"]])
    # The cost figure pools a protection's budgets: the mean over all its protect cells.
    pooled = protect_times(rows, lambda row: row["protection"])
    axes = cost_bars(run).figure.axes[0]
    bars = {tick.get_text(): patch.get_width() for tick, patch in zip(axes.get_yticklabels(), axes.patches)}
    assert bars == pytest.approx({protection: pooled[protection] for protection in bars})
    # Strength: the summary's line per attack setting and the leaderboard's column per attacker.
    metric = board["strength_metric"]
    means = strength_means(rows, metric)
    column = [c["metric"] for c in table["strength_columns"]].index(metric)
    checked = 0
    for group in table["groups"]:
        for line in group["attacks"]:
            if line is not None and (group["protection"], line["attack"], line["setting"]) in means:
                expected = means[(group["protection"], line["attack"], line["setting"])]
                assert line["strength"][column]["text"] == fmt.number(expected, metric)
                checked += 1
    for entry in board["rows"]:
        for column_name, found in zip(board["attack_columns"], entry["attacks"]):
            label, _, setting = column_name.partition("@")
            if (entry["name"], label, setting) in means:
                assert found["value"] == pytest.approx(means[(entry["name"], label, setting)])
                checked += 1
    assert checked
    # The per-setting curves: the mean over the rows at each setting.
    curves = setting_curves(run)
    for axes in curves.figure.axes if curves is not None else []:
        for line in axes.get_lines():
            for x, y in zip(line.get_xdata(), line.get_ydata()):
                values = [
                    float(r["value"])
                    for r in strength_rows(rows, metric)
                    if r["protection"] == line.get_label()
                    and attack(r) == axes.get_title()
                    and float(r["setting"]) == x
                ]
                assert y == pytest.approx(np.mean(values))


def test_summary_leaderboard_plots_and_rows_agree_on_a_two_seed_run(tmp_path):
    check_agreement(write_sweep_run(tmp_path / "run"))


@pytest.mark.slow  # a real compare run on the seeded tiny model, two seeds: ~30 s on an idle 2-core CPU
def test_a_real_two_seed_run_agrees(tmp_path):
    from PIL import Image

    from cloakbench.bench.cli.app import app

    folder = tmp_path / "images"
    folder.mkdir()
    yy, xx = np.mgrid[0:64, 0:64] / 64
    for index in range(2):
        pixels = np.stack([xx, yy, 0.5 + 0.4 * np.sin((6 + index) * xx)], -1)
        Image.fromarray(np.clip(np.round(255 * pixels), 0, 255).astype(np.uint8)).save(folder / f"g{index}.png")
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--images",
            str(folder),
            "--model",
            "tiny-random",
            "--quick",
            "--methods",
            "noise,sds-",
            "--attacks",
            "sdedit",
            "--metrics",
            "psnr,ssim",
            "--seeds",
            "0,1",
            "--threads",
            "1",
            "--no-report",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    check_agreement(tmp_path / "run")
    # bench compare ends with the leaderboard as a terminal table, ranked, with the headline.
    output = " ".join(result.output.split())
    assert "Leaderboard" in output and "smoke test" in output and "holds best" in output and "worst case" in output
