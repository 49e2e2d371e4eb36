"""Metrics. Importing this package registers them in :data:`METRICS`."""

from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable
from cloakbench.metrics import fidelity  # noqa: F401  (registers)
from cloakbench.metrics import budget, perceptual, clip, distribution  # noqa: F401,E401  (register)

__all__ = ["METRICS", "Metric", "MetricUnavailable"]
