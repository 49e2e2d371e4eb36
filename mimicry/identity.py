"""The do-nothing attack: compares published images directly (a pipeline check)."""

from __future__ import annotations

import torch

from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry


@MIMICRY.register("identity")
class Identity(Mimicry):
    """Identity: returns the published images unchanged (checks the grid end to end)."""

    def __call__(self, images: torch.Tensor, model=None, *, generator=None, context: AttackContext | None = None):
        return images.clone()
