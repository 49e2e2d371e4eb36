"""The report's encoder study (reports/encoder_study.py): amplification beside SDEdit strength, by family."""

from __future__ import annotations

import csv
import json

import pytest

from cloakbench.core.schema import COLUMNS
from cloakbench.reports.encoder_study import encoder_study, model_family
from cloakbench.reports.html import render
from cloakbench.reports.run import load_run

IMAGES = ("a", "b", "c")
# model -> protection -> (amplification per image, SDEdit-0.3 PSNR vs the clean edit per image)
VALUES = {
    "toy": {"noise": ((1.0, 1.0, 1.0), (40.0, 41.0, 42.0)), "sds-": ((3.0, 4.0, 5.0), (30.0, 31.0, 32.0))},
    "toy-flow": {"noise": ((0.5, 0.5, 0.5), (44.0, 44.0, 44.0)), "sds-": ((2.0, 2.0, 2.0), (40.0, 40.0, 40.0))},
}


def row(**fields) -> dict:
    return {column: fields.get(column, "") for column in COLUMNS}


@pytest.fixture()
def two_family_run(tmp_path):
    rows = []
    for model, protections in VALUES.items():
        for protection, (amplifications, psnrs) in protections.items():
            for image, amplification, psnr in zip(IMAGES, amplifications, psnrs):
                common = dict(run="r", cell=f"{model}{protection}{image}", image=image, image_name=image,
                              protection=protection, run_seed=0, seed=0, protect_model=model, status="ok")  # fmt: skip
                rows.append(row(**common, pair="analysis", metric="amplification", value=amplification, unit="ratio"))
                rows.append(row(**common, pair="attack_vs_clean_attack", mimicry="sdedit", setting="0.3",
                                attack_model=model, metric="psnr", value=psnr, unit="dB", higher_is_better=1))  # fmt: skip
                # A transfer row (attacked on the other model) is the leaderboard's, not the study's.
                other = "toy-flow" if model == "toy" else "toy"
                rows.append(row(**common, pair="attack_vs_clean_attack", mimicry="sdedit", setting="0.3",
                                attack_model=other, metric="psnr", value=0.0, unit="dB", higher_is_better=1))  # fmt: skip
    with (tmp_path / "rows.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plan = {"protections": [{"name": "noise", "config": {"eps": 16}}, {"name": "sds-", "config": {"eps": 16}}]}
    (tmp_path / "manifest.json").write_text(json.dumps({"run": "r", "plan": plan}))
    return load_run(tmp_path)


def test_rows_are_grouped_by_family_with_means_ratios_and_intervals(two_family_run):
    study = encoder_study(two_family_run)
    assert study["settings"] == ["0.3"]
    by_family = {group["family"]: group["models"] for group in study["families"]}
    assert set(by_family) == {"eps-unet", "flow-transformer"}
    [toy] = by_family["eps-unet"]
    assert toy["model"] == "toy"
    noise, sds = toy["rows"]
    assert noise["is_reference"] and noise["name"] == "noise (eps=16)" and sds["name"] == "sds- (eps=16)"
    assert sds["amplification"]["value"] == pytest.approx(4.0) and sds["ratio"] == "4×"
    assert sds["amplification"]["low"] < 4.0 < sds["amplification"]["high"]  # three images: an interval
    assert sds["edits"][0]["value"] == pytest.approx(31.0)  # the transfer rows (0 dB) are left out
    [flow] = by_family["flow-transformer"]
    assert flow["rows"][1]["ratio"] == "4×" and flow["rows"][1]["edits"][0]["value"] == pytest.approx(40.0)


def test_the_report_shows_the_section_only_with_analysis_rows(two_family_run):
    html = render(two_family_run)
    assert 'id="encoder-study"' in html and "flow-transformer" in html and "model toy-flow" in html
    two_family_run.rows = two_family_run.rows[two_family_run.rows["pair"] != "analysis"]
    assert encoder_study(two_family_run) is None
    assert 'id="encoder-study"' not in render(two_family_run)


def test_model_family_reads_the_zoo_and_folders(tmp_path):
    assert model_family("toy-c") == "eps-unet" and model_family("toy-flow") == "flow-transformer"
    (tmp_path / "model_index.json").write_text(json.dumps({"cloakbench_family": "flow-transformer"}))
    assert model_family(str(tmp_path)) == "flow-transformer"
    assert model_family("no-such-model") == "unknown"
