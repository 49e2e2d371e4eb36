"""Issue #30, bad input round three, reports and merges: a hand-edited value that is not a number, two
runs of one model name with different weights, a run interrupted before its rows.csv. Each case makes
its run folders and checks the sentence, the exit status and what is kept (docs/RELIABILITY.md)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.reports.merge import merge_runs
from tests.test_robustness_round3 import assert_refused, picture


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def small_run(tmp_path, out, *extra):
    images = tmp_path / "pics"
    if not images.exists():
        picture(images / "a.png", size=(48, 48))
    result = run("compare", "--model", "tiny-random", "--quick", "--methods", "none,noise", "--attacks",
                 "identity", "--metrics", "psnr", "--out", out, "--images", images, "--threads", 1,
                 "--no-report", *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("round3_reports")
    return small_run(tmp_path, tmp_path / "run")


def test_a_value_that_is_not_a_number_names_its_line_and_is_refused(finished, tmp_path):
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(finished, edited)
    lines = (edited / "rows.csv").read_text().splitlines()
    header = lines[0].split(",")
    value_at = header.index("value")
    target = next(i for i, line in enumerate(lines[1:], start=2) if line.split(",")[value_at] not in ("", "inf"))
    fields = lines[target - 1].split(",")
    fields[value_at] = '"12,5 dB"'
    lines[target - 1] = ",".join(fields)
    (edited / "rows.csv").write_text("\n".join(lines) + "\n")
    before = (edited / "rows.csv").read_text()
    result = run("report", edited)
    assert_refused(result, f"rows.csv, line {target}", "value '12,5 dB' is not a number", "e.g. 12.5")
    assert (edited / "rows.csv").read_text() == before  # nothing rewritten


def test_a_run_interrupted_before_rows_csv_says_rerun_the_command(finished, tmp_path):
    import shutil

    interrupted = tmp_path / "interrupted"
    shutil.copytree(finished, interrupted)
    (interrupted / "rows.csv").unlink()  # killed after its cells finished, before rows.csv was written
    command = json.loads((interrupted / "manifest.json").read_text())["command"]  # (pytest's argv here)
    import sqlite3

    with sqlite3.connect(interrupted / "journal.sqlite") as db:
        done = db.execute("SELECT COUNT(*) FROM cells WHERE state = 'done'").fetchone()[0]
    assert done >= 2
    result = run("report", interrupted)
    assert_refused(
        result,
        "holds an interrupted run",
        f"journal holds {done} finished cell(s)",
        f"rerun `{command}`",
        "to resume it",
    )
    assert "rows.csv is missing" not in result.output


def test_two_weight_seeds_of_one_model_name_are_two_models_in_a_merge(tmp_path):
    first = small_run(tmp_path, tmp_path / "seed0", "--seed", 0)
    second = small_run(tmp_path, tmp_path / "seed1", "--seed", 1)
    hashes = [json.loads((f / "manifest.json").read_text())["model"]["weights_hash"] for f in (first, second)]
    assert hashes[0] != hashes[1]  # the toy's random weights follow the seed
    merged = merge_runs([first, second], tmp_path / "merged")
    labels = sorted(set(merged.rows["protect_model"]))
    assert labels == sorted(f"tiny-random@{h[:12]}" for h in hashes)
    manifest = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    assert sorted(m["weights_hash"] for m in manifest["models"]) == sorted(hashes)
    report = run("report", tmp_path / "merged")
    assert report.exit_code == 0, report.output
    html = (tmp_path / "merged" / "report.html").read_text()
    assert all(h[:16] in html for h in hashes)


def test_one_model_with_the_same_weights_keeps_its_name_in_a_merge(finished, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    merged = merge_runs([finished, copy], tmp_path / "merged")
    assert set(merged.rows["protect_model"]) == {"tiny-random"}
