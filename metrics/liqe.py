"""LIQE (Zhang et al., "Blind Image Quality Assessment via Vision-Language Correspondence: A Multitask
Learning Perspective", CVPR 2023, arXiv:2303.14968): a CLIP ViT-B/32 fine-tuned jointly on
quality, scene and distortion prompts ("a photo of a {scene} with {distortion} artifacts,
which is of {bad, poor, fair, good, perfect} quality"); the score is the expectation of the
quality level, 1 – 5, **higher = better quality**. Runs through pyiqa (``liqe``) from its cached
weights only (``metrics/pyiqa_models.py``); unavailable otherwise, with the files and place.
"""

from __future__ import annotations

from cloakbench.core import weights
from cloakbench.metrics.base import METRICS
from cloakbench.metrics.pyiqa_models import PyiqaMetric


@METRICS.register("liqe")
class LIQE(PyiqaMetric):
    """LIQE no-reference quality (Zhang et al., CVPR 2023, arXiv:2303.14968) through pyiqa (1–5, higher = better quality)."""

    higher_is_better = True
    unit = "MOS 1-5"
    needs = ("pyiqa, LIQE.pt and OpenAI CLIP ViT-B-32.pt in pyiqa's cache",)
    pyiqa_name = "liqe"
    weight_specs = (weights.LIQE_CHECKPOINT, weights.LIQE_CLIP)
