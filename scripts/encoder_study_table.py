"""The encoder study's markdown table (docs/PROTECTIONS.md, "The encoder study") from run folders.

Each run folder is read by the report's own code (``reports/encoder_study.py``: amplification
÷ noise's, SDEdit PSNR vs the clean edit, 95 % cluster-bootstrap intervals over images), and
its rows printed under the model's family, so the table in the docs is the report's numbers.

Usage (as run for issue 23, one folder per model)::

    bench compare --model toy --methods all --attacks sdedit --set sdedit.strengths=0.3 \\
        --set aspl.steps=50 --metrics psnr,ssim --threads 1 --no-report --out runs/enc-toy
    (the same with toy-c and toy-flow)
    python scripts/encoder_study_table.py runs/enc-toy-c runs/enc-toy runs/enc-toy-flow
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cloakbench.reports.encoder_study import encoder_study
from cloakbench.reports.run import load_run


def interval(found: dict) -> str:
    return f"{found['text']} [{found['ci']}]" if found.get("ci") else found["text"]


def table(run_dirs: list[Path]) -> list[str]:
    lines: list[str] = []
    for run_dir in run_dirs:
        study = encoder_study(load_run(run_dir))
        if study is None:
            raise SystemExit(f"{run_dir}: no encoder-analysis rows (a bench compare run folder has them)")
        if not lines:
            header = " | ".join(f"SDEdit {s}: PSNR vs clean edit (dB, lower = stronger)" for s in study["settings"])
            lines += [f"| family | model | protection | amplification | ÷ noise | {header} |"]
            lines += ["|---|---|---|---|---|" + "---|" * len(study["settings"])]
        for group in study["families"]:
            for entry in group["models"]:
                for row in entry["rows"]:
                    edits = " | ".join(interval(c) for c in row["edits"])
                    amplification = interval(row["amplification"])
                    lines.append(
                        f"| {group['family']} | {entry['model']} | {row['name']} | {amplification} | {row['ratio']} | {edits} |"
                    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (one per model)")
    print("\n".join(table(parser.parse_args().runs)))


if __name__ == "__main__":
    main()
