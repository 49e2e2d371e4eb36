"""LPIPS through the ``lpips`` package (Zhang et al., "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018, arXiv:1801.03924).

AlexNet backbone by default (the paper's recommended "forward metric"), VGG16 as an option.
Inputs are mapped from [0, 1] to the [−1, 1] LPIPS expects (feeding [0, 1] changes the
number; docs/METRICS.md, "Known pitfalls"). The backbone is read from the torch hub cache by
:mod:`cloakbench.core.weights`; it is never downloaded and never random.
"""

from __future__ import annotations

import dataclasses

import torch

from cloakbench.core import weights
from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable, check_pair


@METRICS.register("lpips")
class LPIPS(Metric):
    """LPIPS perceptual distance, AlexNet backbone (lower = more similar)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        net: str = "alex"  # "alex" (paper default) or "vgg"
        weights: str = ""  # optional path to the torchvision backbone checkpoint

    higher_is_better = False
    unit = ""
    needs = ("reference image", "AlexNet (or VGG16) ImageNet backbone in the torch hub cache")

    def __init__(self, config=None):
        super().__init__(config)
        self._networks: dict[str, torch.nn.Module] = {}

    def _specs(self):
        if self.config.net not in weights.LPIPS_BACKBONES:
            raise MetricUnavailable(
                f"lpips net must be one of {sorted(weights.LPIPS_BACKBONES)}, got {self.config.net!r}"
            )
        backbone, heads, _ = weights.LPIPS_BACKBONES[self.config.net]
        return backbone, heads

    def check_available(self) -> None:
        backbone, heads = self._specs()
        for spec, path in ((backbone, self.config.weights or None), (heads, None)):
            if weights.find(spec, path) is None:
                raise MetricUnavailable(weights.missing_message(spec, path))

    def network(self, device: torch.device) -> torch.nn.Module:
        key = str(device)
        if key not in self._networks:
            self.check_available()
            self._networks[key] = weights.build_lpips(self.config.net, device, self.config.weights or None)
        return self._networks[key]

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        check_pair(outputs, references, self.name)
        network = self.network(outputs.device)
        with torch.no_grad():
            distance = network(outputs.float() * 2 - 1, references.float() * 2 - 1)
        return distance.flatten().float()
