"""Images per hour of SDS(-) and AdvDM from `bench perf` JSON files (scripts/gpu_check.sh).

usage: python scripts/images_per_hour.py OUT.json PERF.json...
One line per (method, batch, autocast) in fair mode: images/hour = 3600 / s_per_image, where
bench perf's s_per_image = s_per_step x the method's default steps (100) / batch
(bench/perf/worker.py); then, per method and precision, batch 1 against "batch max": the
batch with the most images per hour among those measured (a batch that ran out of memory has
no row). Writes the same figures to OUT.json.
"""

import json
import sys

METHODS = ("sds-", "advdm")


def autocast_of(row: dict) -> str:
    """bench perf's applied autocast (``optimisations_applied["autocast"]``), else ``fp32``."""
    applied = row.get("optimisations_applied")
    if isinstance(applied, dict) and applied.get("autocast"):
        return str(applied["autocast"])
    return "fp32"


def main(out: str, paths: list[str]) -> int:
    found = []
    for path in paths:
        with open(path) as handle:
            rows = json.load(handle)
        for row in rows:
            if row.get("method") not in METHODS or row.get("mode", "fair") != "fair" or not row.get("s_per_image"):
                continue
            found.append(
                {
                    "method": row["method"],
                    "arch": row.get("arch"),
                    "resolution": row.get("resolution"),
                    "batch": row.get("batch"),
                    "autocast": autocast_of(row),
                    "device": row.get("device"),
                    "s_per_image": row["s_per_image"],
                    "images_per_hour": 3600.0 / row["s_per_image"],
                    "source": path,
                }
            )
    if not found:
        print(f"images per hour: no fair-mode sds-/advdm rows in {', '.join(paths)}", file=sys.stderr)
        return 1
    for row in sorted(found, key=lambda r: (r["method"], r["batch"], r["autocast"])):
        print(
            f"{row['method']:6} {row['arch']} {row['resolution']}² batch {row['batch']} {row['autocast']:4} "
            f"on {row['device']}: {row['images_per_hour']:.0f} images/hour ({row['s_per_image']:.2f} s/image, 100 steps)"
        )
    print("batch 1 vs batch max (the measured batch with the most images/hour):")
    for key in sorted({(r["method"], r["arch"], r["resolution"], r["autocast"]) for r in found}):
        rows = [r for r in found if (r["method"], r["arch"], r["resolution"], r["autocast"]) == key]
        single = next((r for r in rows if r["batch"] == 1), None)
        best = max(rows, key=lambda r: r["images_per_hour"])
        for r in rows:
            r["batch_max"] = r is best
        tried = ", ".join(str(b) for b in sorted({r["batch"] for r in rows}))
        first = f"{single['images_per_hour']:.0f} images/hour" if single else "not measured"
        print(
            f"  {key[0]:6} {key[1]} {key[2]}² {key[3]:4}: batch 1 {first}; "
            f"batch max {best['batch']} {best['images_per_hour']:.0f} images/hour (batches tried: {tried})"
        )
    with open(out, "w") as handle:
        json.dump(found, handle, indent=1)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
