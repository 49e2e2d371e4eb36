"""The report's no-reference panel, the leaderboard's fine-tuning panel and the "not shown" reasons."""

from __future__ import annotations

import csv

from cloakbench.core.schema import COLUMNS
from cloakbench.reports.html import render
from cloakbench.reports.noreference import finetuning_panel, noreference_panel, not_shown
from cloakbench.reports.run import load_run

BACKEND = "backend dlib 20.0.1: mmod_human_face_detector.dat (upsample 1)"
MISSING = "liqe runs through pyiqa from its cached weights: expected LIQE.pt in /root/.cache/torch/hub/pyiqa"


def row(protection, pair, metric, value, *, mimicry="", setting="", status="ok", note="", hib=0, image="a"):
    return {
        "run": "r",
        "image": image,
        "image_name": image,
        "protection": protection,
        "mimicry": mimicry,
        "setting": setting,
        "pair": pair,
        "metric": metric,
        "value": "" if value is None else repr(float(value)),
        "higher_is_better": hib,
        "status": status,
        "note": note,
    }


def write_run(folder):
    rows = []
    for protection, quality, generated, fdfr, ism in (("none", 20, 18, 0.0, 0.9), ("aspl", 35, 40, 0.5, 0.4)):
        for image in ("a", "b"):
            rows.append(row(protection, "protected", "brisque", quality + (image == "b"), image=image))
            rows.append(
                row(protection, "protected", "liqe", None, status="unavailable", note=MISSING, hib=1, image=image)
            )
        for index in range(2):
            rows.append(
                row(
                    protection,
                    "generations",
                    "brisque",
                    generated + index,
                    mimicry="lora",
                    setting=f"generation {index}",
                    image="concept",
                )
            )
        rows.append(row(protection, "generations", "fdfr", fdfr, mimicry="lora", note=BACKEND, image="concept"))
        rows.append(
            row(protection, "generations_vs_concept", "ism", ism, mimicry="lora", note=BACKEND, hib=1, image="concept")
        )
    with open(folder / "rows.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for entry in rows:
            writer.writerow({column: entry.get(column, "") for column in COLUMNS})
    return load_run(folder)


def test_panels_show_protected_and_generation_quality_and_mark_the_stronger_protection(tmp_path):
    run = write_run(tmp_path)
    panel = noreference_panel(run)
    assert [c["label"] for c in panel["protected_columns"]] == ["BRISQUE"]  # liqe has no value: no column
    assert panel["attacks"] == ["lora"]
    assert [c["label"] for c in panel["generation_columns"]] == ["BRISQUE", "FDFR", "ISM"]
    aspl = next(r for r in panel["rows"] if r["name"] == "aspl")
    assert aspl["quality"][0]["text"] == "35.5"
    assert [c["text"] for c in aspl["attacks"][0]] == ["40.5", "0.50", "0.400"]
    board = finetuning_panel(run)
    assert [(c["attack"], c["label"], c["direction"]) for c in board["columns"]] == [
        ("lora", "BRISQUE", "↑ stronger"),
        ("lora", "FDFR", "↑ stronger"),
        ("lora", "ISM", "↓ stronger"),
    ]
    none, protected = board["rows"]
    assert none["is_reference"] and "best" not in " ".join(c["css"] for c in none["cells"])
    assert BACKEND in protected["cells"][1]["title"]  # the backend is named on the cell


def test_report_renders_both_panels_and_says_why_a_metric_is_not_shown(tmp_path):
    run = write_run(tmp_path)
    (reason,) = [entry for entry in not_shown(run) if entry["metric"] == "LIQE"]
    assert "LIQE.pt" in reason["reason"] and "/root" not in reason["reason"]  # paths shortened
    html = render(run)
    assert 'id="noreference"' in html and 'id="finetuning"' in html
    assert "LIQE.pt" in html and "Not shown because no row has a value" in html
