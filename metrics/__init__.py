"""Metrics. Importing this package registers them in :data:`METRICS`."""

from cloakbench.metrics import (  # noqa: F401  (register)
    brisque,
    budget,
    clip,
    clip_iqa,
    distribution,
    face_identity,
    fidelity,
    liqe,
    perceptual,
)
from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable, NoReferenceMetric, is_face_category

__all__ = ["METRICS", "Metric", "MetricUnavailable", "NoReferenceMetric", "is_face_category"]
