"""Compare two runs' ``rows.csv`` apart from what legitimately differs between runs.

Cost rows (``pair == "cost"``: wall-clock and memory) keep their identity but not their
values, and ``--ignore`` drops whole columns (e.g. ``cell``, whose ids change when the
key scheme does). Exit 0 when the rest is identical row for row, 1 otherwise; the first
differences are printed.

Usage: ``python scripts/compare_rows.py BEFORE/rows.csv AFTER/rows.csv [--ignore cell,run]``.
Used to check that a refactor changes no number: ``make demo`` before and after.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def comparable_rows(path: Path, ignore: set[str]) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row.get("pair") == "cost":
            row["value"] = "<cost>"
        for column in ignore:
            row.pop(column, None)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", default="", help="comma list of columns to leave out")
    args = parser.parse_args(argv)
    ignore = {c for c in args.ignore.split(",") if c}
    before, after = comparable_rows(args.before, ignore), comparable_rows(args.after, ignore)
    differing = [(i, a, b) for i, (a, b) in enumerate(zip(before, after)) if a != b]
    print(
        f"{len(before)} rows before, {len(after)} after; {len(differing)} differ"
        + (f" (ignoring {', '.join(sorted(ignore))} and cost values)" if ignore else " (ignoring cost values)")
    )
    for index, a, b in differing[:5]:
        print(f"  row {index}: " + ", ".join(f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in a if a[k] != b.get(k)))
    return 0 if len(before) == len(after) and not differing else 1


if __name__ == "__main__":
    sys.exit(main())
