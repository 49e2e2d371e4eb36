"""The report's statistics (#27): intervals clustered by image, a mean that does not pool attackers, paired ≈.

Each is checked against an independent computation: the exact Wilcoxon p-value against scipy
(no ties) and against brute-force enumeration of every sign pattern (ties), Holm against its
definition, the cluster bootstrap against its two-image closed form.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from cloakbench.reports import stats
from cloakbench.reports.leaderboard import Attacker, cell, mark_column, pooled_over_attackers
from tests.test_report_leaderboard import write_sweep_run


@pytest.mark.parametrize("seeds", [2, 3])
def test_with_two_images_the_interval_is_wider_than_the_image_seed_bootstrap(seeds):
    # Two images × seeds: the seeds of an image agree closely, the images differ.
    values = [v for base in (0.920, 0.940) for v in (base + 0.001 * s for s in range(seeds))]
    images = [name for name in ("a", "b") for _ in range(seeds)]
    found, naive = stats.over_images(values, images), stats.bootstrap(values)
    assert (found.n, found.rows, naive.n) == (2, 2 * seeds, 2 * seeds)
    assert found.mean == pytest.approx(np.mean(values)) and found.method == stats.STUDENT_T
    # Student's t with one degree of freedom on the two per-image means: mean ± 12.706 · s / √2.
    a, b = 0.920 + 0.0005 * (seeds - 1), 0.940 + 0.0005 * (seeds - 1)
    half = 12.7062047 * np.std([a, b], ddof=1) / np.sqrt(2)
    assert (found.low, found.high) == pytest.approx(((a + b) / 2 - half, (a + b) / 2 + half))
    assert found.high - found.low > naive.high - naive.low
    assert stats.over_images([0.5, 0.6], ["a", "a"]).has_interval is False  # one image: no interval


def test_from_twenty_images_the_interval_is_the_cluster_bootstrap_and_close_to_t():
    rng = np.random.default_rng(3)
    means = rng.normal(0.8, 0.05, size=stats.STUDENT_T_BELOW)
    names = [f"image{i:02d}" for i in range(means.size)]
    found = stats.from_image_means(names, means, rows=means.size)
    assert found.method == stats.CLUSTER_BOOTSTRAP
    seeds_apart = stats.from_image_means(names, means[:-1], rows=means.size - 1)
    assert seeds_apart.method == stats.STUDENT_T
    # The percentile bootstrap of the mean resamples whole images: its interval stays inside their range,
    # and at 20 images it is within a third of the t interval's width.
    low, high = stats.student_t_interval(means)
    assert means.min() <= found.low < found.high <= means.max()
    assert abs((found.high - found.low) - (high - low)) < (high - low) / 3


def _brute_force_wilcoxon(d):
    d = [x for x in d if x != 0]
    ranks = pd.Series(np.abs(d)).rank().to_numpy()  # mid-ranks
    observed = ranks[np.asarray(d) > 0].sum()
    sums = [sum(r for r, sign in zip(ranks, signs) if sign) for signs in itertools.product((0, 1), repeat=len(d))]
    lower = np.mean([s <= observed + 1e-9 for s in sums])
    upper = np.mean([s >= observed - 1e-9 for s in sums])
    return min(1.0, 2 * min(lower, upper))


@pytest.mark.parametrize("seed", range(6))
def test_the_signed_rank_test_is_exact(seed):
    rng = np.random.default_rng(seed)
    n = 3 + seed * 2
    d = rng.normal(0.4, 1.0, n)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert stats.wilcoxon_signed_rank(d) == pytest.approx(scipy_stats.wilcoxon(d, method="exact").pvalue)
    tied = np.round(d * 2) / 2  # ties and zeros
    assert stats.wilcoxon_signed_rank(tied) == pytest.approx(_brute_force_wilcoxon(tied))
    # Fewer than six images cannot reach 5 % two-sided: the smallest p is 2 / 2**n.
    assert stats.wilcoxon_signed_rank([1, 2, 3, 4, 5]) == pytest.approx(2 / 2**5)
    assert stats.wilcoxon_signed_rank([0.0, 0.0]) == 1.0


def test_holm_is_the_step_down_correction():
    raw = [0.01, 0.04, 0.03, 0.5]
    assert stats.holm(raw) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([]) == []


def test_the_mark_is_a_paired_test_against_the_best():
    """Eight images: a protection worse on every image is separated; one that is worse on some is not."""
    rng = np.random.default_rng(0)
    images = [f"i{k}" for k in range(8)]
    base = rng.uniform(0.6, 0.9, 8)
    best = base
    close = base + np.array([0.02, -0.01, 0.015, -0.012, 0.01, -0.008, 0.006, -0.004])  # as good, up to noise
    worse = base + 0.05 + rng.uniform(0, 0.01, 8)  # higher similarity on every image = weaker
    estimates = [stats.over_images(v, images) for v in (best, close, worse)]
    # Overlapping intervals would call "worse" tied too: the images differ much more than the protections.
    assert estimates[2].overlaps(estimates[0])
    cells = [cell(e, "ssim") for e in estimates]
    mark_column(cells, estimates, ["best", "close", "worse"], better_high=False, skip=[False] * 3)
    assert "best" in cells[0]["css"]
    assert cells[1]["mark"] == "≈" and cells[2]["mark"] == ""
    expected = stats.holm([stats.wilcoxon_signed_rank(close - best), stats.wilcoxon_signed_rank(worse - best)])
    assert [cells[1]["p_holm"], cells[2]["p_holm"]] == pytest.approx(expected)


def test_the_mean_over_attackers_is_a_mean_of_per_image_means():
    """An attack with four settings is one attacker: it weighs what an attack with one setting weighs."""
    rows = []
    for image, offset in (("a", 0.0), ("b", 0.1)):
        for seed in ("0", "1"):
            for setting in ("0.1", "0.2", "0.3", "0.5"):
                rows.append(("", "sdedit", setting, image, seed, 0.9 + offset))
            rows.append(("", "inpaint", "", image, seed, 0.5 + offset))
    frame = pd.DataFrame(rows, columns=["purification", "mimicry", "setting_group", "image", "run_seed", "value"])
    frame["pair"], frame["metric"], frame["status"] = "attack_vs_clean_attack", "ssim", "ok"
    pool = [Attacker("", "sdedit", s) for s in ("0.1", "0.2", "0.3", "0.5")] + [Attacker("", "inpaint", "")]
    found = pooled_over_attackers(frame, pool, "ssim")
    assert found.n == 2  # images, not 20 rows
    # Per image: (4 × 0.9 + 0.5) / 5 attacker-settings, each setting an attacker of the pool.
    assert found.mean == pytest.approx(np.mean([(4 * 0.9 + 0.5) / 5, (4 * 1.0 + 0.6) / 5]))
    assert not math.isclose(found.mean, frame["value"].mean() + 1)  # sanity: a number, not NaN


def test_the_leaderboard_note_sets_both_intervals_side_by_side(tmp_path):
    from cloakbench.reports.leaderboard import leaderboard
    from cloakbench.reports.run import load_run

    board = leaderboard(load_run(write_sweep_run(tmp_path / "run")))
    example = board["interval_example"]
    assert "with n = 2 images" in example and "as independent draws would give" in example
    assert stats.STUDENT_T in example and "Student's t" in example  # the method the cell used, and why
    assert board["interval_method"] == stats.INTERVAL_METHOD
    for row in board["rows"][1:]:
        for found in [*row["attacks"], row["mean"], row["worst"], *row["impercept"]]:
            # Every cell names its own method: two images are below the t threshold.
            assert found["n_text"] == "n=2" and f"{stats.STUDENT_T}:" in found["title"]
