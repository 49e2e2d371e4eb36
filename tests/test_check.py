"""``bench check``: the published file against its original, after platform transforms."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.check import BASELINE, platform_transforms
from cloakbench.bench.cli.app import app


def smooth(height: int, width: int) -> np.ndarray:
    coarse = (np.random.default_rng(3).random((4, 9, 3)) * 255).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def test_transforms_downscale_only_what_is_larger():
    pixels = smooth(72, 1100)
    found = {t.label: t.apply(pixels) for t in platform_transforms()}
    assert found["downscale 2048 px"] is None
    assert found["downscale 1080 px"].shape == (71, 1080, 3)
    assert np.abs(found["JPEG q75"].astype(int) - pixels).max() > 0  # re-encoding changes pixels
    assert np.array_equal(found["as published"], pixels)


def test_check_prints_the_table_and_writes_its_page(tmp_path):
    original = tmp_path / "x.png"
    Image.fromarray(smooth(72, 1100)).save(original)
    out = tmp_path / "out"
    runner = CliRunner()
    made = runner.invoke(
        app, ["protect", str(original), "--method", "noise", "--model", "tiny-random", "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    published = out / "noise" / "x.png.png"
    result = runner.invoke(
        app,
        ["check", str(published), str(original), "--model", "tiny-random", "--quick", "--metrics", "linf,psnr,ssim"],
        terminal_width=80,
    )
    assert result.exit_code == 0, result.output
    for words in ("as published", "JPEG q95", "JPEG q85", "JPEG q75", "downscale 1080", "WebP q80", "SDEdit"):
        assert words in result.output, words
    assert "downscale 2048 px: not needed" in result.output
    assert "random weights" in result.output
    assert all(len(line) <= 80 for line in result.output.splitlines()), "fits 80 columns"
    # ... whole: rich crops a table wider than the console, so every column's header must show entire.
    header = " ".join(line for line in result.output.splitlines() if "file as" in line or "PSNR" in line)
    assert header.split().count("resize") == 2 and header.split().count("inpaint") == 2, header
    folder = out / "noise" / "x.png.png.check"
    page = (folder / "check.html").read_text()
    assert "JPEG q75" in page and "random weights" in page and "data:image/webp;base64," in page
    record = json.loads((folder / "check.json").read_text())
    table = {row["file"]: row for row in record["table"]}
    # The noise protection at eps 16: the published file's measured L∞ is at most 16 and the
    # baseline's (uniform noise at that L∞) the same.
    assert 0 < table["as published"]["linf"] <= 16
    assert table[BASELINE]["linf"] == table["as published"]["linf"]
    assert 20 < table["as published"]["psnr"] < 60
    strengths = [row for row in record["rows"] if row.get("pair") == "attack_vs_clean_attack"]
    assert {row["attack"] for row in strengths} >= {"sdedit"}
    assert all(row["status"] == "ok" and 0 < row["value"] <= 1 for row in strengths if row["metric"] == "ssim")


def test_a_different_size_is_one_sentence(tmp_path):
    Image.fromarray(smooth(72, 100)).save(tmp_path / "a.png")
    Image.fromarray(smooth(64, 100)).save(tmp_path / "b.png")
    result = CliRunner().invoke(
        app, ["check", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", "tiny-random"]
    )
    assert result.exit_code == 2 and "100x72" in result.output and "100x64" in result.output
