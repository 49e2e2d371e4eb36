"""The metric contract and its registry.

A metric declares its semantics as class attributes (as torchmetrics does):
``higher_is_better`` (of *similarity*: for "does the protection stop mimicry" rows a
*lower* similarity means stronger protection, and the report says so), ``unit``,
``needs`` (what it requires: a reference image, weights) and ``scope``:

- ``pair``: ``metric(outputs, references) -> Tensor (N,)``, one value per image pair;
- ``set``: ``metric(outputs, references) -> Tensor ()``, one value for two image sets (FID).

Images are ``(N, 3, H, W)`` float in ``[0, 1]``. A metric whose weights are missing
raises :class:`MetricUnavailable` with the reason; the runner records the row as
unavailable with that reason, never a number.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from cloakbench.core.component import Component
from cloakbench.core.registry import Registry


class MetricUnavailable(RuntimeError):
    """The metric cannot be computed here (missing weights or package); the message says why."""


class Metric(Component):
    higher_is_better: ClassVar[bool] = True
    unit: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ("reference image",)
    scope: ClassVar[str] = "pair"
    # Budget metrics (linf, l2) only make sense between a protected image and its clean original.
    budget_only: ClassVar[bool] = False

    def check_available(self) -> None:
        """Raise :class:`MetricUnavailable` if weights or packages are missing. Cheap; no compute."""

    def availability(self) -> tuple[bool, str]:
        try:
            self.check_available()
        except MetricUnavailable as error:
            return False, str(error)
        return True, "ready"

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


METRICS: Registry[type[Metric]] = Registry("metric")


def check_pair(outputs: torch.Tensor, references: torch.Tensor, name: str) -> None:
    if outputs.shape != references.shape:
        raise ValueError(
            f"{name}: outputs {tuple(outputs.shape)} and references {tuple(references.shape)} must have the same shape"
        )
    if outputs.ndim != 4 or outputs.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3, H, W) images, got {tuple(outputs.shape)}")
