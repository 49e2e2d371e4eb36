"""Cost rows of a cell on the CPU: working memory above the cell's start and saved-for-backward bytes per step."""

from __future__ import annotations

import gc

import torch

from cloakbench.bench.execute import cost_rows
from cloakbench.bench.profiling import profile_phase


def one_step(weight: torch.Tensor, size: int) -> None:
    """A step that saves one ``size``-float activation for backward, then frees its graph."""
    x = torch.ones(size, requires_grad=True)
    loss = (x * weight).sin().sum()
    loss.backward()


def test_saved_bytes_per_step_is_one_steps_figure_not_the_sum_over_steps():
    weight = torch.full((1,), 2.0)
    with profile_phase("protect", "cpu", count_saved=True) as one:
        one_step(weight, 100_000)
    gc.collect()
    with profile_phase("protect", "cpu", count_saved=True) as five:
        for _ in range(5):
            one_step(weight, 100_000)
            gc.collect()
    # sin saves its input (x * weight: 400 kB); the product saves only the weight (4 B): x's
    # gradient needs the weight, and the weight needs no gradient.
    assert one.saved_bytes_per_step == 400_000 + 4
    assert five.saved_bytes_per_step == one.saved_bytes_per_step  # graphs are freed between steps
    with profile_phase("protect", "cpu", count_saved=True) as bigger:
        one_step(weight, 400_000)
    assert bigger.saved_bytes_per_step > 3 * one.saved_bytes_per_step
    rows = {row["metric"]: row["value"] for row in cost_rows({}, five)}
    assert rows["saved_bytes_per_step"] == one.saved_bytes_per_step
    assert "saved_bytes" not in rows  # the phase total is no step's figure: never under bench perf's name


WORKING_MEMORY_PROBE = """
import gc, json, torch
from cloakbench.bench.profiling import profile_phase
from cloakbench.bench.execute import cost_rows
torch.set_num_threads(1)
ballast = torch.ones(40_000_000)  # 160 MB the process holds before the cell starts
del ballast
gc.collect()
with profile_phase("protect", "cpu") as small:
    torch.ones(1_000).sum()
with profile_phase("protect", "cpu") as large:
    block = torch.ones(25_000_000)  # 100 MB touched inside the cell
    block.add_(1.0)
    del block
print(json.dumps({"small": small.working_rss_bytes, "large": large.working_rss_bytes,
                  "names": [row["metric"] for row in cost_rows({}, large)]}))
"""


def test_working_memory_counts_what_the_cell_allocates_not_the_process_peak():
    # A fresh process: what earlier tests left resident in this one (allocator caches, exited
    # threads) is not what this test is about.
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", WORKING_MEMORY_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["small"] is not None and found["large"] is not None
    assert found["small"] < 30e6  # not the 160 MB peak the process reached earlier
    assert found["large"] > 80e6
    assert "working_rss_bytes" in found["names"] and "peak_rss_bytes" not in found["names"]
