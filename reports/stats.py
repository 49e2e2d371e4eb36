"""Means with 95 % intervals clustered by image, and paired tests against the best row (docs/METRICS.md, "Statistics").

**The unit is the image.** Every protection is run on the same images, and a run's seeds
(``--seeds``) and an attack's settings repeat the measurement *of one image*: rows of one image
are not independent draws, and treating the (image, seed) rows as a sample of size images ×
seeds makes the interval too narrow (#27: two images, two seeds, an interval 0.924–0.924).
So every number the report ranks is the **mean of per-image means** (each image's rows,
seeds and settings, averaged first; :func:`per_image_means`), and its interval is the
**cluster bootstrap** over images (:func:`over_images`, from :data:`STUDENT_T_BELOW` images): :data:`RESAMPLES` resamples of
the images with replacement, each taking its per-image mean whole (seeds nested inside the
image, never resampled apart from it), the 2.5th and 97.5th percentiles of the resampled
means (the percentile interval; Efron & Tibshirani, *An Introduction to the Bootstrap*,
1993, ch. 13; resampling clusters, Davison & Hinkley, *Bootstrap Methods and their
Application*, 1997, §3.8; Field & Welsh, "Bootstrapping clustered data", JRSS-B 69(3), 2007).
``n`` is the number of images; with one image there is no interval.

**Few images: Student's t.** A percentile bootstrap over few clusters is too narrow: it can
never leave the range of the per-image means (with two images it is exactly the interval
between them), and its quantiles are the normal's where the sampling distribution of a mean
of G cluster means has t's heavier tails with G − 1 degrees of freedom. Below
:data:`STUDENT_T_BELOW` images the interval is therefore ``mean ± t(0.975, n − 1) · s / √n`` on
the per-image means (:func:`student_t_interval`): the few-cluster recommendation of Cameron &
Miller ("A practitioner's guide to cluster-robust inference", J. Human Resources 50(2), 2015,
§VI: t(G − 1) critical values with few clusters; Cameron, Gelbach & Miller, REStat 90(3), 2008).
It is not clipped to the metric's range: an interval past 1 for SSIM says how little n images hold.
Every estimate names the method it used (:attr:`Estimate.method`), on every cell of the report.

**"≈" is a paired test.** Two protections are compared on the same images: the per-image
differences ``d_i = a_i - b_i`` of their per-image means, tested by the exact **Wilcoxon
signed-rank test** (Wilcoxon, "Individual comparisons by ranking methods", Biometrics
Bulletin 1(6), 1945; zero differences dropped, ties given mid-ranks, the exact null
distribution of the signed-rank sum by enumeration, :func:`wilcoxon_signed_rank`), two-sided,
and the p-values of a column's comparisons against its best row corrected by **Holm's
step-down method** (Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
Statist. 6(2), 1979; :func:`holm`), which controls the family-wise error rate at
:data:`ALPHA` without assuming the comparisons independent (they share the best row).
Why Wilcoxon rather than a paired bootstrap: with the 2–10 images of a typical run a
bootstrap of the mean difference has almost no resamples to draw from (two images give three
distinct resampled means) and its interval excludes zero whenever both images agree in sign,
claiming more than the data hold; the exact signed-rank test needs no distributional
assumption and says plainly that fewer than six images cannot separate anything at 5 %
(its smallest two-sided p-value is ``2 / 2**n``). The generator is seeded (:data:`SEED`),
so a report rendered twice shows the same intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
ALPHA = 0.05
#: Below this many images the interval is Student's t on the per-image means, from it the cluster bootstrap.
STUDENT_T_BELOW = 20
#: The two interval methods, as each estimate and the report name them.
CLUSTER_BOOTSTRAP = "95 % cluster bootstrap over images"
STUDENT_T = "95 % Student t over per-image means"
#: How the report names its intervals in general (the legend and the exports).
INTERVAL_METHOD = (
    f"95 % intervals over images: Student t on per-image means below {STUDENT_T_BELOW} images, "
    "cluster bootstrap (percentile) from there"
)
TEST_METHOD = "exact Wilcoxon signed-rank test on per-image differences, Holm-corrected"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean of ``n`` per-image means and its interval ``[low, high]`` (NaN when ``n < 2``).

    ``rows``: how many rows (images × seeds × settings) the per-image means average;
    ``images`` and ``image_means``: the per-image means themselves, for paired tests.
    """

    mean: float
    low: float
    high: float
    n: int
    rows: int = 0
    images: tuple[str, ...] = ()
    image_means: tuple[float, ...] = ()
    #: How ``[low, high]`` was computed (:data:`STUDENT_T`, :data:`CLUSTER_BOOTSTRAP`, ...); "" without one.
    method: str = ""

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def by_image(self) -> dict[str, float]:
        return dict(zip(self.images, self.image_means))

    def overlaps(self, other: Estimate) -> bool:
        """True when the two intervals share a point (an estimate without one is the point of its mean)."""
        low_a, high_a = (self.low, self.high) if self.has_interval else (self.mean, self.mean)
        low_b, high_b = (other.low, other.high) if other.has_interval else (other.mean, other.mean)
        return low_a <= high_b and low_b <= high_a


EMPTY = Estimate(math.nan, math.nan, math.nan, 0)


def _mean(array: np.ndarray) -> float:
    """The mean; ±inf when an infinite value is present (PSNR of identical images)."""
    if np.isfinite(array).all():
        return float(array.mean())
    return float(np.inf if (array == np.inf).any() else -np.inf)


def _percentile_interval(array: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, array.size, size=(resamples, array.size))
    means = array[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap(values, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED) -> Estimate:
    """Mean of ``values`` and the percentile bootstrap treating each value as an independent draw.

    The report ranks with :func:`over_images`; this one is kept to show (in the
    leaderboard's note) how much narrower an interval that ignores the images would be.
    """
    array = np.asarray(list(values), dtype=np.float64)
    n = int(array.size)
    if n == 0:
        return EMPTY
    mean = _mean(array)
    if n < 2 or not np.isfinite(array).all():
        return Estimate(mean, math.nan, math.nan, n, n)
    low, high = _percentile_interval(array, resamples, confidence, seed)
    return Estimate(mean, low, high, n, n, method="95 % bootstrap over rows (each row an independent draw)")


def per_image_means(values: Iterable[float], images: Iterable[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Each image's mean of its values (seeds, settings), images in sorted order."""
    groups: dict[str, list[float]] = {}
    for value, image in zip(values, images):
        groups.setdefault(str(image), []).append(float(value))
    names = tuple(sorted(groups))
    return names, np.asarray([_mean(np.asarray(groups[name])) for name in names], dtype=np.float64)


def over_images(
    values: Iterable[float],
    images: Iterable[str],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Estimate:
    """Mean of per-image means (seeds nested in the image) and its interval over images (:func:`from_image_means`)."""
    values = list(values)
    names, means = per_image_means(values, images)
    return from_image_means(names, means, rows=len(values), resamples=resamples, confidence=confidence, seed=seed)


def from_image_means(
    names: Sequence[str],
    means: np.ndarray,
    *,
    rows: int,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Estimate:
    """The estimate of already computed per-image means: Student's t below :data:`STUDENT_T_BELOW`
    images, else the cluster bootstrap (see the module docstring)."""
    means = np.asarray(means, dtype=np.float64)
    n = int(means.size)
    if n == 0:
        return EMPTY
    mean = _mean(means)
    if n < 2 or not np.isfinite(means).all():
        return Estimate(mean, math.nan, math.nan, n, rows, tuple(names), tuple(means.tolist()))
    if n < STUDENT_T_BELOW:
        low, high = student_t_interval(means, confidence)
        method = STUDENT_T
    else:
        low, high = _percentile_interval(means, resamples, confidence, seed)
        method = CLUSTER_BOOTSTRAP
    return Estimate(mean, low, high, n, rows, tuple(names), tuple(means.tolist()), method)


def student_t_interval(means: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``mean ± t((1 + confidence) / 2, n − 1) · s / √n`` of ``n ≥ 2`` per-image means (``s``: sample sd)."""
    from scipy.stats import t

    n = means.size
    half = float(t.ppf((1.0 + confidence) / 2.0, n - 1)) * float(means.std(ddof=1)) / math.sqrt(n)
    centre = float(means.mean())
    return centre - half, centre + half


def mean_over_groups(estimates: Sequence[Estimate]) -> Estimate:
    """Per image, the mean over ``estimates`` (attackers) of their per-image means; then the interval over images.

    Only images every estimate has count (an attacker missing on an image would otherwise
    change what that image's mean averages). Each attacker weighs the same, whatever its rows.
    """
    present = [e for e in estimates if e.n]
    if not present:
        return EMPTY
    common = sorted(set.intersection(*(set(e.images) for e in present)))
    if not common:
        return EMPTY
    tables = [e.by_image() for e in present]
    means = np.asarray([_mean(np.asarray([table[image] for table in tables])) for image in common])
    return from_image_means(common, means, rows=sum(e.rows for e in present))


def wilcoxon_signed_rank(differences: Iterable[float]) -> float:
    """Two-sided exact p-value of the Wilcoxon signed-rank test that the differences are centred on zero.

    Zeros are dropped (Wilcoxon's treatment); tied absolute values get their mid-rank. The
    null distribution of the sum of positive ranks is exact: every sign pattern is equally
    likely, counted by a convolution over the (doubled, so integer) ranks. No difference
    left: p = 1.
    """
    d = np.asarray([x for x in differences if x != 0 and math.isfinite(x)], dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return 1.0
    order = np.argsort(np.abs(d), kind="mergesort")
    magnitudes = np.abs(d)[order]
    ranks = np.empty(n, dtype=np.float64)
    start = 0
    while start < n:  # mid-ranks for ties
        stop = start
        while stop + 1 < n and magnitudes[stop + 1] == magnitudes[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    doubled = np.rint(2 * ranks).astype(int)
    counts = np.zeros(int(doubled.sum()) + 1, dtype=np.float64)
    counts[0] = 1.0
    for rank in doubled:  # each rank joins the positive sum or not, with probability 1/2
        shifted = np.zeros_like(counts)
        shifted[rank:] = counts[: counts.size - rank]
        counts = counts + shifted
    probabilities = counts / counts.sum()
    observed = int(doubled[d > 0].sum())
    lower = probabilities[: observed + 1].sum()
    upper = probabilities[observed:].sum()
    return float(min(1.0, 2.0 * min(lower, upper)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A row against the best of its column: paired images, raw and Holm-adjusted p, and the verdict."""

    images: int
    p_value: float
    adjusted: float

    @property
    def separated(self) -> bool:
        return self.adjusted < ALPHA


def paired_differences(candidate: Estimate, best: Estimate) -> list[float]:
    """Per-image differences ``candidate - best`` on the images both were measured on."""
    mine, theirs = candidate.by_image(), best.by_image()
    return [mine[image] - theirs[image] for image in sorted(set(mine) & set(theirs))]


def compare_to_best(candidates: Sequence[Estimate], best: Estimate) -> list[Comparison]:
    """The paired test of every candidate against ``best``, Holm-corrected over the candidates."""
    differences = [paired_differences(candidate, best) for candidate in candidates]
    raw = [wilcoxon_signed_rank(d) for d in differences]
    return [Comparison(len(d), p, q) for d, p, q in zip(differences, raw, holm(raw))]
