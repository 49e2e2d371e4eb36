"""Metrics. Importing this package registers them in :data:`METRICS`."""

from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable, NoReferenceMetric, is_face_category

# Registration order is the listing order (``--metrics all``, and the order of a cell's rows): keep it.
# isort: off
from cloakbench.metrics import fidelity  # noqa: F401  (registers)
from cloakbench.metrics import budget, perceptual, clip, distribution  # noqa: F401  (register)
from cloakbench.metrics import brisque, face_identity, clip_iqa, liqe  # noqa: F401  (register)
# isort: on

__all__ = ["METRICS", "Metric", "MetricUnavailable", "NoReferenceMetric", "is_face_category"]
