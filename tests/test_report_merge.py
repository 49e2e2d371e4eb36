"""Merging run folders: a cell counts once, and the merged folder is itself a run folder.

The issue (#27) that this guards: ``bench report r1 r2 --out merged`` with the same cells in both
runs averaged twice the rows and narrowed every interval. A run merged with a copy of itself
must give the run's own numbers, intervals included.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cloakbench.reports.leaderboard import leaderboard
from cloakbench.reports.merge import IncomparableRuns, merge_runs
from cloakbench.reports.run import load_run
from tests.test_report import parse
from tests.test_report_leaderboard import write_sweep_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep_run(tmp_path_factory.mktemp("merge") / "run")


def _numbers(board: dict) -> list:
    """Every estimate of the leaderboard: mean, interval and n per cell."""
    found = []
    for row in board["rows"]:
        for cell in [*row["impercept"], *row["attacks"], row["mean"], row["worst"]]:
            found.append((row["name"], cell.get("value"), cell.get("low"), cell.get("high"), cell.get("n")))
    return found


def test_a_run_merged_with_a_copy_of_itself_gives_its_own_numbers(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    merged = merge_runs([sweep, copy], tmp_path / "merged")
    alone = load_run(sweep)
    assert len(merged.rows) == len(alone.rows)
    assert _numbers(leaderboard(merged)) == _numbers(leaderboard(alone))
    sources = json.loads((tmp_path / "merged" / "manifest.json").read_text())["merged_from"]
    assert [s["duplicate_cells"] for s in sources] == [0, alone.rows["cell"].nunique()]


def test_the_merged_folder_is_a_run_folder(sweep, tmp_path):
    from cloakbench.bench.cli.app import app

    other = write_sweep_run(tmp_path / "other")
    rows = other / "rows.csv"
    # A second run with new cells (another run seed) and the same images: they pool.
    text = rows.read_text(encoding="utf-8").replace(",p-", ",q-").replace(",a-", ",b-")
    rows.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(sweep), str(other), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = tmp_path / "merged"
    assert (merged / "rows.csv").is_file() and (merged / "manifest.json").is_file()
    reread = load_run(merged)
    assert len(reread.rows) == len(load_run(sweep).rows) + len(load_run(other).rows)
    # Every artifact the rows name is inside the merged folder (no reference to the source runs).
    named = set(reread.rows["artifact"]) - {""}
    assert named and all(reread.artifact_path(relative) is not None for relative in named)
    # The folder reads on its own: move the sources away, render and plot it.
    shutil.move(str(sweep), str(tmp_path / "gone"))
    try:
        again = CliRunner().invoke(app, ["report", str(merged)])
        assert again.exit_code == 0, again.output
        raw = (merged / "report.html").read_text(encoding="utf-8")
        assert "Merged runs" in raw and "no output" not in raw
        plotted = CliRunner().invoke(app, ["plot", str(merged), "--out", str(tmp_path / "figures"), "-f", "png"])
        assert plotted.exit_code == 0, plotted.output
        assert (tmp_path / "figures" / "leaderboard.csv").is_file()
    finally:
        shutil.move(str(tmp_path / "gone"), str(sweep))
    data = json.loads(parse(merged / "report.html").json_text)
    assert data["leaderboard"]["rows"]


def test_out_may_not_be_one_of_the_runs(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    with pytest.raises(IncomparableRuns, match="is one of the runs being merged"):
        merge_runs([sweep, copy], copy)
