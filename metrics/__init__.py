"""Metrics. Importing this package registers them in :data:`METRICS`."""

from metrics.base import METRICS, Metric, MetricUnavailable
from metrics import fidelity  # noqa: F401  (registers)

__all__ = ["METRICS", "Metric", "MetricUnavailable"]
