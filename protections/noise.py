"""The random-noise baseline: what any perturbation of the same budget does by chance."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.protections.base import PROTECTIONS, Protection
from cloakbench.protections.engine import GeneratorArg, check_images, draw_uniform, image_generators, round_within_budget


@dataclass(frozen=True)
class NoiseConfig:
    """eps: L∞ budget in 8-bit units (default 16, the PGD protections' budget)."""

    eps: float = 16.0

    def __post_init__(self):
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0 (8-bit units), got {self.eps}")


@PROTECTIONS.register("noise")
class UniformNoise(Protection):
    """Uniform noise in [−eps, eps], rounded to 8-bit: the baseline every protection must beat.

    Not from a paper: the control that separates a protection's effect from that of
    any perturbation of the same L∞ budget (eps 16/255 by default). Each image draws
    its noise from its own generator (see ``protections/engine.py``).
    """

    Config = NoiseConfig
    version = 1

    def __call__(self, images: torch.Tensor, model=None, *, generator: GeneratorArg | None) -> torch.Tensor:
        check_images(images)
        clean = images.detach().float()
        eps = self.config.eps / 255.0
        noise = draw_uniform(image_generators(clean, generator), clean.shape[1:], -eps, eps, clean.device)
        return round_within_budget((clean + noise).clamp(0.0, 1.0), clean, self.config.eps)
