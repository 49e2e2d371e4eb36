"""Target images for the textural losses (Mist, texture-only, SDST, PhotoGuard).

Mist (Liang & Wu 2023, arXiv 2305.12683) and Xue et al. (arXiv 2311.12832) pull the
image's latent toward the latent of a high-contrast target image. Their target is a
picture that ships with their code; cloakbench draws its own, deterministically from
pixel coordinates (no randomness, no file), at any size. A config's ``target`` is:

- ``"pattern"``: :func:`pattern_image` at the size of the images being protected;
- ``"zero"``: no image, the zero latent (PhotoGuard's img2img encoder attack);
- a path to an image file, loaded through the project's intake and sized like the images.
"""

from __future__ import annotations

from pathlib import Path

import torch

PATTERN = "pattern"
ZERO = "zero"


def pattern_image(height: int, width: int) -> torch.Tensor:
    """A ``(3, H, W)`` black-and-white-and-primary pattern in ``{0, 1}``.

    Three interleaved binary structures, one per channel, so every channel has edges
    at several scales: a checkerboard (red), diagonal stripes (green), concentric
    rings (blue). The period scales with the image so a 64² and a 512² target look alike.
    """
    period = max(4, min(height, width) // 8)
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    cols = torch.arange(width).view(1, -1).expand(height, width)
    checker = ((rows // period + cols // period) % 2).float()
    stripes = (((rows + cols) // max(2, period // 2)) % 2).float()
    centre_r, centre_c = (height - 1) / 2.0, (width - 1) / 2.0
    radius = ((rows - centre_r) ** 2 + (cols - centre_c) ** 2).float().sqrt()
    rings = ((radius // period) % 2).float()
    return torch.stack([checker, stripes, rings])


def target_image(spec: str, height: int, width: int) -> torch.Tensor | None:
    """The ``(3, H, W)`` target named by ``spec``, or ``None`` for the zero latent."""
    if spec == PATTERN:
        return pattern_image(height, width)
    if spec == ZERO:
        return None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"target {spec!r} is neither 'pattern', 'zero' nor an image file")
    if height != width:
        raise ValueError(f"a target file needs square images (the intake's working size); got {height}x{width}")
    from cloakbench.core.images import load_image_file

    return load_image_file(path, height).pixels
