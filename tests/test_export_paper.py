"""Paper-ready exports (#27): booktabs LaTeX with mean and interval in one column, Type 42 PDF fonts,
one colour per protection in every run and figure, rounded settings in the run details."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from cloakbench.reports.export import export, latex_estimate
from cloakbench.reports.html import method_settings
from cloakbench.reports.palette import method_color
from cloakbench.reports.plots import cost_bars
from cloakbench.reports.run import load_run
from tests.test_report_leaderboard import write_sweep_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep_run(tmp_path_factory.mktemp("paper") / "run")


@pytest.fixture(scope="module")
def exported(sweep, tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    export(load_run(sweep), folder, ["pdf", "png"])
    return folder


def test_leaderboard_latex_is_a_paper_table(exported):
    tex = (exported / "leaderboard.tex").read_text(encoding="utf-8")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\cmidrule" in tex
    assert "e+0" not in tex  # no raw bytes
    assert r"(MiB)" in tex and r"time / image (s)" in tex and "PSNR (dB)" in tex
    assert r"\mathbf{" in tex and r"\approx" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = [line for line in body.strip().splitlines() if line.strip()]
    header = tex.split(r"\midrule")[0].strip().splitlines()[-1]
    assert all(row.count("&") == header.count("&") for row in rows)  # mean and interval share a column
    assert " low" not in header and " high" not in header
    noise = next(row for row in rows if row.startswith("noise & eps=4"))
    assert re.search(r"\$\\?(mathbf\{)?[0-9.]+\}?(\^\{\+[0-9.]+\}_\{-[0-9.]+\}| \\pm [0-9.]+)", noise)


def test_latex_cells():
    cell = {"value": 0.9123, "low": 0.9, "high": 0.94, "mark": "≈", "best": False}
    assert latex_estimate(cell, "ssim") == r"$0.912^{+0.028}_{-0.012}\,\approx$"
    symmetric = {"value": 0.5, "low": 0.4, "high": 0.6, "mark": "", "best": True}
    assert latex_estimate(symmetric, "ssim") == r"$\mathbf{0.500} \pm 0.100$"
    assert latex_estimate({"value": None}, "ssim") == "--"


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="needs pdffonts (apt-get install poppler-utils)")
def test_every_pdf_embeds_truetype_never_type3(exported):
    pdfs = sorted(exported.glob("*.pdf"))
    assert len(pdfs) >= 3
    for pdf in pdfs:
        listing = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
        fonts = listing.splitlines()[2:]
        assert fonts and all("TrueType" in line for line in fonts), (pdf.name, listing)
        assert "Type 3" not in listing


def test_a_protection_has_one_colour_in_every_run(tmp_path, sweep):
    other = write_sweep_run(tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["plan"]["protections"].reverse()  # another plan order
    (other / "manifest.json").write_text(json.dumps(manifest))
    colours = []
    for run in (load_run(sweep), load_run(other)):
        axes = cost_bars(run).figure.axes[0]
        labels = [tick.get_text() for tick in axes.get_yticklabels()]
        colours.append({label: patch.get_facecolor() for label, patch in zip(labels, axes.patches)})
    assert list(colours[0]) != list(colours[1])  # the order changed …
    assert colours[0] == colours[1]  # … the colours did not
    from matplotlib.colors import to_hex

    assert {label: to_hex(c) for label, c in colours[0].items()} == {p: method_color(p) for p in colours[0]}
    assert method_color("advdm") != method_color("photoguard") and method_color("none") == "#4d4d4d"


def test_run_details_round_settings():
    plan = {"protections": [{"name": "mist", "version": 1, "config": {"alpha": 2.5500000000000003, "steps": 3}}]}
    (row,) = method_settings(plan)
    assert row["settings"] == "alpha=2.55, steps=3"
