"""The perturbation budget as spent: the change between two images in 8-bit levels.

Every budget in cloakbench is stated in 8-bit units of ``[0, 1]`` images: ``eps = 16``
means ``16/255`` (docs/PROTECTIONS.md, "Budget units"). What a reader of the published
files sees is measured here, once, for the budget metrics (``linf``, ``l2``) and the
``bench protect`` sidecar.
"""

from __future__ import annotations

import torch


def change_in_levels(outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """``(outputs − references) × 255`` in float64, snapped to whole levels for 8-bit images.

    A float32 ``k/255`` is off by up to ~1e-5 of a level, so an exact 2-level change
    would read 2.0000074 and look like a broken budget; images on the 8-bit grid are
    differenced as integers instead.
    """
    difference = (outputs.double() - references.double()) * 255.0
    on_grid = all(
        torch.allclose(x.double() * 255.0, torch.round(x.double() * 255.0), atol=1e-3) for x in (outputs, references)
    )
    return torch.round(difference) if on_grid else difference


def budget_spent(protected: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """L∞ and L2 (over all values) of ``protected − clean`` in 8-bit levels, over the whole batch."""
    levels = change_in_levels(protected, clean)
    return {"linf_255": float(levels.abs().max()), "l2_255": float(levels.pow(2).sum().sqrt())}
