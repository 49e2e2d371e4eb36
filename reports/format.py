"""Number and label formatting for the report (numbers stay numbers until here)."""

from __future__ import annotations

import math

METRIC_LABELS = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "ms-ssim": "MS-SSIM",
    "lpips": "LPIPS",
    "clip-sim": "CLIP sim",
    "linf": "L∞",
    "l2": "L2",
    "fid": "FID",
    "kid": "KID",
    "amplification": "amplification",
    "brisque": "BRISQUE",
    "fdfr": "FDFR",
    "ism": "ISM",
    "clip-iqa": "CLIP-IQA",
    "liqe": "LIQE",
}
DECIMALS = {
    "psnr-whole": 2,
    "ssim-whole": 3,
    "lpips-whole": 3,
    "psnr": 2,
    "ssim": 3,
    "ms-ssim": 3,
    "lpips": 3,
    "clip-sim": 3,
    "linf": 1,
    "l2": 1,
    "fid": 1,
    "kid": 4,
    "brisque": 1,
    "fdfr": 2,
    "ism": 3,
    "clip-iqa": 3,
    "liqe": 2,
}


def ordered(metrics) -> list[str]:
    """Metric names in the order of :data:`METRIC_LABELS`, the rest alphabetically."""
    present = set(metrics)
    return [m for m in METRIC_LABELS if m in present] + sorted(present - set(METRIC_LABELS))


def metric_label(metric: str, unit: str = "") -> str:
    if metric.endswith("-whole"):  # a masked attack's whole-image value (metrics/masked.py)
        base = metric.removesuffix("-whole")
        return f"{metric_label(base, unit)} (whole image)"
    label = METRIC_LABELS.get(metric, metric)
    return f"{label} ({unit})" if unit and unit not in ("ratio",) else label


def number(value: float | None, metric: str = "") -> str:
    """Fixed decimals for known metrics, three significant digits otherwise; ∞ and — spelled out."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if metric in DECIMALS:
        return f"{value:.{DECIMALS[metric]}f}"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


def seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def nbytes(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"
