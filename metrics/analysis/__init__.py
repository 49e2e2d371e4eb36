"""Analyses that are not image-pair metrics: the encoder-vulnerability measurements."""

from cloakbench.metrics.analysis.encoder import ANALYSIS_METRICS, encoder_analysis, encoder_analysis_batch

__all__ = ["ANALYSIS_METRICS", "encoder_analysis", "encoder_analysis_batch"]
