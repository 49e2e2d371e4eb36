"""``bench compare --batch-size``: batched and one-at-a-time runs give the same rows (cost aside).

Why they do by construction: a batch gives each image the generator it gets alone
(bench/execute.py, ``cell_generators``), and its networks see one image per call
(core/per_image.py, ``one_image_per_call``), so every kernel computes what it computes for the
image alone: docs/PERFORMANCE.md, "Batching". tests/test_batched.py shows on toy that without the
second half the kernels round a batch differently. Every run here is the tiny-random model at
64², the four sample photos, --quick, and every protection compare batches.
"""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloakbench.bench.batching import AUTO_MAX, MEMORY_SHARE, BatchSizer, parse_batch_size, take_batch
from cloakbench.bench.compare import run_compare
from cloakbench.bench.execute import batch_note
from cloakbench.bench.executors import LocalPoolExecutor
from cloakbench.bench.spec import CompareSpec
from cloakbench.core.config import ConfigError
from cloakbench.protections import PROTECTIONS

#: Every protection bench compare batches (the registry's flag; external reads files), and none.
BATCHED = ",".join(name for name in PROTECTIONS.names() if PROTECTIONS.get(name).batches_across_cells())


@pytest.fixture(scope="module")
def image_dir() -> str:
    """The four sample photos: one batch of four per protection (with shared kernels, AdvDM's
    rows on these photos differed in 24 of 104 values)."""
    return "samples"


def spec(image_dir: str, out: Path, methods: str, batch_size=1) -> CompareSpec:
    return CompareSpec(
        images=[image_dir],
        methods=methods,
        attacks="sdedit",
        metrics="psnr,ssim,linf",
        model="tiny-random",
        quick=True,
        out=out,
        batch_size=batch_size,
        write_report=False,
    )


def read_rows(rows_csv: Path) -> list[dict]:
    with open(rows_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def comparable(rows: list[dict]) -> list[tuple]:
    """Rows without what differs by design: the run's name and the cost rows' values and notes."""
    kept = []
    for row in rows:
        row = {k: v for k, v in row.items() if k != "run"}
        if row["pair"] == "cost":
            row["value"], row["note"] = "", ""
        kept.append(tuple(sorted(row.items())))
    return sorted(kept)


@pytest.fixture(scope="module")
def runs(image_dir, tmp_path_factory) -> dict[str, list[dict]]:
    found = {}
    for batch in (1, 4):
        summary = run_compare(spec(image_dir, tmp_path_factory.mktemp(f"b{batch}") / "run", BATCHED, batch))
        assert summary.failed == 0 and summary.computed == summary.cells > 0
        found[batch] = read_rows(summary.rows_csv)
    return found


def test_batched_and_unbatched_rows_are_identical(runs):
    one, four = runs[1], runs[4]
    assert {r["protection"] for r in one} == set(BATCHED.split(","))
    assert comparable(one) == comparable(four)


def test_each_batched_cost_row_says_what_its_figures_are(runs):
    def protect_costs(rows):
        return [r for r in rows if r["pair"] == "cost" and r["metric"] == "wall_s" and not r["mimicry"]]

    batched = [r for r in protect_costs(runs[4]) if r["protection"] == "sds-"]
    assert len(batched) == 4 and all(r["note"].startswith(batch_note("", 4)) for r in batched)  # one batch of 4
    assert not any("batch of" in r["note"] for r in protect_costs(runs[1]))  # unbatched rows are as before


def test_a_local_pool_batches_as_the_serial_run_does(image_dir, tmp_path, runs):
    factory = lambda s, c, i: LocalPoolExecutor(s, c, i, workers=2, threads=1)
    summary = run_compare(spec(image_dir, tmp_path / "run", "none,sds-", 4), executor_factory=factory)
    assert summary.failed == 0
    wanted = [r for r in runs[4] if r["protection"] in {"none", "sds-"}]
    assert comparable(read_rows(summary.rows_csv)) == comparable(wanted)


def test_a_batch_keeps_plan_order_and_takes_only_its_group():
    tasks = collections.deque([("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5)])
    sizer = BatchSizer(2)
    batch = take_batch(tasks, sizer, group_of=lambda t: t[0], batchable=lambda t: True)
    assert batch == [("a", 1), ("a", 3)]
    assert list(tasks) == [("b", 2), ("a", 4), ("b", 5)]
    alone = take_batch(tasks, sizer, group_of=lambda t: t[0], batchable=lambda t: False)
    assert alone == [("b", 2)] and list(tasks) == [("a", 4), ("b", 5)]


def test_auto_runs_the_first_cell_alone_then_fills_half_the_free_memory():
    group = ("toy", "sds-")
    sizer = BatchSizer("auto", free_memory=lambda device: 10_000)
    assert sizer.size(group) == 1  # nothing measured yet
    sizer.observe(group, [{"pair": "cost", "metric": "saved_bytes_per_step", "value": 1_000.0}])
    assert sizer.size(group) == int(MEMORY_SHARE * 10_000 // 1_000)
    sizer.observe(("toy", "advdm"), [{"pair": "cost", "metric": "working_rss_bytes", "value": 1.0}])
    assert sizer.size(("toy", "advdm")) == AUTO_MAX  # capped
    two_workers = BatchSizer("auto", workers=2, free_memory=lambda device: 10_000)
    two_workers.observe(group, [{"pair": "cost", "metric": "saved_bytes_per_step", "value": 1_000.0}])
    assert two_workers.size(group) == int(MEMORY_SHARE * 10_000 / 2 // 1_000)


@pytest.mark.parametrize("bad", ["0", "-2", "four", "2.5"])
def test_a_bad_batch_size_is_one_sentence(bad):
    with pytest.raises(ConfigError, match="--batch-size"):
        parse_batch_size(bad)
    assert parse_batch_size("AUTO") == "auto" and parse_batch_size("4") == 4


def test_the_cli_refuses_a_bad_batch_size_before_any_work(image_dir, tmp_path):
    from cloakbench.bench.cli.app import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["compare", "--images", image_dir, "--model", "tiny-random", "--out", str(out), "--batch-size", "0"]
    )
    assert result.exit_code == 2
    assert "--batch-size 0" in result.output and "Traceback" not in result.output
    assert not (out / "rows.csv").exists()


def test_images_enter_a_protection_in_one_layout_alone_or_batched():
    """Decoded pixels are views (an RGB file's HWC buffer read as CHW); the kernels choose their
    layout by strides, so one image and a batch's row must arrive alike: a dense channels-last
    copy, each row of a batch with the strides of the image alone."""
    import torch

    from cloakbench.core.datasets import load_dataset
    from cloakbench.core.images import protection_batch

    pixels = [im.pixels for im in load_dataset(["samples"], 64).images[:3]]
    alone = protection_batch(pixels[:1])
    batch = protection_batch(pixels)
    assert alone.is_contiguous(memory_format=torch.channels_last) and alone.data_ptr() != pixels[0].data_ptr()
    assert batch[1:2].stride() == alone.stride() and torch.equal(batch[1], pixels[1])
    rgba_view = torch.cat([pixels[0], pixels[0][:1]]).permute(1, 2, 0).contiguous().permute(2, 0, 1)[:3]
    assert protection_batch([rgba_view]).stride() == alone.stride()  # whatever view the decoder left
