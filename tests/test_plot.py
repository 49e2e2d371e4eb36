"""``bench plot``: every report figure as a standalone file per format, every table as CSV and LaTeX."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.reports.leaderboard import leaderboard
from cloakbench.reports.run import load_run
from tests.test_report_leaderboard import write_sweep_run

FIGURES = {
    "strength_vs_imperceptibility",
    "cost_per_protection",
    "similarity_per_setting",
    "comparison_sdedit",
    "comparison_jpeg",
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    return write_sweep_run(tmp_path_factory.mktemp("plot") / "run")


def test_every_figure_in_every_format_and_tables_as_csv_and_latex(sweep_run, tmp_path):
    out = tmp_path / "figs"
    result = CliRunner().invoke(app, ["plot", str(sweep_run), "--out", str(out), "--format", "pdf,png"])
    assert result.exit_code == 0, result.output
    names = {path.name for path in out.iterdir()}
    for figure in FIGURES:
        assert {f"{figure}.pdf", f"{figure}.png"} <= names, figure
        assert (out / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
        with Image.open(out / f"{figure}.png") as image:
            image.load()
            assert image.width > 300 and image.height > 100
    # No analysis rows in this run: no amplification figure, and the command says so.
    assert not any(name.startswith("encoder_amplification") for name in names)
    assert "not drawn: Encoder amplification" in " ".join(result.output.split())
    for table in ("leaderboard", "summary", "categories", "transfer"):
        assert {f"{table}.csv", f"{table}.tex"} <= names, table
    board = leaderboard(load_run(sweep_run))
    table = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert list(zip(table["protection"], table["budget"])) == [(r["protection"], r["setting"]) for r in board["rows"]]
    worst = [r["worst"].get("value") for r in board["rows"][1:]]
    assert table["ssim worst case"][1:].astype(float).tolist() == pytest.approx(worst)
    assert table["worst-case attacker"][1:].tolist() == [r["worst"]["attacker"] for r in board["rows"][1:]]
    latex = (out / "leaderboard.tex").read_text(encoding="utf-8")
    assert "\\begin{tabular}" in latex and "\\label{tab:leaderboard}" in latex and "photoguard & eps=8" in latex
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer["attack model"]) == {"toy", "tiny-random"} and len(transfer) == 8


def test_svg_is_vector(sweep_run, tmp_path):
    result = CliRunner().invoke(app, ["plot", str(sweep_run), "--out", str(tmp_path), "--format", "svg"])
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "strength_vs_imperceptibility.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "<path" in svg and "<image" not in svg


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--format", "bmp"], "--format 'bmp': choose from pdf, svg, png"),
        (["--attacker-pool", "nope"], "'nope' is not an attack of this run"),
    ],
)
def test_bad_options_are_one_sentence(sweep_run, tmp_path, arguments, expected):
    result = CliRunner().invoke(app, ["plot", str(sweep_run), "--out", str(tmp_path / "f"), *arguments])
    assert result.exit_code == 2 and expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_output_folder_that_is_a_file_is_refused(sweep_run, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["plot", str(sweep_run), "--out", str(target)])
    assert result.exit_code == 2 and "is a file; give --out a folder" in " ".join(result.output.split())
