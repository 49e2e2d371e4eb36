"""Pixel-fidelity metrics through torchmetrics: PSNR and SSIM (and MS-SSIM where the size allows).

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
    structural_similarity_index_measure,
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


@METRICS.register("ssim")
class SSIM(Metric):
    """SSIM on RGB, Gaussian window 11, σ 1.5, data range 1 (higher = more similar)."""

    higher_is_better = True

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        _, ssim_map = structural_similarity_index_measure(
            outputs.double(),
            references.double(),
            gaussian_kernel=True,
            kernel_size=SSIM_WINDOW,
            sigma=1.5,
            data_range=1.0,
            reduction="none",
            return_full_image=True,
        )
        # torchmetrics pads the image and averages the map over the padded border too;
        # Wang et al.'s reference code (and skimage) average only where the window fits.
        border = (SSIM_WINDOW - 1) // 2
        return ssim_map[..., border:-border, border:-border].mean(dim=(1, 2, 3)).float()


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
