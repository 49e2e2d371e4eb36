"""The first ETA of ``bench protect``: a rate measured earlier, before the model has loaded.

``bench protect``'s own estimate needs one measured PGD step, so it comes after the model
has loaded — and loading costs more than the step: importing diffusers' model classes alone
took 5–6 s on a quiet 2-core CPU and 25 s on a loaded one (docs/PERFORMANCE.md, "bench
protect's first estimate"). So the bar starts with an estimate from a rate measured before:

1. this machine's own earlier runs (the rate file in the user cache, written after every
   picture: the median of the last :data:`KEEP` measurements of the same key), else
2. the rate the developers measured (``benchmarks/protect_rates.json``, written by
   ``scripts/measure_protect_rates.py``; it names its machine), else no early estimate.

The line printed says which; the step measured on this run then replaces it. A rate is
seconds per PGD step per pixel processed (time ∝ pixels, the assumption of
:func:`cloakbench.bench.cli.protect_progress.estimate_seconds`), keyed by what sets it: the
model's weights hash, the method and its version, the device, the torch thread count and
whether the picture runs whole or in tiles.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from cloakbench.core.io import write_atomic

#: The measurements of one key kept in the user's rate file (the median is used).
KEEP = 5
SCHEMA = 1
SHIPPED = Path(__file__).resolve().parents[1] / "benchmarks" / "protect_rates.json"


@dataclass(frozen=True)
class Rate:
    """Seconds per PGD step per pixel, and where the figure comes from (a sentence)."""

    seconds_per_pixel: float
    source: str


def rate_key(weights_hash: str, method: str, version: int, device: str, threads: int, mode: str) -> str:
    """``mode``: ``full`` (the picture in one pass) or ``tiles`` (the model's squares in batches): their
    costs per pixel differ (attention grows faster than the pixels), so each has its own rate."""
    return f"{weights_hash}|{method}|v{version}|{device}|threads={threads}|{mode}"


def user_rates_file() -> Path:
    """``$CLOAKBENCH_CACHE_DIR/protect_rates.json``, else ``$XDG_CACHE_HOME/cloakbench/`` (``~/.cache`` without it).

    The test suite points ``CLOAKBENCH_CACHE_DIR`` at a folder of its own (tests/conftest.py).
    """
    own = os.environ.get("CLOAKBENCH_CACHE_DIR")
    if own:
        return Path(own).expanduser() / "protect_rates.json"
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "cloakbench" / "protect_rates.json"


def _read(path: Path) -> dict:
    """The rates of ``path``; an unreadable or foreign file reads as empty (it only ever speeds an estimate)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("rates"), dict):
        return {}
    return data


def lookup(key: str, *, user_file: Path | None = None, shipped_file: Path = SHIPPED) -> Rate | None:
    """The rate for ``key``: this machine's earlier runs first, then the developers' measurement."""
    user_file = user_file or user_rates_file()
    mine = _read(user_file).get("rates", {}).get(key)
    if isinstance(mine, list) and mine and all(isinstance(v, (int, float)) and v > 0 for v in mine):
        return Rate(float(statistics.median(mine)), f"the rate of your last {len(mine)} run(s) on this machine")
    shipped = _read(shipped_file)
    theirs = shipped.get("rates", {}).get(key)
    if isinstance(theirs, (int, float)) and theirs > 0:
        machine = shipped.get("machine", "the developers' machine")
        return Rate(float(theirs), f"the rate measured on {machine} ({shipped_file.name})")
    return None


def record(key: str, seconds_per_pixel: float, *, user_file: Path | None = None) -> None:
    """Add one measurement of ``key`` to the user's rate file (the last :data:`KEEP` are kept).

    A file that cannot be written is left alone: the rate only ever speeds up an estimate.
    """
    if not seconds_per_pixel > 0:
        return
    user_file = user_file or user_rates_file()
    data = _read(user_file) or {"schema": SCHEMA, "rates": {}}
    kept = [v for v in data["rates"].get(key, []) if isinstance(v, (int, float))]
    data["rates"][key] = (kept + [seconds_per_pixel])[-KEEP:]
    try:
        user_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(user_file, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError:
        pass
