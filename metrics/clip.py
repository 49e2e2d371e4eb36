"""CLIP image similarity: cosine between CLIP image embeddings (Radford et al., "Learning
Transferable Visual Models From Natural Language Supervision", arXiv:2103.00020).

transformers' ``CLIPModel`` and ``CLIPImageProcessor`` from a local folder or the Hugging
Face cache (``openai/clip-vit-base-patch32`` by default, or ``CLOAKBENCH_CLIP``), read from
safetensors only and never downloaded. The processor does CLIP's own resize, centre crop and
normalisation; images in [0, 1] are passed with ``do_rescale=False``.
"""

from __future__ import annotations

import dataclasses

import torch

from cloakbench.core import weights
from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable, check_pair


@METRICS.register("clip-sim")
class CLIPSimilarity(Metric):
    """Cosine similarity of CLIP image embeddings, ViT-B/32 (higher = more similar)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        weights: str = ""  # optional folder with config.json, model.safetensors, preprocessor_config.json

    higher_is_better = True
    unit = "cos"
    needs = ("reference image", "CLIP ViT-B/32 in the Hugging Face cache (or CLOAKBENCH_CLIP)")

    def __init__(self, config=None):
        super().__init__(config)
        self._loaded: dict[str, tuple] = {}

    def check_available(self) -> None:
        path = self.config.weights or None
        if weights.find(weights.CLIP, path) is None:
            raise MetricUnavailable(weights.missing_message(weights.CLIP, path))

    def _model(self, device: torch.device):
        key = str(device)
        if key not in self._loaded:
            self.check_available()
            self._loaded[key] = weights.build_clip(device, self.config.weights or None)
        return self._loaded[key]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLIP image embeddings ``(N, D)`` of ``(N, 3, H, W)`` images in [0, 1]."""
        model, processor = self._model(images.device)
        arrays = [image.permute(1, 2, 0).float().cpu().numpy() for image in images]
        pixel_values = processor(images=arrays, do_rescale=False, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            features = model.get_image_features(pixel_values=pixel_values.to(images.device))
        if not isinstance(features, torch.Tensor):  # transformers 5 returns an output object
            features = features.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        return (self.embed(outputs) * self.embed(references)).sum(dim=-1)
