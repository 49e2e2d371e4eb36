"""Target images for the textural losses (Mist, texture-only, SDST, PhotoGuard).

Mist (Liang & Wu 2023, arXiv 2305.12683) and Xue et al. (arXiv 2311.12832) pull the
image's latent toward the latent of a high-contrast target image. Their target is a
picture that ships with their code: xavihart/Diff-Protect ``test_images/target/MIST.png``
(1440², the word "MIST" in white block letters on black, tiled 3 across and 9 down,
every pixel near 0 or 255). cloakbench cannot ship that file; it renders a target of
the same kind offline, at any size (no randomness, no download). A config's ``target`` is:

- ``"text"``: :func:`text_image`, tiled white-on-black "MIST" text rendered with
  Pillow's bundled font (``ImageFont.load_default``) — the reference's kind of target,
  the default of ``texture``, ``mist`` and ``sdst-``;
- ``"pattern"``: :func:`pattern_image`, this project's earlier geometric pattern
  (a checkerboard, stripes and rings), kept for comparison;
- ``"zero"``: no image, the zero latent (PhotoGuard's img2img encoder attack);
- a path to an image file, loaded through the project's intake and sized like the images.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

TEXT = "text"
PATTERN = "pattern"
ZERO = "zero"
#: What the reference's ``MIST.png`` spells, tile after tile.
TEXT_WORD = "MIST"
#: Tiles across and down, as in the reference's ``MIST.png`` (3 × 9 on 1440²).
TEXT_TILES_ACROSS, TEXT_TILES_DOWN = 3, 9


@functools.lru_cache(maxsize=4)
def _word_mask(word: str) -> np.ndarray:
    """``word`` drawn once with Pillow's bundled font, cropped to its ink: a boolean ``(h, w)`` mask."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    canvas = Image.new("L", (16 * len(word) + 16, 32), 0)
    ImageDraw.Draw(canvas).text((4, 4), word, fill=255, font=font)
    # Two levels only: the reference's target is black and white, so no anti-aliasing grey.
    ink = np.asarray(canvas) >= 128
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def text_image(height: int, width: int) -> torch.Tensor:
    """A ``(3, H, W)`` white-on-black tiled text target in ``{0, 1}``, like the reference's ``MIST.png``.

    The word is scaled (nearest neighbour, so it stays two-level) to fill most of a tile
    of ``W/3 × H/9`` with a black margin, and the tile repeated; the same three-by-nine
    layout at every size, so a 64² and a 512² target look alike.
    """
    tile_h, tile_w = max(2, height // TEXT_TILES_DOWN), max(2, width // TEXT_TILES_ACROSS)
    mask = torch.from_numpy(_word_mask(TEXT_WORD).astype(np.float32))[None, None]
    inner_h, inner_w = max(1, round(tile_h * 0.8)), max(1, round(tile_w * 0.9))
    glyphs = torch.nn.functional.interpolate(mask, size=(inner_h, inner_w), mode="nearest")[0, 0]
    tile = torch.zeros(tile_h, tile_w)
    top, left = (tile_h - inner_h) // 2, (tile_w - inner_w) // 2
    tile[top : top + inner_h, left : left + inner_w] = glyphs
    reps_h, reps_w = -(-height // tile_h), -(-width // tile_w)
    plane = tile.repeat(reps_h, reps_w)[:height, :width]
    return plane.unsqueeze(0).expand(3, -1, -1).contiguous()


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
    if spec == TEXT:
        return text_image(height, width)
    if spec == PATTERN:
        return pattern_image(height, width)
    if spec == ZERO:
        return None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"target {spec!r} is neither 'text', 'pattern', 'zero' nor an image file")
    if height != width:
        raise ValueError(f"a target file needs square images (the intake's working size); got {height}x{width}")
    from cloakbench.core.images import load_image_file

    return load_image_file(path, height).pixels
