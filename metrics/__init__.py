"""Metrics. Importing this package registers them in :data:`METRICS`."""

from cloakbench.metrics import (  # noqa: F401  (register)
    budget,
    clip,
    distribution,
    fidelity,
    perceptual,
)
from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable

__all__ = ["METRICS", "Metric", "MetricUnavailable"]
