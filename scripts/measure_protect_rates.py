"""Measure the rates ``bench protect`` shows as its first ETA on a fresh machine.

``bench protect`` records the rate of every picture it protects in the user's cache
(bench/protect_rates.py); this script runs it on one picture per method and thread count
with a cache folder of its own, then writes those measured rates, with the machine they were
measured on, to ``benchmarks/protect_rates.json``: the estimate a first run shows before its
model has loaded (docs/PERFORMANCE.md, "bench protect's first estimate").

    python scripts/measure_protect_rates.py --out benchmarks/protect_rates.json

The picture is scikit-image's astronaut at 384x256, protected whole and, with ``--max-pixels``
below its size, in tiles (rates differ by mode); ``--steps`` shortens the PGD loop (a rate is per
step; the first step's setup, included in the rate, weighs more with fewer steps).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    load = os.getloadavg()[0]
    return f"{os.cpu_count()}-core {cpu}, load {load:.1f}, {datetime.date.today().isoformat()}"


def main() -> None:
    from PIL import Image
    from skimage import data

    from cloakbench.protections import demo_protections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "protect_rates.json")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--methods", default=",".join(demo_protections()))
    parser.add_argument("--threads", default="1,2", help="torch thread counts to measure (comma-separated)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloakbench-rates-") as work:
        picture = Path(work) / "astronaut.png"
        Image.fromarray(data.astronaut()).resize((384, 256)).save(picture)
        cache = Path(work) / "cache"
        environment = {**os.environ, "CLOAKBENCH_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
        for threads in args.threads.split(","):
            for method in args.methods.split(","):
                for mode, max_pixels in (("full", 1024 * 1024), ("tiles", 128 * 128)):
                    command = [
                        sys.executable, "-m", "cloakbench.bench.cli.app", "protect", str(picture), "--method", method,
                        "--model", args.model, "--steps", str(args.steps), "--threads", threads,
                        "--max-pixels", str(max_pixels), "--out", str(Path(work) / f"out-{threads}-{mode}"),
                    ]  # fmt: skip
                    print(f"{method} ({threads} thread(s), {mode}) ...", flush=True)
                    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)
        measured = json.loads((cache / "protect_rates.json").read_text())["rates"]
    rates = {key: sorted(values)[len(values) // 2] for key, values in measured.items()}
    record = {
        "schema": 1,
        "machine": machine(),
        "command": "python scripts/measure_protect_rates.py " + " ".join(sys.argv[1:]),
        "unit": "seconds per PGD step per pixel processed (per tile batch without steps)",
        "rates": dict(sorted(rates.items())),
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {len(rates)} rates to {args.out}")


if __name__ == "__main__":
    main()
