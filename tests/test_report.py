"""The HTML report, rendered from synthetic run folders (no runner, no model).

``write_fake_run`` writes a plausible run folder the way the store lays it out
(manifest.json, rows.csv, artifacts/<2 hex>/<sha256>.png) so the report can be tested on
its own; the browser tests in test_report_browser.py reuse it.
"""

from __future__ import annotations

import csv
import hashlib
import html.parser
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cloakbench.reports.grids import perturbation
from cloakbench.reports.html import CSP, write_report
from cloakbench.reports.run import load_run, shorten_paths

EVIL_NAME = '"><img src=x onerror=alert(1)>.png'
EVIL_SKIPPED = "<svg onload=alert(2)>.jpg"
COLUMNS = [
    "run",
    "cell",
    "image",
    "image_name",
    "protection",
    "purification",
    "mimicry",
    "setting",
    "seed",
    "pair",
    "metric",
    "value",
    "unit",
    "higher_is_better",
    "status",
    "note",
    "artifact",
]
LPIPS_REASON = (
    "alexnet weights not found: expected /root/.cache/torch/hub/checkpoints/"
    "alexnet-owt-7be5be79.pth (or set CLOAKBENCH_ALEXNET to its path)."
)
BUDGET = {"none": 0, "noise": 4, "photoguard": 8}
ATTACKS = [("", "sdedit", "0.2"), ("", "sdedit", "0.5"), ("jpeg", "", "75")]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _store(run_dir: Path, pixels: np.ndarray) -> str:
    data = _png(pixels)
    digest = hashlib.sha256(data).hexdigest()
    path = run_dir / "artifacts" / digest[:2] / f"{digest}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.relative_to(run_dir).as_posix()


def _attack(pixels: np.ndarray, purification: str, mimicry: str, setting: str, seed: int) -> np.ndarray:
    """A stand-in for a mimicry attack: JPEG re-encoding, or blur plus seeded noise that grows with strength."""
    image = Image.fromarray(pixels)
    if purification == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(setting))
        return np.asarray(Image.open(buffer).convert("RGB"))
    rng = np.random.default_rng(seed)
    blurred = np.asarray(
        image.resize((16, 16), Image.Resampling.BILINEAR).resize(image.size, Image.Resampling.BILINEAR)
    )
    mix = float(setting)
    noisy = (1 - mix) * pixels + mix * blurred + rng.normal(0, 20 * mix, pixels.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _similarity_rows(base: dict, pair: str, output: np.ndarray, reference: np.ndarray, artifact: str) -> list[dict]:
    psnr = peak_signal_noise_ratio(reference, output, data_range=255) if (output != reference).any() else math.inf
    ssim = structural_similarity(reference, output, channel_axis=2, data_range=255)
    rows = [
        dict(base, pair=pair, metric="psnr", value=psnr, unit="dB", higher_is_better=1, status="ok", artifact=artifact),
        dict(base, pair=pair, metric="ssim", value=ssim, unit="", higher_is_better=1, status="ok", artifact=artifact),
        dict(
            base,
            pair=pair,
            metric="lpips",
            value="",
            unit="",
            higher_is_better=0,
            status="unavailable",
            note=LPIPS_REASON,
            artifact=artifact,
        ),
    ]
    if pair == "protected_vs_clean":
        linf = float(np.abs(output.astype(int) - reference.astype(int)).max())
        rows.append(
            dict(
                base,
                pair=pair,
                metric="linf",
                value=linf,
                unit="/255",
                higher_is_better=0,
                status="ok",
                artifact=artifact,
            )
        )
    return rows


def _cost_rows(base: dict, rng: np.random.Generator, seconds: float) -> list[dict]:
    return [
        dict(base, pair="cost", metric="wall_s", value=seconds * (1 + 0.1 * rng.random()), unit="s", status="ok"),
        dict(base, pair="cost", metric="peak_rss_bytes", value=int(2**30 * (1 + rng.random())), unit="B", status="ok"),
        dict(base, pair="cost", metric="peak_cuda_allocated_bytes", value=0, unit="B", status="ok"),
        dict(base, pair="cost", metric="peak_cuda_reserved_bytes", value=0, unit="B", status="ok"),
        dict(base, pair="cost", metric="saved_bytes", value=int(2**20 * seconds), unit="B", status="ok"),
    ]


def _generator_rows(run_dir: Path, rng: np.random.Generator, seed: int, size: int) -> list[dict]:
    """A set attack as the runner records it: image "concept", FID over the set, one setting per generation."""
    rows = []
    twins = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2)]
    for protection, budget in BUDGET.items():
        base = dict.fromkeys(COLUMNS, "")
        base.update(
            run="fake",
            image="concept",
            image_name="all images",
            protection=protection,
            mimicry="textual-inversion",
            seed=str(seed),
            cell=f"ti-{protection}",
        )
        rows.append(
            dict(
                base,
                pair="generations_vs_concept",
                metric="fid",
                value=100 + 20 * budget,
                unit="",
                higher_is_better=0,
                status="ok",
            )
        )
        rows.append(
            dict(
                base,
                pair="generations_vs_concept",
                metric="kid",
                value=0.01 * (1 + budget),
                unit="",
                higher_is_better=0,
                status="ok",
            )
        )
        for index, twin in enumerate(twins):
            generation = np.clip(twin.astype(int) + budget * 4, 0, 255).astype(np.uint8)
            setting_base = dict(base, setting=f"generation {index}", artifact=_store(run_dir, generation))
            rows.append(
                dict(
                    setting_base,
                    pair="generations_vs_concept",
                    metric="ssim",
                    value=0.5 - 0.02 * budget,
                    unit="",
                    higher_is_better=1,
                    status="ok",
                    note="nearest concept image",
                )
            )
            if budget:
                rows.append(
                    dict(
                        setting_base,
                        pair="attack_vs_clean_attack",
                        metric="ssim",
                        value=structural_similarity(twin, generation, channel_axis=2, data_range=255),
                        unit="",
                        higher_is_better=1,
                        status="ok",
                    )
                )
        rows += _cost_rows(base, rng, 30.0)
        rows.append(dict(base, pair="training", metric="loss", setting="0", value=0.5, status="ok"))
    return rows


def write_fake_run(run_dir: Path, *, names=("astronaut.png", EVIL_NAME), size: int = 32, seed: int = 0) -> Path:
    """Write a plausible run folder: 2 images x {none, noise, photoguard} x {sdedit 0.2/0.5, jpeg}, plus a
    textual-inversion set attack."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    plan_images = []
    for index, name in enumerate(names):
        yy, xx = np.mgrid[0:size, 0:size] / size
        clean = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + index)], axis=-1)
        clean = np.clip(np.round(40 + 175 * clean + rng.normal(0, 6, clean.shape)), 0, 255).astype(np.uint8)
        image_id = hashlib.sha256(clean.tobytes()).hexdigest()
        plan_images.append({"name": name, "hash": image_id})
        for protection, budget in BUDGET.items():
            if budget:
                sign = rng.choice([-1, 1], size=clean.shape)
                protected = np.clip(clean.astype(int) + budget * sign, 0, 255).astype(np.uint8)
            else:
                protected = clean
            base = dict.fromkeys(COLUMNS, "")
            base.update(run="fake", image=image_id, image_name=name, protection=protection, seed=str(seed))
            protected_artifact = _store(run_dir, protected)
            rows += _similarity_rows(
                dict(base, cell=f"p-{protection}-{index}"), "protected_vs_clean", protected, clean, protected_artifact
            )
            if budget:
                rows += _cost_rows(dict(base, cell=f"p-{protection}-{index}"), rng, 0.5 * budget)
                amplification = (1.0 if protection == "noise" else 25.0) * (1 + 0.2 * rng.random())
                rows.append(
                    dict(base, pair="analysis", metric="amplification", value=amplification, unit="ratio", status="ok")
                )
            for purification, mimicry, setting in ATTACKS:
                attack_base = dict(
                    base,
                    purification=purification,
                    mimicry=mimicry,
                    setting=setting,
                    cell=f"a-{protection}-{purification}{mimicry}{setting}-{index}",
                )
                on_clean = _attack(clean, purification, mimicry, setting, seed)
                output = _attack(protected, purification, mimicry, setting, seed)
                artifact = _store(run_dir, output)
                if budget:  # as the runner does: the attack on clean images is the reference, not compared
                    rows += _similarity_rows(attack_base, "attack_vs_clean_attack", output, on_clean, artifact)
                rows += _similarity_rows(attack_base, "attack_vs_clean", output, clean, artifact)
                rows += _cost_rows(attack_base, rng, 2.0 if mimicry else 0.05)
    rows += _generator_rows(run_dir, rng, seed, size)
    with open(run_dir / "rows.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {
        "run": "fake",
        "created_utc": "2026-11-28T10:00:00Z",
        "finished_utc": "2026-11-28T10:05:00Z",
        "command": ["bench", "compare", str(run_dir.parent / "inputs"), "--out", str(run_dir)],
        "versions": {
            "python": "3.11.7",
            "torch": "2.14.1",
            "diffusers": "0.42.1",
            "transformers": "5.24.0",
            "cloakbench": "0.1.0",
        },
        "device": "cpu (test)",
        "git_commit": "0123456789abcdef",
        "git_dirty": True,
        "model": {"name": "tiny-random", "weights_hash": "f" * 64, "dtype": "float32"},
        "plan": {
            "images": plan_images,
            "protections": list(BUDGET),
            "attacks": ["sdedit", "jpeg", "textual-inversion"],
            "metrics": ["psnr", "ssim", "lpips", "linf"],
            "seed": seed,
        },
        # As cloakbench.core.images words it: the reason repeats the path.
        "skipped": [
            {
                "path": str(run_dir.parent / "inputs" / EVIL_SKIPPED),
                "reason": f"{run_dir.parent / 'inputs' / EVIL_SKIPPED}: not an image (text file)",
            }
        ],
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return run_dir


class _Collector(html.parser.HTMLParser):
    """Every tag with its attributes, and the embedded JSON summary."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._in_json = False
        self.json_text = ""

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_json = tag == "script" and attributes.get("type") == "application/json"

    def handle_endtag(self, tag):
        self._in_json = False

    def handle_data(self, data):
        if self._in_json:
            self.json_text += data
        else:
            self.text.append(data)


def parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


@pytest.fixture()
def fake_run(tmp_path) -> Path:
    return write_fake_run(tmp_path / "runs" / "fake")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path]:
    """One report shared by the read-only tests (rendering takes ~2 s on this CPU)."""
    run_dir = write_fake_run(tmp_path_factory.mktemp("rendered") / "runs" / "fake")
    return run_dir, write_report(run_dir)


def test_report_is_self_contained_and_has_the_csp(rendered):
    run_dir, report = rendered
    assert report == run_dir / "report.html"
    page = parse(report)
    metas = [
        attrs for tag, attrs in page.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert [m["content"] for m in metas] == [CSP]
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "cloakbench-summary"}]
    sources = [attrs["src"] for tag, attrs in page.tags if "src" in attrs]
    assert sources and all(re.match(r"data:image/(png|jpeg|webp);base64,", src) for src in sources)
    # Thumbnails are WebP (the report stays small); plots PNG; the comparison figures JPEG.
    assert sum(src.startswith("data:image/webp;base64,") for src in sources) > 10
    assert not [attrs for tag, attrs in page.tags if tag in ("link", "iframe", "object", "embed")]
    hrefs = [attrs["href"] for tag, attrs in page.tags if "href" in attrs]
    assert all(href.startswith("#") for href in hrefs)
    text = report.read_text(encoding="utf-8")
    assert str(run_dir.parent.parent) not in text and "/root/" not in text and "/tmp/" not in text
    # Plots: strength/imperceptibility, cost, per-setting curves and amplification all have data here,
    # and one comparison figure per attack with per-image outputs (sdedit, jpeg; not textual inversion).
    alts = [attrs.get("alt", "") for tag, attrs in page.tags if tag == "img"]
    assert len([a for a in alts if a.startswith(("strength (", "bar", "line"))]) == 4
    assert sorted(a for a in alts if a.startswith("image comparison")) == [
        "image comparison for jpeg",
        "image comparison for sdedit",
    ]


def test_summary_values_are_the_means_of_the_rows(rendered):
    run_dir, report = rendered
    data = json.loads(parse(report).json_text)["summary"]
    rows = load_run(run_dir).rows
    strength_metrics = [c["metric"] for c in data["strength_columns"]]
    assert strength_metrics == ["psnr", "ssim"]  # LPIPS has no value anywhere: no column, listed as hidden
    assert data["hidden_metrics"] == ["LPIPS"]
    directions = {c["metric"]: c["direction"] for c in data["strength_columns"]}
    assert directions == {"psnr": "↓ stronger", "ssim": "↓ stronger"}
    groups = {g["protection"]: g for g in data["groups"]}
    assert list(groups) == ["none", "noise", "photoguard"]
    sdedit = next(a for a in groups["photoguard"]["attacks"] if a["attack"] == "sdedit" and a["setting"] == "0.5")
    expected = rows[
        (rows["protection"] == "photoguard")
        & (rows["mimicry"] == "sdedit")
        & (rows["setting"] == "0.5")
        & (rows["pair"] == "attack_vs_clean_attack")
        & (rows["metric"] == "ssim")
    ]["value"].mean()
    assert sdedit["strength"][strength_metrics.index("ssim")]["text"] == f"{expected:.3f}"
    # L∞ is the max over images, and equals the budget the fake protection spent.
    impercept = [c["metric"] for c in data["impercept_columns"]]
    assert groups["photoguard"]["imperceptibility"][impercept.index("linf")]["text"] == "8.0"
    # Identical images: PSNR of the unprotected reference is infinite and shown as such.
    assert groups["none"]["imperceptibility"][impercept.index("psnr")]["text"] == "∞"
    assert {cell["text"] for a in groups["none"]["attacks"] for cell in a["strength"]} == {"reference"}


def test_a_cell_says_why_it_has_no_number():
    import pandas as pd

    from cloakbench.reports.tables import aggregate

    rows = pd.DataFrame(
        {
            "metric": ["lpips"] * 3,
            "status": ["ok", "unavailable", "ok"],
            "value": [0.2, math.nan, 0.4],
            "note": ["", "weights missing at /srv/x/y.pth", ""],
        }
    )
    partial = aggregate(rows, "lpips")
    assert partial.text == "0.300*" and "1 row(s) not ok" in partial.title
    none_ok = aggregate(rows[rows["status"] != "ok"], "lpips")
    assert none_ok.text == "unavailable" and none_ok.title == "weights missing at …/x/y.pth"
    assert aggregate(rows, "ssim").text == "—"


def test_set_attacks_pool_their_generations(rendered):
    _, report = rendered
    data = json.loads(parse(report).json_text)["summary"]
    assert [c["metric"] for c in data["generation_columns"]] == ["ssim", "fid", "kid"]
    assert {c["metric"]: c["direction"] for c in data["generation_columns"]}["fid"] == "↑ stronger"
    for group in data["groups"]:
        inversions = [a for a in group["attacks"] if a["attack"] == "textual-inversion"]
        assert [a["setting"] for a in inversions] == ["all generations"]
        fid = inversions[0]["generation"][1]["text"]
        assert fid == f"{100 + 20 * BUDGET[group['protection']]:.1f}"
    raw = report.read_text(encoding="utf-8")
    assert "→ textual-inversion" not in raw  # no image grid for a set attack
    assert "photoguard → sdedit @ 0.2" in raw


def test_hostile_file_names_are_text(rendered):
    _, report = rendered
    raw = report.read_text(encoding="utf-8")
    assert "<img src=x" not in raw and "<svg" not in raw
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in raw
    page = parse(report)
    assert not [attrs for tag, attrs in page.tags if "onerror" in attrs or "onload" in attrs]
    text = "".join(page.text)
    assert EVIL_NAME in text and EVIL_SKIPPED in text


def test_unavailable_and_skipped_are_listed_without_absolute_paths(rendered):
    raw = rendered[1].read_text(encoding="utf-8")
    assert "…/checkpoints/alexnet-owt-7be5be79.pth" in raw
    assert "<td>not an image (text file)</td>" in raw
    assert "bench compare …/" in raw  # the command line, with its paths shortened


def test_report_renders_from_a_copied_folder(fake_run, tmp_path):
    first = write_report(fake_run).read_text(encoding="utf-8")
    copy = shutil.copytree(fake_run, tmp_path / "elsewhere" / "copied")
    shutil.rmtree(fake_run)
    second = write_report(copy).read_text(encoding="utf-8")
    assert second.count("data:image/webp;base64,") == first.count("data:image/webp;base64,") > 10
    assert "no artifact" not in second and "artifact missing" not in second


def test_artifacts_outside_the_run_folder_or_corrupt_are_not_embedded(fake_run, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png(np.full((8, 8, 3), 255, np.uint8)))
    rows_path = fake_run / "rows.csv"
    with open(rows_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    protected = [r for r in rows if r["protection"] == "photoguard" and r["pair"] == "protected_vs_clean"]
    for row in protected:
        if row["image_name"] == "astronaut.png":
            row["artifact"] = "../../outside.png"
    attacked = next(r for r in rows if r["protection"] == "noise" and r["mimicry"] == "sdedit")
    truncated = fake_run / attacked["artifact"]
    truncated.write_bytes(truncated.read_bytes()[:60])
    with open(rows_path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    raw = write_report(fake_run).read_text(encoding="utf-8")
    assert "artifact missing or outside the run folder" in raw
    assert "unreadable artifact" in raw


def test_a_run_without_manifest_says_so(fake_run):
    (fake_run / "manifest.json").unlink()
    raw = write_report(fake_run).read_text(encoding="utf-8")
    assert "has no manifest.json" in raw


def test_text_columns_stay_text(tmp_path):
    run = write_fake_run(tmp_path / "run", names=("NA", "null"))
    names = set(load_run(run).rows["image_name"])
    assert {"NA", "null"} <= names and not load_run(run).rows["image_name"].isna().any()


def test_perturbation_is_grey_where_unchanged_and_amplified_elsewhere():
    clean = np.full((4, 4, 3), 100, np.uint8)
    protected = clean.copy()
    protected[0, 0, 0] = 103
    protected[1, 1, 1] = 97
    shown = perturbation(protected, clean)
    assert shown[0, 0, 0] == round(127.5 + 30) and shown[1, 1, 1] == round(127.5 - 30)
    unchanged = np.ones(shown.shape, bool)
    unchanged[0, 0, 0] = unchanged[1, 1, 1] = False
    assert (shown[unchanged] == shown[2, 2, 2]).all() and abs(int(shown[2, 2, 2]) - 127.5) <= 0.5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bench compare /home/u/photos --out /srv/runs/r1", "bench compare …/u/photos --out …/runs/r1"),
        ("--model=/models/sd15/unet", "--model=…/sd15/unet"),
        ("eps 8/255, unit /255, jpeg+sdedit", "eps 8/255, unit /255, jpeg+sdedit"),
        ("relative/folder/file.png", "relative/folder/file.png"),
    ],
)
def test_shorten_paths(text, expected):
    assert shorten_paths(text) == expected
    assert not re.search(r"(^|\s)/\w+/", shorten_paths(text))


def test_bench_report_rerenders(fake_run, tmp_path):
    from typer.testing import CliRunner

    from cloakbench.bench.cli.app import app

    result = CliRunner().invoke(app, ["report", str(fake_run)])
    assert result.exit_code == 0, result.output
    assert (fake_run / "report.html").stat().st_size > 10_000
    (tmp_path / "empty").mkdir()
    refused = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert refused.exit_code == 2 and "rows.csv is missing" in refused.output
