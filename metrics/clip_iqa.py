"""CLIP-IQA (Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images", AAAI 2023,
arXiv:2207.12396): the softmax of CLIP's similarities to the antonym prompts "Good photo." /
"Bad photo.", the probability of the positive one (0 – 1, **higher = better quality**), with
OpenAI's CLIP ResNet-50 as the paper uses. Runs through pyiqa (``clipiqa``) from its cached
weights only (``metrics/pyiqa_models.py``); unavailable otherwise, with the file and place.
"""

from __future__ import annotations

from cloakbench.core import weights
from cloakbench.metrics.base import METRICS
from cloakbench.metrics.pyiqa_models import PyiqaMetric


@METRICS.register("clip-iqa")
class CLIPIQA(PyiqaMetric):
    """CLIP-IQA no-reference quality (Wang et al., AAAI 2023, arXiv:2207.12396) through pyiqa (higher = better quality)."""

    higher_is_better = True
    unit = "prob"
    needs = ("pyiqa and OpenAI CLIP RN50.pt in pyiqa's cache",)
    pyiqa_name = "clipiqa"
    weight_specs = (weights.CLIP_IQA_RN50,)
