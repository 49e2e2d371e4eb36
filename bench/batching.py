"""Batches of protect cells: ``bench compare --batch-size auto|N`` (docs/PERFORMANCE.md, "Batching").

Cells that protect with the same configured protection on the same model (one
:func:`cell_group`) may run as one call on a batch of images when the
protection protects each image as if alone (``Protection.batches_across_cells``: per-image
generators, nothing learnt across the batch). The executors ask :func:`take_batch` for their next
unit of work; :class:`BatchSizer` says how large it may be:

- ``N``: at most ``N`` cells per batch (1, the default, is the unbatched run);
- ``auto``: the group's first cell runs alone and is measured by the same profiler ``bench perf``
  uses (``bench/profiling.py``); later batches take as many images as fit in
  :data:`MEMORY_SHARE` of the device's free memory at that per-image figure, at most
  :data:`AUTO_MAX`. The figure is this run's own measurement on this model and device rather
  than ``benchmarks/baseline.json``'s, which is the toy model at 128² on a CPU.

Batching changes no cell key, no random draw and no value: a batch's networks take one image
per call (bench/execute.py, ``protect_batch``; core/per_image.py), so its rows are its cells'
rows run one by one (docs/PERFORMANCE.md, "Batching").
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cloakbench.core.config import ConfigError
from cloakbench.core.schema import Pair

AUTO = "auto"
#: The most images ``--batch-size auto`` puts in one batch: beyond 16 the per-image time on the
#: toy model stops falling on this CPU and a GPU is past its knee well before the memory is full.
AUTO_MAX = 16
#: The share of the free memory (per worker) that ``auto`` lets one batch's working set take.
MEMORY_SHARE = 0.5
#: The cost rows that measure one image's working set, the largest of which ``auto`` uses.
PER_IMAGE_METRICS = ("saved_bytes_per_step", "working_rss_bytes")

BatchSetting = int | str


def parse_batch_size(text: str | int) -> BatchSetting:
    """``"auto"`` or a positive whole number; anything else is refused in one sentence."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif str(text).strip().lower() == AUTO:
        return AUTO
    else:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ConfigError(f"--batch-size {text!r}: give auto or a whole number of images, e.g. 4") from None
    if value < 1:
        raise ConfigError(f"--batch-size {value}: give at least 1 (1 protects one image at a time)")
    return value


def free_memory_bytes(device: str) -> int:
    """Free memory of ``device``: the GPU's free bytes, or the host's MemAvailable."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class BatchSizer:
    """How many cells of a group the next batch may hold (see the module docstring)."""

    def __init__(self, setting: BatchSetting, device: str = "cpu", workers: int = 1, free_memory=free_memory_bytes):
        self.setting = parse_batch_size(setting)
        self.device, self.workers, self.free_memory = device, max(1, workers), free_memory
        self.per_image: dict[tuple[str, str], float] = {}

    def size(self, group: tuple[str, str]) -> int:
        if self.setting != AUTO:
            return int(self.setting)
        per_image = self.per_image.get(group)
        if not per_image:
            return 1  # not measured yet: this cell runs alone and is measured
        budget = MEMORY_SHARE * self.free_memory(self.device) / self.workers
        return max(1, min(AUTO_MAX, int(budget // per_image)))

    def observe(self, group: tuple[str, str], rows: Iterable[Mapping[str, Any]]) -> None:
        """Learn a group's per-image working set from a finished cell's cost rows (auto only)."""
        if self.setting != AUTO or group in self.per_image:
            return
        found = [
            float(row["value"])
            for row in rows
            if row.get("pair") == Pair.COST.value and row.get("metric") in PER_IMAGE_METRICS and row.get("value")
        ]
        if found:
            self.per_image[group] = max(found)


def cell_group(task) -> tuple[str, str]:
    """Cells that share a worker's loaded state, and may share a batch: same model, same protection."""
    return task.cell.model, task.cell.protection_key


def batchable(task) -> bool:
    """A protect cell whose protection protects each image as if alone."""
    from cloakbench.protections import PROTECTIONS

    return task.cell.kind == "protect" and PROTECTIONS.get(task.cell.protection).batches_across_cells()


def take_batch(
    pending: collections.deque,
    sizer: BatchSizer,
    group_of: Callable = cell_group,
    batchable: Callable = batchable,
) -> list:
    """The next unit of work: the next pending task and, when it is batchable, the pending tasks
    of its group that follow it, up to the sizer's size (plan order kept)."""
    first = pending.popleft()
    group = group_of(first)
    size = sizer.size(group)
    if size == 1 or not batchable(first):
        return [first]
    batch, rest = [first], collections.deque[object]()
    while pending and len(batch) < size:
        task = pending.popleft()
        (batch if group_of(task) == group else rest).append(task)
    rest.extend(pending)
    pending.clear()
    pending.extend(rest)
    return batch
