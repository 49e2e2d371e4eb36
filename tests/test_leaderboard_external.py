"""``--protected DIR`` with pictures ``bench protect --compare-seeds`` made gives the built-in entry (issue #29).

docs/LEADERBOARD.md, "Reproducing a built-in entry": the same images, method, settings and seed
through ``bench protect`` elsewhere and ``bench leaderboard run --protected`` give the same
published PNGs (byte for byte) and so the same metric value in every cell. Only what names the
submission (protection name, source, identity; cell keys; the external protect cell's unused
seed) and what is timed (the cost rows) may differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.bench.leaderboard import run_protocol
from cloakbench.bench.protocol import PROTOCOLS_DIR, load_protocol
from cloakbench.core.provenance import sha256_file
from cloakbench.reports.entry import COST_PAIR

METHOD = "sds-"
BUDGET = 8
#: Few steps keep the test at seconds; both paths read them from the protocol's settings.
STEPS = 2


def draft_protocol(folder: Path) -> Path:
    """v1-toy's structure, cut down: one budget, the non-adaptive SDEdit at one strength, few steps."""
    hashes = load_protocol("v1-toy").image_hashes
    path = folder / "draft-external.toml"
    path.write_text(
        f"""id = "draft-external"
status = "draft"
model = "toy"
seeds = [0]
prompt = "a photo"

[images]
source = "{(PROTOCOLS_DIR / "v1-toy-images").as_posix()}"
resolution = 128
sha256 = {{ astronaut = "{hashes["astronaut"]}", chelsea = "{hashes["chelsea"]}" }}

[budgets]
field = "eps"
values = [{BUDGET}]

[attackers]
non_adaptive = ["sdedit"]
adaptive = []

[attackers.settings.sdedit]
strengths = [0.3]
steps = 10

[protections.settings."{METHOD}"]
steps = {STEPS}

[metrics]
compute = ["psnr", "ssim", "linf"]
imperceptibility = ["psnr", "ssim", "linf"]
strength = ["ssim", "psnr"]

[headline]
metric = "ssim"
""",
        encoding="utf-8",
    )
    return path


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def bench_protect(images: Path, out: Path, protocol, *extra: str) -> None:
    """``bench protect`` as a submitter runs it elsewhere: the protocol's model, budget, settings and seed."""
    settings = [f"--set={METHOD}.{f}={v}" for f, v in protocol.protection_settings[METHOD].items()]
    invoke(
        "protect", images, "--method", METHOD, "--model", protocol.model, "--eps", BUDGET,
        "--seed", protocol.seeds[0], *settings, *extra, "--out", out,
    )  # fmt: skip


def by_cell(entry: dict) -> dict[tuple, list]:
    """Every cell's metric rows but the timed ones, by what the cell is (the external protect cell's seed
    is its own, derived from "external", and it reads files, so the protect cells are matched without it)."""
    found = {}
    for cell in entry["cells"]:
        seed = cell["seed"] if cell["kind"] == "attack" else None
        what = (cell["kind"], cell["image"], cell["protection_setting"], cell["purification"], cell["mimicry"], seed)
        found[what] = sorted(row for row in cell["rows"] if row[0] != COST_PAIR)
    return found


def levels(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"))


def test_bench_protect_elsewhere_scored_with_protected_gives_the_built_in_entry(tmp_path):
    protocol = load_protocol(str(draft_protocol(tmp_path)), allow_draft=True)
    _, (built_in_path,) = run_protocol(protocol, [METHOD], tmp_path / "run-built-in", tmp_path / "entries")
    built_in = json.loads(built_in_path.read_text())

    output = invoke("leaderboard", "images", "--protocol", protocol.path, "--draft", "--out", tmp_path / "images")
    assert "--compare-seeds" in output  # it says how to make a built-in entry's images
    protected = tmp_path / "protected"
    bench_protect(tmp_path / "images", protected / f"{BUDGET}", protocol, "--compare-seeds")
    bench_protect(tmp_path / "images", tmp_path / "plain-seed", protocol)  # --seed itself on every picture
    _, (external_path,) = run_protocol(
        protocol, [], tmp_path / "run-external", tmp_path / "entries", protected=protected, tool="bench protect sds-"
    )
    external = json.loads(external_path.read_text())

    # The published images: byte-identical, and the very files bench protect wrote.
    assert {(i["setting"], i["image"]): i["sha256"] for i in built_in["protected_images"]} == {
        (i["setting"], i["image"]): i["sha256"] for i in external["protected_images"]
    }
    assert len(built_in["protected_images"]) == 2
    seeds = {c["image_name"]: c["seed"] for c in built_in["cells"] if c["kind"] == "protect"}
    for item in built_in["protected_images"]:
        name = item["image_name"]
        mine = protected / f"{BUDGET}" / METHOD / f"{name}.png.png"
        # The file itself, not only its pixels: the shipped PNGs carry no metadata for bench protect to keep.
        assert sha256_file(mine) == item["sha256"] == sha256_file(built_in_path.parent / item["file"])
        sidecar = json.loads(mine.with_suffix(".json").read_text())
        assert sidecar["seed"] == seeds[name] and sidecar["compare_seeds"] is True
        # Without --compare-seeds the seed differs, and so do the pixels: the flag is what reproduces the entry.
        other = tmp_path / "plain-seed" / METHOD / f"{name}.png.png"
        assert not np.array_equal(levels(other), levels(mine))

    # Every cell's metric values, protect (protected vs clean) and attack (vs the attack on clean): equal.
    # Exactly: both runs attack the same PNG bytes with the same attack seeds; no lossy round trip.
    cells, again = by_cell(built_in), by_cell(external)
    assert cells.keys() == again.keys()
    assert {what[0] for what in cells} == {"protect", "attack"}
    for what, rows in cells.items():
        assert rows and rows == again[what], what

    # The figures agree but for the cost (timed); what names the submission differs.
    for budget, other_budget in zip(built_in["figures"]["budgets"], external["figures"]["budgets"], strict=True):
        assert {k: v for k, v in budget.items() if k != "cost"} == {
            k: v for k, v in other_budget.items() if k != "cost"
        }
    assert built_in["protection"]["source"] == "cloakbench" and external["protection"]["source"] == "external"
