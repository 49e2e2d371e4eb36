"""Means with 95 % bootstrap intervals, and whether two intervals separate.

The report compares protections on a handful of images and seeds, so every number it
ranks carries its uncertainty (README, "The report"): the sample is the set of ok rows behind
the number, one per image × seed (× model pair), and the interval is the percentile
bootstrap of their mean — :data:`RESAMPLES` resamples with replacement, the 2.5th and
97.5th percentiles of the resampled means (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13). The generator is seeded (:data:`SEED`), so a report rendered
twice from the same rows shows the same intervals.

Two numbers are "separated" when their intervals do not overlap; the report marks
differences that are not separated instead of ranking them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` values and its bootstrap interval ``[low, high]`` (NaN when ``n < 2``)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def overlaps(self, other: Estimate) -> bool:
        """True when the two intervals share a point (the difference is not separated).

        An estimate without an interval (one sample, or infinite values) is treated as
        the single point of its mean.
        """
        low_a, high_a = (self.low, self.high) if self.has_interval else (self.mean, self.mean)
        low_b, high_b = (other.low, other.high) if other.has_interval else (other.mean, other.mean)
        return low_a <= high_b and low_b <= high_a


def bootstrap(values, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED) -> Estimate:
    """Mean of ``values`` and its percentile-bootstrap interval.

    Infinite values (PSNR of identical images) make the mean infinite; no interval is
    drawn then. One value has no interval. NaN values must be removed by the caller.
    """
    array = np.asarray(list(values), dtype=np.float64)
    n = int(array.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(array.mean()) if np.isfinite(array).all() else float(np.inf if (array == np.inf).any() else -np.inf)
    if n < 2 or not np.isfinite(array).all():
        return Estimate(mean, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(resamples, n))
    means = array[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Estimate(mean, float(low), float(high), n)
