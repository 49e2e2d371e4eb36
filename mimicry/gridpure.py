"""GrIDPure: DiffPure on an overlapping grid of patches at the pixel model's resolution, iterated.

Zhao et al., "Can Protective Perturbation Safeguard Personal Data from Being Exploited by
Stable Diffusion?", CVPR 2024 (arXiv:2312.00084); code: ZhengyueZhao/GrIDPure. A pixel
diffusion model trained at ``R × R`` purifies an image larger than ``R`` without resizing
it away: the image is cut into ``R × R`` patches on a half-patch grid, each patch is
purified with a small ``t*``, the patches are averaged back, and the result is blended with
the iteration's input; many short iterations replace one long one, so the picture's
structure survives while the perturbation is washed out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images, quantize_8bit
from cloakbench.core.pixel_models import DEFAULT_PIXEL_MODEL, respaced_timesteps
from cloakbench.mimicry.base import MIMICRY, AttackContext
from cloakbench.mimicry.common import describe_pixel_model, note, pixel_timestep, resize_to
from cloakbench.mimicry.diffpure import PixelPurification

Box = tuple[int, int, int, int]  # (top, left, bottom, right)


def grid_starts(side: int, patch: int) -> list[int]:
    """Patch offsets along one side: every ``patch/2`` from 0 while the patch fits, plus the last fitting one.

    GrIDPure's ``get_crop_box`` (gridpure.py:64-82) for ``patch`` 256: 0, 128, 256, … and
    ``side − 256``.
    """
    stride = patch // 2
    starts = list(range(0, side - patch + 1, stride))
    if side - patch not in starts:
        starts.append(side - patch)
    return starts


def grid_boxes(height: int, width: int, patch: int) -> list[Box]:
    return [
        (top, left, top + patch, left + patch)
        for top in grid_starts(height, patch)
        for left in grid_starts(width, patch)
    ]


def corner_boxes(height: int, width: int, patch: int) -> list[Box]:
    """The four ``patch/2`` corner squares, in the order they are tiled into one ``patch × patch`` image
    (top-left, top-right, bottom-left, bottom-right; gridpure.py:84-85, 109-115)."""
    half = patch // 2
    return [
        (0, 0, half, half),
        (0, width - half, half, width),
        (height - half, 0, height, half),
        (height - half, width - half, height, width),
    ]


def corner_mosaic(images: torch.Tensor, patch: int) -> torch.Tensor:
    """The four corners of ``images`` tiled into ``(N, C, patch, patch)``: the corners get purified
    once more, since the grid covers each of them with a single patch."""
    half = patch // 2
    height, width = images.shape[-2:]
    tiles = [images[..., top:bottom, left:right] for top, left, bottom, right in corner_boxes(height, width, patch)]
    top = torch.cat(tiles[:2], dim=-1)
    bottom = torch.cat(tiles[2:], dim=-1)
    assert top.shape[-1] == 2 * half
    return torch.cat([top, bottom], dim=-2)


def merge(patches: list[torch.Tensor], boxes: list[Box], mosaic: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Average every purified patch (and the mosaic's quadrants, back at their corners) where they overlap.

    gridpure.py:87-100: sum of the patches over the count of patches covering each pixel. Every
    pixel is covered at least once, so the division is always defined; a constant input merged
    from unmodified patches is returned exactly (the merge adds no seam).
    """
    total = torch.zeros(shape, dtype=torch.float64, device=mosaic.device)
    count = torch.zeros(shape, dtype=torch.float64, device=mosaic.device)
    for patch, (top, left, bottom, right) in zip(patches, boxes):
        total[..., top:bottom, left:right] += patch.double()
        count[..., top:bottom, left:right] += 1.0
    height, width = shape[-2:]
    half = mosaic.shape[-1] // 2
    quadrants = [(0, 0), (0, half), (half, 0), (half, half)]
    for (top, left, bottom, right), (row, col) in zip(corner_boxes(height, width, 2 * half), quadrants):
        total[..., top:bottom, left:right] += mosaic[..., row : row + half, col : col + half].double()
        count[..., top:bottom, left:right] += 1.0
    return (total / count).float()


@MIMICRY.register("gridpure")
class GrIDPure(PixelPurification):
    """GrIDPure (Zhao et al., arXiv:2312.00084): 20 iterations of DiffPure at t* = 0.01·T on a half-overlapping patch grid.

    Per iteration (ZhengyueZhao/GrIDPure gridpure.py:102-122), with the pixel model ``P`` at
    its resolution ``R`` (the patch side):

    1. cut the current image ``x`` into ``R × R`` patches at offsets ``0, R/2, R, …`` and the
       last one that fits (:func:`grid_boxes`), plus one mosaic of its four ``R/2`` corners;
    2. purify each with DiffPure's step (``diffpure``: noise to ``ᾱ[t−1]``, ``t`` DDPM
       ancestral steps back; ``t = round(t_star·T)``);
    3. average the patches where they overlap (:func:`merge`);
    4. ``x ← (1 − γ)·merged + γ·x`` and round to 8 bits (they save a PIL image each iteration).

    Defaults are the authors' README command (``--pure_steps=10 --pure_iter_num=20
    --gamma=0.1``): ``t_star`` 0.01 (t = 10 of T = 1000), ``iterations`` 20, ``gamma`` 0.1.
    An image smaller than ``R`` on a side is first resized to ``R`` on that side (and back at
    the end): GrIDPure assumes images at least as large as the patch (512² with a 256² model).
    At ``H = W = R`` the grid is a single patch plus the corner mosaic.

    Deliberate differences: the 8-bit conversion rounds (``quantize_8bit``) where PIL's
    ``ToPILImage`` truncates — truncation darkens every pixel by half a level on average per
    iteration, a drift of ~10 levels over 20 iterations that is no part of the method. The pixel
    model is ``toy-pixel`` by default, not the ADM ImageNet 256² model they use. ``steps`` 0
    runs all ``t`` reverse steps (as they do); ``steps = k`` respaces them (``--quick``).
    ``context.notes["gridpure"]`` names the pixel model, the patch count and ``t``.
    """

    version = 1
    QUICK = {"steps": 3, "iterations": 2}

    @dataclass(frozen=True)
    class Config:
        pixel_model: str = DEFAULT_PIXEL_MODEL
        t_star: float = bounded(0.01, 0.0, 1.0)
        iterations: int = bounded(20, 1, 1000)
        gamma: float = bounded(0.1, 0.0, 1.0)
        steps: int = bounded(0, 0, 1000)

    def purify_once(self, images: torch.Tensor, pixel, t: int, generator: torch.Generator) -> torch.Tensor:
        """One grid pass (steps 1-3) over ``images`` whose sides are at least the patch side."""
        patch = pixel.resolution
        boxes = grid_boxes(images.shape[-2], images.shape[-1], patch)
        crops = [images[..., top:bottom, left:right] for top, left, bottom, right in boxes]
        purified = [pixel.purify(crop, t, self.config.steps, generator) for crop in crops]
        mosaic = pixel.purify(corner_mosaic(images, patch), t, self.config.steps, generator)
        return merge(purified, boxes, mosaic, images.shape)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        pixel = self.pixel_model(images, model)
        t = pixel_timestep(self.config.t_star, pixel)
        height, width = images.shape[-2:]
        work_height, work_width = max(height, pixel.resolution), max(width, pixel.resolution)
        current = quantize_8bit(resize_to(images.to(pixel.device, torch.float32), work_height, work_width))
        gamma = self.config.gamma
        for _ in range(self.config.iterations):
            merged = self.purify_once(current, pixel, t, generator)
            current = quantize_8bit((1.0 - gamma) * merged + gamma * current)
        note(context, self.name, "pixel_model", describe_pixel_model(pixel))
        note(context, self.name, "t", t)
        note(context, self.name, "reverse_steps", len(respaced_timesteps(t, self.config.steps)))
        note(context, self.name, "patches", len(grid_boxes(work_height, work_width, pixel.resolution)) + 1)
        return resize_to(current, height, width).to(device=images.device, dtype=torch.float32)
