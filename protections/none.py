"""The clean reference: no protection at all."""

from __future__ import annotations

import torch

from cloakbench.protections.base import PROTECTIONS, Protection


@PROTECTIONS.register("none")
class NoProtection(Protection):
    """No protection: the clean image, returned bit-exactly (the reference every row compares to).

    No budget, no model, no randomness: the output is a copy of the input, even off the
    8-bit grid. No config.

    Example::

        clean = PROTECTIONS.get("none")()(images, model)
        assert torch.equal(clean, images)
    """

    family = "baseline"
    version = 1
    plain = "No change: your picture exactly as it is (the reference)."

    def __call__(self, images: torch.Tensor, model=None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return images.clone()
