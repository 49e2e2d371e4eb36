"""The protection contract and its registry.

``Protection(config)(images, model, *, generator) -> Tensor``: ``images`` is
``(N, 3, H, W)`` float in ``[0, 1]`` on the model's device; the result has the same
shape and range and ``|protected - images|∞ <= eps/255``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from cloakbench.core.component import Component
from cloakbench.core.registry import Registry


class Protection(Component):
    """Base class of every protection; subclasses set ``Config`` and implement ``__call__``."""

    # Analysis-only entries (e.g. the latent attack ``sds-z``) are left out of ``all``.
    analysis_only: ClassVar[bool] = False

    def __call__(self, images: torch.Tensor, model, *, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


PROTECTIONS: Registry[type[Protection]] = Registry("protection")


def publishable_protections() -> list[str]:
    """What ``--methods all`` means: every protection an artist could publish."""
    return [name for name, cls in PROTECTIONS.items() if not cls.analysis_only]
