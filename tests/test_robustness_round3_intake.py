"""Issue #30, bad input round three, intake: masks of EXIF-rotated images, masks that select nothing,
manifest rows naming folders or pointing outside their folder, hidden folders, outputs inside the
inputs, FIFOs, empty folders. Each case generates its bad input and checks the sentence and exit
status (docs/RELIABILITY.md, "Images in")."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.core.datasets import DatasetError, load_dataset
from cloakbench.core.images import load_images
from cloakbench.core.metadata import ORIENTATION
from tests.test_robustness_round3 import assert_refused, compare, picture


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def rotated_picture(path, stored=(64, 32)):
    """A JPEG stored ``stored`` = (width, height) wide with EXIF orientation 6 (turn 90° clockwise):
    upright it is (height, width). Left half of the stored pixels red, right half blue."""
    width, height = stored
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=95)
    return path


def mask_file(path, size, box=None):
    """A black mask of ``size`` = (width, height), white (repaint) inside ``box`` (l, t, r, b)."""
    array = np.zeros((size[1], size[0]), np.uint8)
    if box is not None:
        left, top, right, bottom = box
        array[top:bottom, left:right] = 255
    Image.fromarray(array, mode="L").save(path)
    return path


# -- masks -----------------------------------------------------------------------------------------
def test_mask_of_the_upright_picture_is_applied_to_the_upright_picture(tmp_path):
    rotated_picture(tmp_path / "photo.jpg")  # stored 64x32, upright 32x64 (portrait)
    # Upright, orientation 6 turns the stored left (red) half to the top: mask the top half.
    mask_file(tmp_path / "top.png", (32, 64), box=(0, 0, 32, 32))
    (tmp_path / "m.csv").write_text("path,mask\nphoto.jpg,top.png\n")
    dataset = load_dataset([str(tmp_path / "m.csv")], 32)
    image = dataset.images[0]
    mask = dataset.of(image).mask[0].numpy()
    pixels = image.pixels.numpy()
    assert image.upright_size == (32, 64) and image.original_size == (64, 32)
    # the working square is the upright picture's centre crop: the mask's repaint half holds red pixels
    selected = pixels[:, mask > 0.5]
    assert selected.size and selected[0].mean() > 0.8 and selected[2].mean() < 0.2  # red under the mask
    unselected = pixels[:, mask < 0.5]
    assert unselected[2].mean() > 0.8  # blue outside it


def test_mask_of_the_stored_orientation_is_refused_with_the_reason(tmp_path):
    rotated_picture(tmp_path / "photo.jpg")
    mask_file(tmp_path / "stored.png", (64, 32), box=(0, 0, 32, 32))
    (tmp_path / "m.csv").write_text("path,mask\nphoto.jpg,stored.png\n")
    with pytest.raises(DatasetError) as refused:
        load_dataset([str(tmp_path / "m.csv")], 32)
    message = str(refused.value)
    assert "mask stored.png is 64x32, the image file's stored orientation" in message
    assert "used upright (32x64)" in message and "draw the mask on the upright picture" in message


def test_mask_that_selects_no_pixel_is_refused_naming_it(tmp_path):
    picture(tmp_path / "a.png", size=(48, 48))
    mask_file(tmp_path / "blank.png", (48, 48))
    (tmp_path / "m.csv").write_text("path,mask\na.png,blank.png\n")
    assert_refused(
        compare(tmp_path, "--images", tmp_path / "m.csv"),
        "row 2",
        "mask blank.png selects no pixel",
        "paint the region",
    )


# -- manifests -------------------------------------------------------------------------------------
def test_manifest_row_naming_a_folder_says_it_is_a_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "m.csv").write_text("path\nsub\n")
    assert_refused(
        compare(tmp_path, "--images", tmp_path / "m.csv"), "row 2", "image sub is a folder", "not an image file"
    )


def test_manifest_row_naming_a_fifo_is_refused_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "m.csv").write_text("path\npipe.png\n")
    assert_refused(
        compare(tmp_path, "--images", tmp_path / "m.csv"), "row 2", "a FIFO (named pipe), not a regular file"
    )


def test_manifest_pointing_outside_its_folder_records_no_absolute_path(tmp_path):
    elsewhere = tmp_path / "private" / "author" / "pictures"
    outside = picture(elsewhere / "secret_name.png", size=(48, 48))
    inside = picture(tmp_path / "data" / "img" / "b.png", seed=1, size=(48, 48))
    manifest = tmp_path / "data" / "m.csv"
    manifest.write_text(f"path\n{outside}\nimg/b.png\n")
    assert inside.exists()
    result = run("compare", "--model", "tiny-random", "--quick", "--methods", "none", "--metrics", "psnr",
                 "--attacks", "identity", "--out", tmp_path / "run", "--images", manifest, "--threads", 1)  # fmt: skip
    assert result.exit_code == 0, result.output
    leaked = str(elsewhere)
    for name in ("manifest.json", "rows.csv", "report.html"):
        text = (tmp_path / "run" / name).read_text()
        assert leaked not in text, name
    described = json.loads((tmp_path / "run" / "manifest.json").read_text())
    text = json.dumps(described)
    assert "secret_name" in text and "img/b" in text  # by name outside, relative inside


# -- image folders ---------------------------------------------------------------------------------
def test_hidden_folders_and_files_are_not_categories_or_images(tmp_path):
    picture(tmp_path / "art" / "portrait" / "ann.png")
    picture(tmp_path / "art" / ".ipynb_checkpoints" / "ann-checkpoint.png", seed=1)
    picture(tmp_path / "art" / ".hidden.png", seed=2)
    picture(tmp_path / "art" / "portrait" / ".cache" / "x.png", seed=3)
    dataset = load_dataset([str(tmp_path / "art")], 32)
    assert [im.name for im in dataset.images] == ["portrait/ann"]
    assert {dataset.of(im).category for im in dataset.images} == {"portrait"}
    reasons = [s.reason for s in dataset.skipped]
    assert any(".ipynb_checkpoints: a hidden folder" in r for r in reasons), reasons
    assert any(".cache: a hidden folder" in r for r in reasons), reasons


def test_a_fifo_named_like_an_image_is_skipped_with_the_reason(tmp_path):
    picture(tmp_path / "art" / "a.png")
    os.mkfifo(tmp_path / "art" / "b.png")
    intake = load_images([str(tmp_path / "art")], 32)  # returns: the FIFO is never opened
    assert [im.name for im in intake.images] == ["a"]
    assert [s.reason for s in intake.skipped] == [
        f"{tmp_path / 'art' / 'b.png'}: a FIFO (named pipe), not a regular file; only regular files are read as images"
    ]
    direct = load_images([str(tmp_path / "art" / "b.png")], 32)
    assert not direct.images and "a FIFO (named pipe)" in direct.skipped[0].reason


def test_protect_out_inside_images_does_not_protect_its_own_outputs(tmp_path):
    art = tmp_path / "art"
    picture(art / "apple.png", size=(48, 48))
    args = ("protect", "--method", "noise", "--images", art, "--model", "tiny-random", "--quick",
            "--out", art / "protected")  # fmt: skip
    first = run(*args)
    assert first.exit_code == 0, first.output
    outputs = sorted(p.name for p in (art / "protected").rglob("*.png"))
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in (art / "protected").rglob("*.png")) == outputs
    assert outputs == ["apple.png.png"], outputs  # <name with its suffix>.png, never apple.png.png.png
    assert "inside the --out folder" in " ".join(second.output.split())


def test_compare_out_inside_images_skips_the_run_folder(tmp_path):
    images = tmp_path / "pics"
    picture(images / "a.png", size=(48, 48))
    picture(images / "b.png", seed=1, size=(48, 48))
    out = images / "run"
    args = ("compare", "--model", "tiny-random", "--quick", "--methods", "noise", "--metrics", "psnr",
            "--attacks", "identity", "--out", out, "--images", images, "--no-report", "--threads", 1)  # fmt: skip
    first = run(*args)
    assert first.exit_code == 0, first.output
    rows = (out / "rows.csv").read_text()
    second = run(*args)
    assert second.exit_code == 0, second.output  # same plan: its artifacts were not taken as inputs
    assert (out / "rows.csv").read_text() == rows
    intake = load_dataset([str(images)], 32)
    assert sorted(im.name for im in intake.images) == ["a", "b"]
    assert any("a bench compare run folder" in s.reason for s in intake.skipped)


def test_protect_on_an_empty_folder_names_it(tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    result = run("protect", "--images", empty, "--model", "tiny-random", "--quick", "--out", tmp_path / "o")
    assert_refused(result, "empty_folder holds no images")
    assert "see the reasons above" not in result.output


# -- plan size -------------------------------------------------------------------------------------
def huge_plan_args(tmp_path, out):
    eps = ",".join(str(v) for v in range(1, 201))
    seeds = ",".join(str(s) for s in range(250))  # 201 x 2 x 250 = 100,500 cells
    return ("compare", "--model", "tiny-random", "--quick", "--methods", "none,noise", "--attacks", "sdedit",
            "--metrics", "psnr", "--out", out, "--no-report", "--sweep", f"protection:noise.eps={eps}",
            "--seeds", seeds)  # fmt: skip


def test_plan_size_refusal_gives_the_time_at_the_rate_measured_in_the_run_folder(tmp_path):
    picture(tmp_path / "pics" / "a.png", size=(48, 48))
    out = tmp_path / "run"
    small = run("compare", "--model", "tiny-random", "--quick", "--methods", "none,noise", "--attacks", "identity",
                "--metrics", "psnr", "--out", out, "--no-report", "--images", tmp_path / "pics", "--threads", 1)  # fmt: skip
    assert small.exit_code == 0, small.output
    rows = (out / "rows.csv").read_text()
    from cloakbench.bench.store import measured_cell_seconds

    mean, count = measured_cell_seconds(out)
    assert count >= 2 and mean > 0
    result = run(*huge_plan_args(tmp_path, out), "--images", tmp_path / "pics", "--force")
    assert_refused(
        result,
        "this plan has 100,500 cells",
        "one cell at a time",
        f"measured over {count:,} finished cells in",
        "pass --yes or narrow it",
    )
    assert (out / "rows.csv").read_text() == rows  # nothing lost


def test_plan_size_refusal_says_when_no_rate_is_measured(tmp_path):
    picture(tmp_path / "pics" / "a.png", size=(48, 48))
    result = run(*huge_plan_args(tmp_path, tmp_path / "fresh"), "--images", tmp_path / "pics")
    assert_refused(result, "this plan has 100,500 cells", "no rate measured yet", "pass --yes or narrow it")
