"""Transfer and the issue's acceptance run: a manifest, a sweep, two seeds and two attack models in one run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cloakbench.bench.compare import run_compare
from cloakbench.bench.spec import CompareSpec, parse_sweep_options
from cloakbench.core.images import resize_square
from cloakbench.core.zoo import load_model


def write_manifest(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    for _index, category in enumerate(("portrait", "landscape")):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((72, 72), Image.Resampling.BILINEAR).save(folder / f"{category}.png")
    (folder / "manifest.csv").write_text(
        "path,prompt,category\nportrait.png,a photo of a person,portrait\nlandscape.png,a painting of hills,landscape\n"
    )
    return folder / "manifest.csv"


def other_model(tmp_path: Path) -> str:
    """A second small model: tiny-random's architecture with other weights (seed 1), as a local folder."""
    folder = tmp_path / "tiny-other"
    if not folder.exists():
        load_model("tiny-random", seed=1).save_pretrained(folder)
    return str(folder)


def spec(tmp_path: Path, sweep: str) -> CompareSpec:
    return CompareSpec(
        images=[str(write_manifest(tmp_path))],
        methods="noise,sds-,advdm",
        attacks="sdedit",
        metrics="psnr",
        model="tiny-random",
        attack_models=["tiny-random", other_model(tmp_path)],
        seeds=[0, 1],
        sweeps=parse_sweep_options([sweep]),
        quick=True,
        out=tmp_path / "run",
        write_report=False,
    )


def read_rows(run: Path) -> list[dict]:
    with open(run / "rows.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_acceptance_run_records_every_axis_and_a_widened_sweep_computes_only_new_cells(tmp_path):
    first = run_compare(spec(tmp_path, "sds-.eps=4,16"))
    # 5 protections (none, noise, sds- at 4 and 16, advdm) x 2 images x 2 seeds, each attacked on 2 models.
    assert (first.cells, first.computed, first.failed) == (60, 60, 0)
    rows = read_rows(tmp_path / "run")
    sds = [r for r in rows if r["protection"] == "sds-"]
    assert {r["protection_setting"] for r in sds} == {"eps=4", "eps=16"}
    assert {r["run_seed"] for r in rows} == {"0", "1"}
    attacked = [r for r in rows if r["pair"] == "attack_vs_clean"]
    assert {r["attack_model"] for r in attacked} == {"tiny-random", other_model(tmp_path)}
    assert {r["protect_model"] for r in rows} == {"tiny-random"}
    assert {(r["image_name"], r["category"]) for r in attacked} == {
        ("portrait", "portrait"),
        ("landscape", "landscape"),
    }
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {d["name"]: d["prompt"] for d in manifest["dataset"]} == {
        "portrait": "a photo of a person",
        "landscape": "a painting of hills",
    }
    # The same attack on the same published image differs between the two models (other weights).
    by_model = {
        r["attack_model"]: r["value"]
        for r in attacked
        if r["protection"] == "advdm"
        and r["run_seed"] == "0"
        and r["image_name"] == "portrait"
        and r["setting"] == attacked[0]["setting"]
    }
    assert len(by_model) == 2 and len(set(by_model.values())) == 2

    wider = run_compare(spec(tmp_path, "sds-.eps=4,8,16"))  # no --force: a widened plan loses nothing
    # New: sds- at eps 8 on 2 images x 2 seeds (4 protect cells), each attacked on 2 models (8 attack cells).
    assert (wider.cells, wider.computed, wider.reused, wider.failed) == (72, 12, 60, 0)
    assert {r["protection_setting"] for r in read_rows(tmp_path / "run") if r["protection"] == "sds-"} == {
        "eps=4",
        "eps=8",
        "eps=16",
    }


def test_resize_for_another_attack_model_is_identity_at_the_same_size():
    images = torch.rand(2, 3, 64, 64)
    assert resize_square(images, 64) is images
    bigger = resize_square(images, 128)
    assert bigger.shape == (2, 3, 128, 128)
    assert (resize_square(bigger, 64) - images).abs().mean() < 0.1  # a resize, not a crop or a blank


@pytest.mark.slow
def test_an_attack_model_of_another_resolution_attacks_the_resized_published_image(tmp_path):
    summary = run_compare(
        CompareSpec(
            images=[str(write_manifest(tmp_path))],
            methods="noise",
            attacks="sdedit",
            metrics="psnr",
            model="tiny-random",
            attack_models=["toy"],
            quick=True,
            out=tmp_path / "run",
            write_report=False,
        )
    )
    assert summary.failed == 0
    attacked = [r for r in read_rows(tmp_path / "run") if r["pair"] == "attack_vs_clean"]
    assert attacked and {r["attack_model"] for r in attacked} == {"toy"}
    with Image.open(tmp_path / "run" / attacked[0]["artifact"]) as opened:
        assert opened.size == (128, 128)  # toy works at 128, the protections at tiny-random's 64
