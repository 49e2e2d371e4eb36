"""Classical purifications: JPEG re-encoding, Gaussian blur, additive Gaussian noise.

They run before an attack (``jpeg+sdedit``) and try to wash an adversarial perturbation
off the published image. Each maps ``(N, 3, H, W)`` in ``[0, 1]`` to the same shape and
range. References: CopyrightMeter (Xu et al., arXiv 2411.13144) for JPEG at quality 75;
MetaCloak (Liu et al., CVPR 2024, arXiv 2311.13127) for the 7-pixel Gaussian blur; Hönig
et al., "Adversarial Perturbations Cannot Reliably Protect Artists From Generative AI"
(arXiv 2406.12027) for Gaussian noise with σ = 0.05.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry
from cloakbench.mimicry.common import note


def jpeg_round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as an 8-bit JPEG in memory with Pillow and decode it again.

    Pillow's defaults otherwise: 4:2:0 chroma subsampling at every quality and libjpeg's
    standard quantisation tables scaled by ``quality``.
    """
    import numpy as np
    from PIL import Image

    decoded = []
    for image in images:
        pixels = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as handle:
            array = np.asarray(handle.convert("RGB"), dtype=np.float32) / 255.0
        decoded.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    return torch.stack(decoded).to(images.device, torch.float32)


@MIMICRY.register("jpeg")
class JPEG(Mimicry):
    """JPEG re-encoding at quality 75 (CopyrightMeter, arXiv 2411.13144), via Pillow in memory.

    The image is quantised to 8 bits, encoded at ``quality`` (1–100; 75 by default) and
    decoded. Deterministic; the generator is unused.
    """

    version = 1
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        quality: int = bounded(75, 1, 100)

    def __call__(
        self,
        images: torch.Tensor,
        model=None,
        *,
        generator: torch.Generator | None = None,
        context: AttackContext | None = None,
    ) -> torch.Tensor:
        check_images(images, self.name)
        if not 1 <= self.config.quality <= 100:
            raise ValueError(f"jpeg: quality must be in 1..100, got {self.config.quality}")
        return jpeg_round_trip(images, self.config.quality)


def gaussian_kernel(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, centred."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).to(torch.float32)


def default_sigma(kernel_size: int) -> float:
    """OpenCV's (and torchvision's) σ for a kernel size: ``0.3·((k − 1)/2 − 1) + 0.8`` (1.4 for k = 7)."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (torchvision's border rule)."""
    images = images.to(torch.float32)  # the output contract is float32, whatever the model's dtype
    taps = gaussian_kernel(kernel_size, sigma).to(images.device)
    channels = images.shape[1]
    pad = kernel_size // 2
    horizontal = taps.view(1, 1, 1, kernel_size).expand(channels, 1, 1, kernel_size)
    vertical = taps.view(1, 1, kernel_size, 1).expand(channels, 1, kernel_size, 1)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect")
    blurred = torch.nn.functional.conv2d(padded, horizontal, groups=channels)
    blurred = torch.nn.functional.conv2d(blurred, vertical, groups=channels)
    # A convex combination of values in [0, 1] stays there; the clamp only removes rounding.
    return blurred.clamp(0.0, 1.0)


@MIMICRY.register("blur")
class Blur(Mimicry):
    """Gaussian blur with a 7-pixel kernel (MetaCloak's evaluation, arXiv 2311.13127).

    ``kernel_size`` 7 (odd); ``sigma`` 0 means OpenCV's rule for the kernel size (1.4 for
    7, what torchvision's ``gaussian_blur`` uses when σ is not given). Reflect padding.
    Deterministic; the generator is unused.
    """

    version = 1
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        kernel_size: int = bounded(7, 1, 255)
        sigma: float = bounded(0.0, 0, 100)  # 0: OpenCV's rule for the kernel size

    def __call__(
        self,
        images: torch.Tensor,
        model=None,
        *,
        generator: torch.Generator | None = None,
        context: AttackContext | None = None,
    ) -> torch.Tensor:
        check_images(images, self.name)
        size = self.config.kernel_size
        if size < 1 or size % 2 == 0:
            raise ValueError(f"blur: kernel_size must be odd and positive, got {size}")
        if size // 2 >= min(images.shape[-2:]):
            raise ValueError(f"blur: kernel {size} is too large for {tuple(images.shape[-2:])} images")
        sigma = self.config.sigma if self.config.sigma > 0 else default_sigma(size)
        note(context, self.name, "sigma", sigma)
        return gaussian_blur(images, size, sigma)


@MIMICRY.register("noise")
class GaussianNoise(Mimicry):
    """Additive Gaussian noise σ = 0.05 (Hönig et al., arXiv 2406.12027), seeded, then clamped to [0, 1].

    ``x + σ·ε`` with ε drawn from the generator; the clamp keeps a valid image (it only
    bites within a few σ of black or white).
    """

    version = 1
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        sigma: float = bounded(0.05, 0, 10)

    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        if not (self.config.sigma >= 0 and math.isfinite(self.config.sigma)):
            raise ValueError(f"noise: sigma must be >= 0, got {self.config.sigma}")
        return add_noise(images, self.config.sigma, generator)


def add_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``clamp(x + σ·ε, 0, 1)``, ε ~ N(0, I) from ``generator`` (drawn on its device)."""
    from diffusers.utils.torch_utils import randn_tensor

    images = images.to(torch.float32)
    noise = randn_tensor(images.shape, generator=generator, device=images.device, dtype=torch.float32)
    return (images + sigma * noise).clamp(0.0, 1.0)
