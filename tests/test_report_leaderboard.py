"""The report's answer first: leaderboard, intervals, worst case, sweep, categories, transfer, merging.

``write_sweep_run`` writes a synthetic run folder with what #14's harness adds: a budget
sweep (``protection_setting``), two seeds, two attack models (transfer) and image
categories. Numbers are checked against independent pandas computations on the rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cloakbench.reports.html import write_report
from cloakbench.reports.leaderboard import AttackerPoolError, leaderboard
from cloakbench.reports.run import load_run
from cloakbench.reports.stats import Estimate, bootstrap
from tests.test_report import _attack, _similarity_rows, _store, parse, write_fake_run

COLUMNS = [
    "run",
    "cell",
    "image",
    "image_name",
    "category",
    "protection",
    "protection_setting",
    "purification",
    "mimicry",
    "setting",
    "run_seed",
    "seed",
    "protect_model",
    "attack_model",
    "pair",
    "metric",
    "value",
    "unit",
    "higher_is_better",
    "status",
    "note",
    "artifact",
]
SWEEP = {"none": [0], "noise": [4, 8], "photoguard": [4, 8]}
SWEEP_ATTACKS = [("", "sdedit", "0.2"), ("", "sdedit", "0.5"), ("jpeg", "", "75")]
IMAGES = (("portrait-1.png", "portrait"), ("landscape-1.png", "landscape"))
ATTACK_MODELS = ("toy", "tiny-random")


def _cost(base: dict, seconds: float, working: float) -> list[dict]:
    return [
        dict(base, pair="cost", metric="wall_s", value=seconds, unit="s", status="ok"),
        dict(base, pair="cost", metric="peak_rss_bytes", value=2**31, unit="B", status="ok"),
        dict(base, pair="cost", metric="saved_bytes_per_step", value=working / 4, unit="B", status="ok"),
        dict(base, pair="cost", metric="working_rss_bytes", value=working, unit="B", status="ok"),
    ]


def write_sweep_run(run_dir: Path, *, size: int = 24) -> Path:
    """2 categorised images × seeds 0,1 × {none, noise eps 4/8, photoguard eps 4/8} × 3 attacks × 2 attack models."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    plan_images = []
    for index, (name, category) in enumerate(IMAGES):
        yy, xx = np.mgrid[0:size, 0:size] / size
        clean = np.clip(np.round(40 + 170 * np.stack([xx, yy, 0.5 + 0.5 * np.sin(5 * xx + index)], -1)), 0, 255)
        clean = clean.astype(np.uint8)
        image_id = hashlib.sha256(clean.tobytes()).hexdigest()
        plan_images.append({"name": name, "hash": image_id})
        for seed in (0, 1):
            rng = np.random.default_rng(100 * index + seed)
            for protection, budgets in SWEEP.items():
                for eps in budgets:
                    setting = f"eps={eps}" if protection != "none" else ""
                    sign = rng.choice([-1, 1], size=clean.shape)
                    # photoguard's pattern is smooth (survives the attack), noise's is white (does not).
                    if protection == "photoguard":
                        sign = np.repeat(np.repeat(sign[::4, ::4], 4, 0), 4, 1)[:size, :size]
                    protected = np.clip(clean.astype(int) + eps * sign, 0, 255).astype(np.uint8)
                    base = dict.fromkeys(COLUMNS, "")
                    base.update(
                        run="sweep",
                        image=image_id,
                        image_name=name,
                        category=category,
                        protection=protection,
                        protection_setting=setting,
                        seed=str(seed),
                        run_seed=str(seed),
                        protect_model="toy",
                        cell=f"p-{protection}-{eps}-{index}-{seed}",
                    )
                    rows += _similarity_rows(base, "protected_vs_clean", protected, clean, _store(run_dir, protected))
                    if eps:
                        rows += _cost(base, 0.2 * eps, 2**20 * eps * (3 if protection == "photoguard" else 1))
                    for attack_model in ATTACK_MODELS:
                        shift = 0 if attack_model == "toy" else 1
                        for purification, mimicry, strength in SWEEP_ATTACKS:
                            attack_base = dict(
                                base,
                                purification=purification,
                                mimicry=mimicry,
                                setting=strength,
                                attack_model=attack_model,
                                cell=f"a-{protection}-{eps}-{mimicry}{strength}-{attack_model}-{index}-{seed}",
                            )
                            on_clean = _attack(clean, purification, mimicry, strength, seed + shift)
                            output = _attack(protected, purification, mimicry, strength, seed + shift)
                            artifact = _store(run_dir, output)
                            if eps:
                                rows += _similarity_rows(
                                    attack_base, "attack_vs_clean_attack", output, on_clean, artifact
                                )
                            rows += _similarity_rows(attack_base, "attack_vs_clean", output, clean, artifact)
    with open(run_dir / "rows.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {
        "run": "sweep",
        "created_utc": "2026-11-28T10:00:00Z",
        "device": "cpu (test)",
        "model": {"name": "toy", "weights_hash": "e" * 64, "dtype": "float32"},
        "plan": {
            "images": plan_images,
            "protections": [{"name": p, "version": 1, "config": {}} for p in SWEEP],
            "attacks": ["sdedit", "jpeg"],
            "metrics": ["psnr", "ssim", "lpips", "linf"],
            "seed": 0,
        },
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory) -> Path:
    return write_sweep_run(tmp_path_factory.mktemp("sweep") / "run")


@pytest.fixture(scope="module")
def sweep_report(sweep_run) -> tuple[Path, dict]:
    report = write_report(sweep_run)
    return report, json.loads(parse(report).json_text)


def test_bootstrap_interval_is_seeded_and_shrinks_with_more_samples():
    rng = np.random.default_rng(3)
    few, many = rng.normal(5, 1, 8), rng.normal(5, 1, 800)
    first, again = bootstrap(few), bootstrap(few)
    assert first == again and first.low < first.mean < first.high and first.mean == pytest.approx(few.mean())
    wide, narrow = first.high - first.low, bootstrap(many).high - bootstrap(many).low
    # The interval of the mean scales as 1/sqrt(n): 100x the samples, about a tenth of the width.
    assert 5 < wide / narrow < 20
    assert bootstrap([2.0]).has_interval is False and bootstrap([]).n == 0
    assert bootstrap([1.0, math.inf]).mean == math.inf
    assert not bootstrap(rng.normal(0, 1, 50)).overlaps(bootstrap(rng.normal(3, 1, 50)))
    assert bootstrap(rng.normal(0, 1, 50)).overlaps(bootstrap(rng.normal(0.05, 1, 50)))
    assert Estimate(1.0, math.nan, math.nan, 1).overlaps(Estimate(1.5, 0.5, 2.0, 9))


def test_leaderboard_has_a_row_per_budget_with_intervals(sweep_report, sweep_run):
    _, data = sweep_report
    board = data["leaderboard"]
    assert sorted((r["protection"], r["setting"]) for r in board["rows"]) == [
        ("noise", "eps=4"),
        ("noise", "eps=8"),
        ("none", ""),
        ("photoguard", "eps=4"),
        ("photoguard", "eps=8"),
    ]
    assert board["rows"][0]["protection"] == "none"  # the reference first, then ranked (test_report_first_screen)
    assert board["attackers"] == ["sdedit@0.2", "sdedit@0.5", "jpeg@75"] == board["attack_columns"]
    rows = load_run(sweep_run).rows
    metric = board["strength_metric"]
    assert metric == "ssim"  # LPIPS is unavailable in these rows
    for entry in board["rows"][1:]:
        mine = rows[
            (rows["protection"] == entry["protection"])
            & (rows["protection_setting"] == entry["setting"])
            & (rows["pair"] == "attack_vs_clean_attack")
            & (rows["metric"] == metric)
        ]
        per_attacker = {
            name: mine[mask]["value"].mean()
            for name, mask in (
                ("sdedit@0.2", mine["setting"] == "0.2"),
                ("sdedit@0.5", mine["setting"] == "0.5"),
                ("jpeg@75", mine["purification"] == "jpeg"),
            )
        }
        # n = 2 images (the unit of the cluster bootstrap); 2 seeds × 2 attack models nested in each.
        assert all(
            cell["n"] == 2 and cell["rows"] == 8 and cell["low"] < cell["value"] < cell["high"]
            for cell in entry["attacks"]
        )
        assert [c["value"] for c in entry["attacks"]] == pytest.approx(list(per_attacker.values()))
        strongest = max(per_attacker, key=per_attacker.get)  # SSIM: the most similar output wins for the attacker
        assert entry["worst"]["attacker"] == strongest
        assert entry["worst"]["value"] == pytest.approx(per_attacker[strongest])
        assert entry["mean"]["value"] == pytest.approx(mine["value"].mean())
    # CPU memory: saved bytes per step and working memory, never the lifetime peak RSS.
    assert board["memory_labels"] == ["saved / step", "working memory"]
    photoguard8 = next(r for r in board["rows"] if r["name"] == "photoguard (eps=8)")
    assert photoguard8["memory_bytes"] == [3 * 8 * 2**20 / 4, 3 * 8 * 2**20]


def test_unseparated_differences_are_marked(sweep_report, sweep_run):
    """≈ follows the paired test: exact Wilcoxon on per-image differences against the best, Holm-corrected."""
    scipy_stats = pytest.importorskip("scipy.stats")
    _, data = sweep_report
    board = data["leaderboard"]
    rows = load_run(sweep_run).rows
    strength = rows[(rows["pair"] == "attack_vs_clean_attack") & (rows["metric"] == board["strength_metric"])]
    entries = board["rows"][1:]
    for column, name in enumerate(board["attack_columns"]):
        setting = name.partition("@")[2]
        cells = [row["attacks"][column] for row in entries]
        best = [i for i, c in enumerate(cells) if "best" in c["css"]]
        assert len(best) == 1

        def per_image(entry, setting=setting):
            mine = strength[
                (strength["protection"] == entry["protection"])
                & (strength["protection_setting"] == entry["setting"])
                & (strength["setting"] == setting)
            ]
            return mine.groupby("image")["value"].mean()

        reference = per_image(entries[best[0]])
        others = [i for i in range(len(cells)) if i != best[0]]
        raw = [scipy_stats.wilcoxon(per_image(entries[i]) - reference, method="exact").pvalue for i in others]
        holm = sorted(raw)
        adjusted = {p: max(min(1, (len(raw) - k) * q) for k, q in enumerate(holm[: holm.index(p) + 1])) for p in raw}
        for index, p in zip(others, raw):
            assert cells[index]["p_holm"] == pytest.approx(adjusted[p])
            assert (cells[index]["mark"] == "≈") == (adjusted[p] >= 0.05)


def test_the_attacker_pool_changes_the_worst_case(sweep_run):
    run = load_run(sweep_run)
    everyone = leaderboard(run)
    only_jpeg = leaderboard(run, ["jpeg"])
    assert only_jpeg["attackers"] == ["jpeg@75"]
    assert {r["worst"]["attacker"] for r in only_jpeg["rows"][1:]} == {"jpeg@75"}
    assert leaderboard(run, ["sdedit"])["attackers"] == ["sdedit@0.2", "sdedit@0.5"]
    assert leaderboard(run, ["sdedit@0.5"])["attackers"] == ["sdedit@0.5"]
    assert any(r["worst"]["attacker"] != "jpeg@75" for r in everyone["rows"][1:])
    with pytest.raises(
        AttackerPoolError, match="'diffpure' is not an attack of this run; its attacks are sdedit, jpeg"
    ):
        leaderboard(run, ["diffpure"])


def test_report_shows_curves_categories_and_transfer(sweep_report):
    report, data = sweep_report
    board = data["leaderboard"]
    assert board["categories"]["names"] == ["landscape", "portrait"]
    assert len(board["categories"]["rows"]) == 4
    transfer = board["transfer"]
    assert transfer["protect_models"] == ["toy"] and transfer["attack_models"] == ["tiny-random", "toy"]
    assert all(
        (cell["n"], cell["rows"]) == (2, 4)  # 2 images, each with 2 seeds
        for matrix in transfer["matrices"]
        for row in matrix["rows"]
        for cell in row["cells"]
    )
    raw = report.read_text(encoding="utf-8")
    for anchor in ('id="leaderboard"', 'id="categories"', 'id="transfer"', '<details class="grids">'):
        assert anchor in raw
    assert raw.index('id="leaderboard"') < raw.index('id="plots"') < raw.index('id="summary"') < raw.index('id="grids"')
    assert "Lines join each protection&#39;s budgets in sweep order." in raw
    # The summary names the worst case per protection budget, beside the mean over attackers.
    groups = {g["protection"]: g for g in data["summary"]["groups"]}
    assert set(groups) == {"none", "noise (eps=4)", "noise (eps=8)", "photoguard (eps=4)", "photoguard (eps=8)"}
    ssim = [c["metric"] for c in data["summary"]["strength_columns"]].index("ssim")
    worst = groups["photoguard (eps=8)"]["worst_case"][ssim]
    photoguard8 = next(r for r in board["rows"] if r["name"] == "photoguard (eps=8)")
    assert worst["attacker"] == photoguard8["worst"]["attacker"] and worst["attacker"] in worst["text"]


def test_bench_report_attacker_pool_flag(sweep_run, tmp_path):
    from cloakbench.bench.cli.app import app

    result = CliRunner().invoke(
        app, ["report", str(sweep_run), "--out", str(tmp_path / "pooled"), "--attacker-pool", "jpeg"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(parse(tmp_path / "pooled" / "report.html").json_text)
    assert data["leaderboard"]["attackers"] == ["jpeg@75"]
    refused = CliRunner().invoke(app, ["report", str(sweep_run), "--attacker-pool", "upscale"])
    assert refused.exit_code == 2 and "'upscale' is not an attack of this run" in refused.output
    assert "Traceback" not in refused.output


def _rewrite_manifest(run_dir: Path, **changes) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest.update(changes)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_merging_runs_of_two_models(tmp_path):
    from cloakbench.bench.cli.app import app

    first = write_fake_run(tmp_path / "cpu")
    second = write_fake_run(tmp_path / "gpu")
    _rewrite_manifest(second, model={"name": "toy", "weights_hash": "a" * 64, "dtype": "float32"}, run="gpu")
    result = CliRunner().invoke(app, ["report", str(first), str(second), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    data = json.loads(parse(tmp_path / "merged" / "report.html").json_text)
    transfer = data["leaderboard"]["transfer"]
    assert transfer["protect_models"] == ["tiny-random", "toy"] == transfer["attack_models"]
    both = pd.concat([load_run(first).rows, load_run(second).rows])
    photoguard = next(r for r in data["leaderboard"]["rows"] if r["protection"] == "photoguard")
    expected = both[
        (both["protection"] == "photoguard") & (both["pair"] == "protected_vs_clean") & (both["metric"] == "psnr")
    ]["value"].mean()
    assert photoguard["impercept"][0]["value"] == pytest.approx(expected)
    raw = (tmp_path / "merged" / "report.html").read_text(encoding="utf-8")
    assert "Merged runs" in raw and "no artifact" not in raw and "artifact missing" not in raw
    needs_out = CliRunner().invoke(app, ["report", str(first), str(second)])
    assert needs_out.exit_code == 2 and "needs --out" in needs_out.output


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("twice", "is given twice"),
        ("version", "photoguard is version 1 in one and 2 in the other"),
        ("unit", "is measured in dB (higher is better: 1) in one and ratio (higher is better: 1) in the other"),
        ("images", "they share no image"),
    ],
)
def test_runs_that_cannot_be_compared_are_refused(tmp_path, damage, expected):
    from cloakbench.bench.cli.app import app

    first = write_fake_run(tmp_path / "a")
    # Another seed draws other clean pixels: no image in common.
    second = write_fake_run(tmp_path / "b", seed=1 if damage == "images" else 0)
    if damage == "version":
        manifest = json.loads((second / "manifest.json").read_text())
        manifest["plan"]["protections"] = [{"name": "photoguard", "version": 2, "config": {}}]
        (second / "manifest.json").write_text(json.dumps(manifest))
        manifest = json.loads((first / "manifest.json").read_text())
        manifest["plan"]["protections"] = [{"name": "photoguard", "version": 1, "config": {}}]
        (first / "manifest.json").write_text(json.dumps(manifest))
    if damage == "unit":
        rows = pd.read_csv(second / "rows.csv", dtype=str, keep_default_na=False)
        rows.loc[rows["metric"] == "psnr", "unit"] = "ratio"
        rows.to_csv(second / "rows.csv", index=False)
    runs = [str(first), str(first)] if damage == "twice" else [str(first), str(second)]
    result = CliRunner().invoke(app, ["report", *runs, "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("empty", "rows.csv is empty"),
        ("binary", "rows.csv is a binary file"),
        ("foreign", "is not a cloakbench rows.csv: it lacks the column(s) protection, pair, metric, value, status"),
        ("latin1", "rows.csv is not UTF-8 text"),
        ("manifest-json", "manifest.json is damaged (not valid JSON"),
        ("manifest-type", 'manifest.json is damaged (its "plan" field is not a JSON object)'),
    ],
)
def test_damaged_run_files_get_one_sentence(tmp_path, damage, expected):
    from cloakbench.bench.cli.app import app

    run = write_fake_run(tmp_path / "run")
    rows, manifest = run / "rows.csv", run / "manifest.json"
    if damage == "empty":
        rows.write_bytes(b"")
    elif damage == "binary":
        rows.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    elif damage == "foreign":
        rows.write_text("date,amount\n2024-01-01,3\n", encoding="utf-8")
    elif damage == "latin1":
        rows.write_bytes(rows.read_bytes() + "café,\n".encode("latin-1"))
    elif damage == "manifest-json":
        manifest.write_text('{"run": "x", ', encoding="utf-8")
    else:
        manifest.write_text('{"plan": [1, 2]}', encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert expected in output and "Traceback" not in output
    assert output.startswith("error:") and output.count("error:") == 1  # one sentence (rich wraps it to the terminal)


def test_a_swept_attack_chain_is_its_own_attacker(tmp_path):
    run_dir = write_sweep_run(tmp_path / "run", size=16)
    rows = pd.read_csv(run_dir / "rows.csv", dtype=str, keep_default_na=False)
    rows["attack_setting"] = ""
    jpeg = rows["purification"] == "jpeg"
    rows.loc[jpeg, "setting"] = ""
    rows.loc[jpeg, "attack_setting"] = ["jpeg.quality=50" if i % 2 else "jpeg.quality=90" for i in range(jpeg.sum())]
    rows.to_csv(run_dir / "rows.csv", index=False)
    board = leaderboard(load_run(run_dir))
    assert board["attackers"] == ["sdedit@0.2", "sdedit@0.5", "jpeg@jpeg.quality=50", "jpeg@jpeg.quality=90"]


def test_transfer_to_one_other_model_is_a_one_cell_matrix(tmp_path):
    run_dir = write_sweep_run(tmp_path / "run", size=16)
    rows = pd.read_csv(run_dir / "rows.csv", dtype=str, keep_default_na=False)
    rows = rows[rows["attack_model"] != "toy"]  # protect on toy, attack only on tiny-random
    rows.to_csv(run_dir / "rows.csv", index=False)
    transfer = leaderboard(load_run(run_dir))["transfer"]
    assert transfer["protect_models"] == ["toy"] and transfer["attack_models"] == ["tiny-random"]
    assert all(len(m["rows"]) == 1 and m["rows"][0]["cells"][0]["n"] == 2 for m in transfer["matrices"])


def test_many_attackers_fold_into_one_column_per_attack():
    from cloakbench.reports.leaderboard import MAX_ATTACKER_COLUMNS, Attacker, attack_column_groups

    few = [Attacker("", "sdedit", s) for s in ("0.1", "0.5")] + [Attacker("jpeg", "", "75")]
    assert [name for name, _ in attack_column_groups(few)] == ["sdedit@0.1", "sdedit@0.5", "jpeg@75"]
    many = [Attacker("", "sdedit", f"0.{i}") for i in range(1, MAX_ATTACKER_COLUMNS + 1)] + [Attacker("jpeg", "", "75")]
    groups = attack_column_groups(many)
    assert [name for name, _ in groups] == ["sdedit (strongest setting)", "jpeg"]
    assert groups[0][1] == many[:-1] and groups[1][1] == many[-1:]


@pytest.mark.slow  # a real (tiny) compare run: ~20 s on an idle 2-core CPU
def test_bench_compare_passes_the_attacker_pool_to_its_report(tmp_path):
    """End to end on the seeded tiny model: the report written by `bench compare` uses the pool."""
    from PIL import Image

    from cloakbench.bench.cli.app import app

    folder = tmp_path / "images"
    folder.mkdir()
    yy, xx = np.mgrid[0:64, 0:64] / 64
    pixels = np.clip(np.round(255 * np.stack([xx, yy, 0.5 + 0.4 * np.sin(6 * xx)], -1)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "gradient.png")
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--images",
            str(folder),
            "--model",
            "tiny-random",
            "--quick",
            "--methods",
            "noise",
            "--attacks",
            "jpeg,jpeg+sdedit",
            "--metrics",
            "psnr,ssim",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--attacker-pool",
            "jpeg",
        ],
    )
    assert result.exit_code == 0, result.output
    board = json.loads(parse(tmp_path / "run" / "report.html").json_text)["leaderboard"]
    every = leaderboard(load_run(tmp_path / "run"))["attackers"]
    assert any(name.startswith("jpeg+sdedit") for name in every)
    assert board["attackers"] and all(not name.startswith("jpeg+sdedit") for name in board["attackers"])
    assert board["pool_given"] is True


def test_image_tiles_come_from_one_attack_model_and_seed(sweep_run):
    from cloakbench.reports.grids import ImageLookup

    run = load_run(sweep_run)
    lookup = ImageLookup(run)
    assert (lookup.attack_model, lookup.run_seed) == ("toy", "0")  # the protect model: no transfer in the tiles
    rows = run.rows
    image = rows["image"].iloc[0]
    for protection, budget in (("none", None), ("photoguard", "eps=8")):
        key = lookup.attacked(image, protection, "", "sdedit", "0.5", budget)
        artifact = key.partition(":")[2]
        source = rows[(rows["artifact"] == artifact) & (rows["protection"] == protection)]
        assert set(source["attack_model"]) == {"toy"} and set(source["run_seed"]) == {"0"}


def test_embedded_json_is_strict(sweep_report):
    report, _ = sweep_report

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    data = json.loads(parse(report).json_text, parse_constant=refuse)
    none = data["leaderboard"]["rows"][0]
    assert none["impercept"][0]["value"] == "inf"  # PSNR of identical images, as a string


def test_the_cost_axis_sets_amortized_beside_per_image_protections(tmp_path):
    """Strength against protect time per image: each row says how it is computed, and the summary's time
    ratio is the ratio of the protect cells' mean wall_s (computed here from rows.csv)."""
    from cloakbench.reports.plots import strength_vs_cost

    run_dir = write_fake_run(tmp_path / "run")
    table = pd.read_csv(run_dir / "rows.csv", dtype=str, keep_default_na=False)
    table.loc[table["protection"] == "noise", "protection"] = "amortized"  # the noise rows stand in for one
    table.to_csv(run_dir / "rows.csv", index=False)
    board = leaderboard(load_run(run_dir))
    kinds = {row["protection"]: row["kind"] for row in board["rows"]}
    assert kinds == {"none": "baseline", "amortized": "amortized", "photoguard": "per-image"}
    points = board["cost_axis"]["points"]
    assert [p["protection"] for p in points] == sorted(
        (p["protection"] for p in points), key=lambda name: next(q["time_s"] for q in points if q["protection"] == name)
    )
    cost = table[(table["pair"] == "cost") & (table["metric"] == "wall_s") & (table["mimicry"] == "")]
    seconds = cost.assign(value=cost["value"].astype(float)).groupby("protection")["value"].mean()
    ratio = seconds["photoguard"] / seconds["amortized"]
    assert f"{ratio:,.0f}× less time than photoguard" in board["cost_axis"]["summary"]
    plot = strength_vs_cost(load_run(run_dir))
    assert plot is not None and plot.name == "strength_vs_cost"
    assert plot.figure.axes[0].get_xscale() == "log"
    plot.encode()
    html = write_report(run_dir).read_text()
    assert "Strength vs cost" in html and "(amortized)" in html and "Cost axis" in html


#: Per-image SSIM of the edit of the protected image vs of the clean one (higher = weaker
#: protection), for four images, per protection and attacker. ``broken`` holds against every
#: fixed attacker but encoder-harden undoes it, beyond noise's adaptive worst case; ``holds``
#: is worst hit by a fixed attacker and beats noise under the adaptive ones; ``level`` is
#: above noise's mean but its interval overlaps noise's.
ADAPTIVE_CASE = {
    "noise": {
        "sdedit": [0.99, 0.99, 0.98, 0.99],
        "jpeg+sdedit": [0.98, 0.98, 0.99, 0.98],
        "encoder-harden+sdedit": [0.93, 0.94, 0.92, 0.93],
        "counter-pgd+sdedit": [0.965, 0.97, 0.975, 0.97],
    },
    "broken": {
        "sdedit": [0.70, 0.72, 0.68, 0.70],
        "jpeg+sdedit": [0.75, 0.76, 0.74, 0.75],
        "encoder-harden+sdedit": [0.99, 0.985, 0.995, 0.99],
        "counter-pgd+sdedit": [0.80, 0.82, 0.78, 0.80],
    },
    "holds": {
        "sdedit": [0.60, 0.62, 0.58, 0.60],
        "jpeg+sdedit": [0.88, 0.86, 0.90, 0.88],
        "encoder-harden+sdedit": [0.70, 0.72, 0.68, 0.70],
        "counter-pgd+sdedit": [0.75, 0.73, 0.77, 0.75],
    },
    "level": {
        "sdedit": [0.50, 0.52, 0.48, 0.50],
        "jpeg+sdedit": [0.55, 0.56, 0.54, 0.55],
        "encoder-harden+sdedit": [0.92, 1.0, 0.98, 1.02],
        "counter-pgd+sdedit": [0.60, 0.61, 0.59, 0.60],
    },
}


@pytest.mark.parametrize("higher", [True, False], ids=["similarity", "distance"])
def test_adaptive_worst_cases_pick_each_pools_strongest_attacker_and_flag_against_noise(higher):
    """Hand-built rows: the worst case of each pool is its own attacker (value and interval of that
    attacker's rows), and a protection is flagged when its adaptive worst case is weaker than noise's,
    separated when the intervals do not overlap. As a distance (``1 − SSIM``, lower = weaker) the
    same attackers and flags must come out."""
    from cloakbench.reports.leaderboard import adaptive_worst_cases, attackers
    from cloakbench.reports.run import Run
    from cloakbench.reports.stats import over_images

    metric = "ssim" if higher else "one-minus-ssim"
    images = ["a", "b", "c", "d"]
    rows = []
    for protection, by_attacker in ADAPTIVE_CASE.items():
        for label, values in by_attacker.items():
            *purification, mimicry = label.split("+")
            for image, value in zip(images, values):
                base = dict.fromkeys(COLUMNS, "")
                rows.append(
                    dict(
                        base,
                        image=image,
                        image_name=image,
                        protection=protection,
                        purification="+".join(purification),
                        mimicry=mimicry,
                        setting="0.3",
                        setting_group="0.3",
                        pair="attack_vs_clean_attack",
                        metric=metric,
                        value=value if higher else 1 - value,
                        higher_is_better="1" if higher else "0",
                        status="ok",
                    )
                )
    run = Run(Path("."), {}, pd.DataFrame(rows))
    pool = attackers(run)
    assert {a.name for a in pool} == {f"{label}@0.3" for label in ADAPTIVE_CASE["noise"]}
    found = adaptive_worst_cases(run, pool, metric, higher)
    assert found is not None
    assert set(found["adaptive"]) == {"encoder-harden+sdedit@0.3", "counter-pgd+sdedit@0.3"}
    assert set(found["non_adaptive"]) == {"sdedit@0.3", "jpeg+sdedit@0.3"}

    def expected(protection: str, label: str) -> Estimate:
        values = ADAPTIVE_CASE[protection][label]
        return over_images([v if higher else 1 - v for v in values], images)

    noise = expected("noise", "counter-pgd+sdedit")  # noise's adaptive worst case
    assert found["noise"]["value"] == pytest.approx(noise.mean)
    by_name = {row["name"]: row for row in found["rows"]}
    assert set(by_name) == {"noise", "broken", "holds", "level"}
    # (non-adaptive worst, adaptive worst) per protection, read off ADAPTIVE_CASE's means
    chosen = {
        "noise": ("sdedit", "counter-pgd+sdedit"),
        "broken": ("jpeg+sdedit", "encoder-harden+sdedit"),
        "holds": ("jpeg+sdedit", "counter-pgd+sdedit"),
        "level": ("jpeg+sdedit", "encoder-harden+sdedit"),
    }
    for protection, labels in chosen.items():
        for shown, label in zip(by_name[protection]["cells"], labels):
            truth = expected(protection, label)
            assert shown["attacker"] == f"{label}@0.3", (protection, shown["attacker"])
            assert shown["value"] == pytest.approx(truth.mean)
            assert (shown["low"], shown["high"]) == pytest.approx((truth.low, truth.high))
            assert shown["low"] < shown["value"] < shown["high"]
    flags = {name: (row["below_noise"], row["separated"]) for name, row in by_name.items()}
    assert flags == {
        "noise": (False, False),  # the control itself is never flagged
        "broken": (True, True),
        "holds": (False, False),
        "level": (True, False),  # weaker than noise on the mean, intervals overlap
    }


def test_each_cell_names_its_own_interval_method():
    """Below 20 images the interval is Student's t, from 20 the cluster bootstrap: the cell's tag says which."""
    from cloakbench.reports import stats
    from cloakbench.reports.leaderboard import cell

    two = stats.over_images([0.9, 0.95], ["a", "b"])
    many = stats.over_images([0.9 + 0.001 * i for i in range(25)], [f"im{i}" for i in range(25)])
    assert (cell(two, "ssim")["interval_tag"], cell(many, "ssim")["interval_tag"]) == ("t", "CB")
    assert cell(two, "ssim")["interval_name"] == stats.STUDENT_T
