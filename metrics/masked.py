"""Strength measured where the attack acted: the masked region of an inpainting output.

Inpainting (mimicry/inpaint.py) repaints the masked region and pastes the kept pixels back
from its input — the *protected* image. Compared over the whole image, its output therefore
differs from the clean twin's wherever the protection perturbed the kept pixels, whether or
not the protection changed what the attack made: the whole-image SSIM tracks the
perturbation's size, not the protection's effect (#27: AdvDM 0.788 → 0.843, PhotoGuard
0.900 → 0.924, SDS(−) 0.978 → 0.983 when measured only where the attack acted). So a masked
attack's strength metrics are computed on the region it repainted (:func:`region_pair`), under
the metric's own name, and the whole-image value is kept as a second metric named
``<metric>-whole`` (:func:`whole_image_name`).

The region of one image is the bounding box of its mask (the smallest rectangle holding every
repainted pixel, so window metrics — SSIM, LPIPS — see the repainted content in its own
neighbourhood); kept pixels inside that box are taken from the reference in both images, so
they add no difference. For the default centre-box mask the box is the mask and nothing is
filled; for an irregular mask the filled pixels are identical in both images, which raises
SSIM towards 1 by their share of the box (a difference-free area), the same for every
protection. A metric that needs a larger image than the box (MS-SSIM needs 160 px) is
unavailable there, with its reason.
"""

from __future__ import annotations

import torch

WHOLE_SUFFIX = "-whole"


def whole_image_name(metric: str) -> str:
    """The name of the whole-image value of ``metric`` for a masked attack (``ssim`` -> ``ssim-whole``)."""
    return metric + WHOLE_SUFFIX


def is_whole_image(metric: str) -> bool:
    return metric.endswith(WHOLE_SUFFIX)


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (exclusive ends) of the pixels where ``mask >= 0.5``; ValueError if none."""
    repainted = mask.reshape(mask.shape[-2], mask.shape[-1]) >= 0.5
    rows = torch.nonzero(repainted.any(dim=1)).flatten()
    columns = torch.nonzero(repainted.any(dim=0)).flatten()
    if rows.numel() == 0:
        raise ValueError("the mask repaints no pixel: there is no region to measure")
    return int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1


def region_pair(
    outputs: torch.Tensor, references: torch.Tensor, masks: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image, ``(output, reference)`` cropped to its mask's box, kept pixels taken from the reference.

    ``outputs`` and ``references`` are ``(N, 3, H, W)``; ``masks`` ``(N, 1, H, W)`` (or one mask
    for all), 1 = repainted. Each returned pair is ``(1, 3, h, w)``: boxes differ between images,
    so a metric is applied per pair.
    """
    if masks.shape[0] == 1 and outputs.shape[0] > 1:
        masks = masks.expand(outputs.shape[0], -1, -1, -1)
    if masks.shape[0] != outputs.shape[0] or masks.shape[-2:] != outputs.shape[-2:]:
        raise ValueError(
            f"masks {tuple(masks.shape)} do not match the outputs {tuple(outputs.shape)}: one (1, H, W) mask per image"
        )
    pairs = []
    for output, reference, mask in zip(outputs, references, masks.to(outputs.device)):
        top, bottom, left, right = mask_box(mask)
        repainted = (mask >= 0.5).to(output.dtype)
        kept_from_reference = output * repainted + reference * (1 - repainted)
        crop = (slice(None), slice(top, bottom), slice(left, right))
        pairs.append((kept_from_reference[crop].unsqueeze(0), reference[crop].unsqueeze(0)))
    return pairs


def region_values(metric, outputs: torch.Tensor, references: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``metric`` (a pair metric: ``metric(outputs, references) -> (N,)``) on each image's masked region."""
    return torch.cat(
        [metric(output, reference).reshape(-1) for output, reference in region_pair(outputs, references, masks)]
    )
