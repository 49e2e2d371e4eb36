"""The report's first screen (#27): ranked rows with the sort stated, a headline, the --quick banner on
the report and every figure, every seed in the run details, "showing k of n images" captions."""

from __future__ import annotations

import json

import pytest

from cloakbench.reports.grids import build_grids
from cloakbench.reports.html import manifest_view, write_report
from cloakbench.reports.leaderboard import leaderboard
from cloakbench.reports.plots import QUICK_TEXT, all_plots
from cloakbench.reports.run import load_run
from tests.test_report import parse
from tests.test_report_leaderboard import write_sweep_run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = write_sweep_run(tmp_path_factory.mktemp("first") / "run")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["settings"] = {"quick": True}
    manifest["plan"]["seeds"] = [0, 1]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def test_rows_are_ranked_by_worst_case_and_the_headline_names_the_best(quick_run):
    board = leaderboard(load_run(quick_run))
    rows = board["rows"]
    assert rows[0]["is_reference"] and rows[0]["rank"] == ""
    worst = [r["worst"]["value"] for r in rows[1:]]
    assert worst == sorted(worst)  # SSIM: lower = stronger, strongest first
    assert [r["rank"] for r in rows[1:]] == list(range(1, len(rows)))
    assert "ranked by worst-case SSIM, strongest first" in board["sort"]
    best = rows[1]
    assert board["headline"].startswith(
        f"Against the strongest attacker in this run, {best['name']} holds best: worst-case SSIM {best['worst']['text']}"
    )
    assert best["worst"]["attacker"] in board["headline"] and "per image" in board["headline"]


def test_quick_runs_are_marked_on_the_report_and_every_figure(quick_run, tmp_path):
    run = load_run(quick_run)
    plots, _ = all_plots(run, encode=False)
    assert plots and all(plot.figure._suptitle.get_text() == QUICK_TEXT for plot in plots)
    report = write_report(quick_run, out_dir=tmp_path)
    raw = report.read_text(encoding="utf-8")
    assert 'class="quick-banner"' in raw and raw.index("quick-banner") < raw.index('id="leaderboard"')
    plain = write_report(write_sweep_run(tmp_path / "plain"))
    assert 'class="quick-banner"' not in plain.read_text(encoding="utf-8")


def test_run_details_list_every_seed(quick_run):
    fields = dict(manifest_view(load_run(quick_run))["fields"])
    assert fields["seeds"] == "0, 1"


def test_image_captions_say_how_many_are_shown(quick_run, tmp_path):
    run = load_run(quick_run)
    grids, _ = build_grids(run, max_images=1)
    assert grids and all(g.images_total == 2 and len(g.rows) == 1 for g in grids)
    comparison = [p for p in all_plots(run, encode=False)[0] if p.photo]
    assert comparison and all("Showing 2 of 2 image(s)." in p.caption for p in comparison)
    text = " ".join(" ".join(parse(write_report(quick_run, out_dir=tmp_path)).text).split())
    assert "Showing 2 of 2 image(s); every image is in the run folder." in text
