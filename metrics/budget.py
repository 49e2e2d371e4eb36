"""Perturbation budget actually spent: L∞ and L2 of ``protected − clean`` in /255 units.

Measured on the saved 8-bit images (the runner quantises before metrics), so this is the
budget a reader of the files sees, not the optimiser's nominal ``eps``. Only meaningful
between a protected image and its own clean original (``budget_only``).
"""

from __future__ import annotations

import torch

from cloakbench.core.budget import change_in_levels
from cloakbench.metrics.base import METRICS, Metric, check_pair


class BudgetMetric(Metric):
    """Shared shape of the budget metrics: a norm of the change in 8-bit levels, per image."""

    higher_is_better = False
    unit = "/255"
    budget_only = True

    def norm(self, levels: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` changes in levels -> ``(N,)`` norms."""
        raise NotImplementedError

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        return self.norm(change_in_levels(outputs, references).flatten(1)).float()


@METRICS.register("linf")
class LInf(BudgetMetric):
    """Largest per-pixel change, max |protected − clean| × 255 (lower = smaller perturbation)."""

    def norm(self, levels: torch.Tensor) -> torch.Tensor:
        return levels.abs().amax(dim=1)


@METRICS.register("l2")
class L2(BudgetMetric):
    """Euclidean norm of the change over all pixels and channels, ‖protected − clean‖₂ × 255."""

    def norm(self, levels: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(levels, ord=2, dim=1)
