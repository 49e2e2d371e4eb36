"""Pixel-fidelity metrics: PSNR and MS-SSIM through torchmetrics, SSIM on its own separable window.

PSNR is computed on float images in [0, 1] (the reference evaluation's uint8 PSNR wraps
around; see docs/METRICS.md). SSIM is on RGB with a Gaussian window of 11 and σ = 1.5, data
range 1, per image (Wang et al., "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 2004).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
)

from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable, check_pair


@METRICS.register("psnr")
class PSNR(Metric):
    """PSNR in dB on [0, 1] float images (higher = more similar)."""

    higher_is_better = True
    unit = "dB"

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        values = peak_signal_noise_ratio(
            outputs.double(), references.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        return values.float()


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
#: Wang et al.'s constants, for data range 1: C1 = (0.01 L)², C2 = (0.03 L)².
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> list[float]:
    """The normalised 1-D Gaussian of SSIM's window (its outer product is the 2-D window)."""
    distance = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=torch.float64)
    weights = torch.exp(-((distance / sigma) ** 2) / 2)
    return (weights / weights.sum()).tolist()


def gaussian_filter_valid(values: torch.Tensor, window: list[float]) -> torch.Tensor:
    """``values`` filtered by the separable window where it fits (``H − k + 1`` x ``W − k + 1``).

    As shifted, weighted sums accumulated in place: float64 convolution has no fast kernel on
    the CPU, and this is 30–100x faster than ``conv2d`` with the 2-D window on a 2400x1600
    picture (so ``bench protect``'s sidecar no longer spends minutes on it).
    """
    size = len(window)
    height, width = values.shape[-2] - size + 1, values.shape[-1] - size + 1
    rows = values[..., 0:height, :] * window[0]
    for offset in range(1, size):
        rows.add_(values[..., offset : offset + height, :], alpha=window[offset])
    filtered = rows[..., :, 0:width] * window[0]
    for offset in range(1, size):
        filtered.add_(rows[..., :, offset : offset + width], alpha=window[offset])
    return filtered


@METRICS.register("ssim")
class SSIM(Metric):
    """SSIM on RGB, Gaussian window 11, σ 1.5, data range 1 (higher = more similar).

    Wang et al. (IEEE TIP 2004), eq. 13, per channel, in float64; the map averaged where the
    window fits (as their reference code and skimage; torchmetrics would also average over a
    reflection-padded border). The window is applied as two 1-D passes, the same numbers as
    torchmetrics' 2-D Gaussian up to float64 rounding (``tests/test_metrics.py`` checks it).
    """

    higher_is_better = True

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        x, y = outputs.double(), references.double()
        window = gaussian_window()
        mean_x, mean_y, mean_xx, mean_yy, mean_xy = (
            gaussian_filter_valid(v, window) for v in (x, y, x * x, y * y, x * y)
        )
        # Variances clamped at 0 as torchmetrics does (rounding can make a flat patch's negative).
        var_x = (mean_xx - mean_x**2).clamp(min=0.0)
        var_y = (mean_yy - mean_y**2).clamp(min=0.0)
        covariance = mean_xy - mean_x * mean_y
        ssim_map = ((2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)) / (
            (mean_x**2 + mean_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
        )
        return ssim_map.mean(dim=(1, 2, 3)).float()


# MS-SSIM downsamples four times with an 11-pixel window: torchmetrics needs side // 16 > 10.
MS_SSIM_MIN_SIDE = 176


@METRICS.register("ms-ssim")
class MSSSIM(Metric):
    """Multi-scale SSIM (5 scales, window 11); only for images larger than 160 px a side."""

    higher_is_better = True

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        if min(outputs.shape[-2:]) < MS_SSIM_MIN_SIDE:
            raise MetricUnavailable(
                f"ms-ssim needs images of at least {MS_SSIM_MIN_SIDE} px a side; these are "
                f"{outputs.shape[-1]}x{outputs.shape[-2]}"
            )
        return multiscale_structural_similarity_index_measure(
            outputs.double(), references.double(), data_range=1.0, reduction="none"
        ).float()
