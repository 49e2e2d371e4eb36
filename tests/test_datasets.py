"""Datasets: category folders, manifest CSVs with prompts and masks, prompts.toml, and bad manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.core.datasets import DatasetError, load_dataset

SIZE = 64


def picture(path: Path, seed: int, size: tuple[int, int] = (72, 72)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (72, 72)) -> Path:
    array = np.zeros((size[1], size[0]), dtype=np.uint8)
    array[:, : size[0] // 2] = 255  # repaint the left half
    Image.fromarray(array).save(path)
    return path


def test_category_folders_give_categories_and_prompts_toml_their_prompts(tmp_path):
    picture(tmp_path / "portrait" / "a.png", 1)
    picture(tmp_path / "landscape" / "b.png", 2)
    picture(tmp_path / "c.png", 3)
    (tmp_path / "prompts.toml").write_text('[prompts]\nportrait = "a photo of a person"\n')
    dataset = load_dataset([str(tmp_path)], SIZE)
    found = {im.name: dataset.of(im) for im in dataset.images}
    assert {name: info.category for name, info in found.items()} == {
        "c": "",
        "landscape/b": "landscape",
        "portrait/a": "portrait",
    }
    assert found["portrait/a"].prompt == "a photo of a person"
    assert found["landscape/b"].prompt == ""  # no prompt for this category: the run's --prompt applies
    assert dataset.skipped == []  # prompts.toml is the dataset's own file, not a skipped image


def test_manifest_rows_give_prompt_category_and_a_working_size_mask(tmp_path):
    picture(tmp_path / "img" / "a.png", 1)
    picture(tmp_path / "img" / "b.png", 2, size=(96, 72))
    mask(tmp_path / "a_mask.png")
    (tmp_path / "prompts.toml").write_text('landscape = "a landscape painting"\n')
    (tmp_path / "manifest.csv").write_text(
        "path,prompt,category,mask\nimg/a.png,a photo of sks,portrait,a_mask.png\nimg/b.png,,landscape,\n"
    )
    dataset = load_dataset([str(tmp_path / "manifest.csv")], SIZE)
    a, b = dataset.images
    assert (a.name, dataset.of(a).prompt, dataset.of(a).category) == ("img/a", "a photo of sks", "portrait")
    assert dataset.of(b).prompt == "a landscape painting"  # from prompts.toml beside the manifest
    working = dataset.of(a).mask
    assert working.shape == (1, SIZE, SIZE) and set(working.unique().tolist()) == {0.0, 1.0}
    assert working[0, :, : SIZE // 2 - 1].min() == 1 and working[0, :, SIZE // 2 + 1 :].max() == 0
    assert dataset.of(b).mask is None and dataset.of(b).mask_hash == ""
    assert [entry["prompt"] for entry in dataset.describe()] == ["a photo of sks", "a landscape painting"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("path,prompt\nimg/a.png,x\nimg/missing.png,y\n", r"row 3: image img/missing.png does not exist"),
        ("path,caption\nimg/a.png,x\n", r"unknown column 'caption'"),
        ("path\nimg/a.png\nimg/b.png\nimg/a.png\n", r"row 4: path img/a.png is listed again \(first on row 2\)"),
        ("path,mask\nimg/a.png,small_mask.png\n", r"row 2: mask small_mask.png is 40x40 but the image is 72x72"),
        ("prompt\nx\n", r"no 'path' column"),
    ],
)
def test_bad_manifests_name_the_row_and_what_is_wrong(tmp_path, body, message):
    picture(tmp_path / "img" / "a.png", 1)
    picture(tmp_path / "img" / "b.png", 2)
    mask(tmp_path / "small_mask.png", size=(40, 40))
    (tmp_path / "manifest.csv").write_text(body)
    with pytest.raises(DatasetError, match=message):
        load_dataset([str(tmp_path / "manifest.csv")], SIZE)


def test_compare_refuses_a_bad_manifest_in_one_sentence_without_traceback(tmp_path):
    picture(tmp_path / "img" / "a.png", 1)
    (tmp_path / "manifest.csv").write_text("path\nimg/a.png\nimg/gone.png\n")
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--images",
            str(tmp_path / "manifest.csv"),
            "--model",
            "tiny-random",
            "--methods",
            "noise",
            "--quick",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code != 0
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "row 3: image img/gone.png does not exist" in output
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "rows.csv").exists()


def test_inpainting_repaints_the_region_of_the_images_own_mask(tmp_path):
    from cloakbench.bench.compare import run_compare
    from cloakbench.bench.spec import CompareSpec
    from cloakbench.core.images import read_png

    picture(tmp_path / "a.png", 1, size=(64, 64))
    mask(tmp_path / "a_mask.png", size=(64, 64))  # repaint the left half, keep the right half
    (tmp_path / "manifest.csv").write_text("path,prompt,mask\na.png,a photo of sks,a_mask.png\n")
    summary = run_compare(
        CompareSpec(
            images=[str(tmp_path / "manifest.csv")],
            methods="none",
            attacks="inpaint",
            metrics="psnr",
            model="tiny-random",
            quick=True,
            out=tmp_path / "run",
            write_report=False,
        )
    )
    assert summary.failed == 0 and summary.unavailable == 0
    import csv

    with open(tmp_path / "run" / "rows.csv", newline="") as handle:
        attacked = next(r for r in csv.DictReader(handle) if r["mimicry"] == "inpaint" and r["artifact"])
    output = read_png(tmp_path / "run" / attacked["artifact"])
    clean = load_dataset([str(tmp_path / "manifest.csv")], SIZE).images[0].pixels
    assert torch.equal(output[:, :, SIZE // 2 :], clean[:, :, SIZE // 2 :])  # kept exactly (pasted back)
    assert (output[:, :, : SIZE // 2] - clean[:, :, : SIZE // 2]).abs().max() > 0.05  # repainted


def test_the_plan_resolves_each_cells_prompt_and_mask_once_and_execute_runs_exactly_that(tmp_path, monkeypatch):
    """A cell's meaning lives in the plan: the image's own prompt reaches the protection, its own mask
    the inpainting attack, and execute runs the instances ``Components.chain`` gives for the cell."""
    from cloakbench.bench.plan import Components, build_plan
    from cloakbench.bench.spec import CompareSpec
    from cloakbench.core.zoo import model_facts

    picture(tmp_path / "a.png", 1, size=(64, 64))
    picture(tmp_path / "b.png", 2, size=(64, 64))
    mask(tmp_path / "a_mask.png", size=(64, 64))
    (tmp_path / "manifest.csv").write_text("path,prompt,mask\na.png,a photo of sks,a_mask.png\nb.png,,\n")
    spec = CompareSpec(
        images=[str(tmp_path / "manifest.csv")],
        methods="advdm",
        attacks="inpaint",
        metrics="psnr",
        model="tiny-random",
        prompt="the run's prompt",
        quick=True,
        out=tmp_path / "run",
        write_report=False,
    )
    components = Components.from_spec(spec)
    facts = model_facts(spec.model)
    plan = build_plan(spec, components, facts, load_dataset(spec.images, facts.resolution))
    by_image = {(c.kind, c.protection, c.images[0].name): c for c in plan.cells}
    (own,) = components.chain(by_image[("protect", "advdm", "a")])
    (default,) = components.chain(by_image[("protect", "advdm", "b")])
    assert (
        own.config.prompt == "a photo of sks" and default.config.prompt == components.protections["advdm"].config.prompt
    )
    attack_a, attack_b = by_image[("attack", "advdm", "a")], by_image[("attack", "advdm", "b")]
    assert (attack_a.prompt, attack_b.prompt) == ("a photo of sks", "the run's prompt")
    assert components.chain(attack_a)[-1].config.mask == "folder"
    assert components.chain(attack_b)[-1].config.mask != "folder"

    # Execute asks the plan's resolution and nothing else: the instance it runs is the chain's.
    ran = []
    original = Components.chain

    def spy(self, cell):
        found = original(self, cell)
        ran.append((cell.key, [c.identity() for c in found]))
        return found

    monkeypatch.setattr(Components, "chain", spy)
    from cloakbench.bench.compare import run_compare

    summary = run_compare(spec)
    assert summary.failed == 0
    executed = {key: chain for key, chain in ran if key}  # planning's drafts have no key yet
    assert set(executed) == {c.key for c in plan.cells}
    assert executed[attack_a.key][-1]["config"]["mask"] == "folder"
