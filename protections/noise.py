"""The random-noise baseline: what any perturbation of the same budget does by chance."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded, check_ranges
from cloakbench.core.images import check_images
from cloakbench.protections.base import PROTECTIONS, Protection
from cloakbench.protections.engine import GeneratorArg, draw_uniform, image_generators, round_within_budget


@dataclass(frozen=True)
class NoiseConfig:
    """eps: L∞ budget in 8-bit units, ``eps/255`` (default 16, the PGD protections' budget)."""

    eps: float = bounded(16.0, 0, 255, low_open=True)

    def __post_init__(self):
        check_ranges(self)  # a config built in code is checked like an override


@PROTECTIONS.register("noise")
class UniformNoise(Protection):
    """Uniform noise in [−eps, eps], rounded to 8-bit: the baseline every protection must beat.

    Not from a paper: the control that separates a protection's effect from that of
    any perturbation of the same L∞ budget. No model is used.

    Update, in one shot, with ``u ~ U[−eps/255, eps/255]`` per pixel and channel::

        x ← round_8bit(clip_[0,1](x + u)), kept inside the ``eps/255`` ball

    Budget in 8-bit units of ``[0, 1]`` images (docs/PROTECTIONS.md). Each image draws
    its noise from its own generator, derived from ``generator`` and its pixels (see
    ``protections/engine.py``), so batching does not change it.

    Config (:class:`NoiseConfig`): eps 16.

    Example::

        protection = PROTECTIONS.get("noise").from_overrides({"eps": "8"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, None, generator=g)
    """

    family = "baseline"
    plain = "Random noise of the same size: a baseline to compare with, not a protection."

    Config = NoiseConfig
    version = 1

    def __call__(self, images: torch.Tensor, model=None, *, generator: GeneratorArg | None) -> torch.Tensor:
        # Sides in multiples of 8 like every protection, so one image set serves them all.
        check_images(images, self.name, multiple_of=8)
        clean = images.detach().float()
        eps = self.config.eps / 255.0
        noise = draw_uniform(image_generators(clean, generator), clean.shape[1:], -eps, eps, clean.device)
        return round_within_budget((clean + noise).clamp(0.0, 1.0), clean, self.config.eps)
