"""Metrics. Importing this package registers them in :data:`METRICS`."""

from metrics.base import METRICS, Metric, MetricUnavailable
from metrics import fidelity  # noqa: F401  (registers)
from metrics import budget, perceptual, clip, distribution  # noqa: F401,E401  (register)

__all__ = ["METRICS", "Metric", "MetricUnavailable"]
