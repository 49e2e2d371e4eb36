"""``diffpure-latent``: DiffPure's recipe run in the attacked LDM's latent space (not DiffPure as published).

Nie et al., "Diffusion Models for Adversarial Purification", ICML 2022 (arXiv 2205.07460):
diffuse the input a little (to ``t*``), then run the reverse process back; the noise
drowns an adversarial perturbation and the model's prior removes the noise. Here it runs
in Stable Diffusion's latent space with the same LDM the mimic uses, unconditionally
(empty prompt), with deterministic DDIM — the "SDEdit-style" purification of docs/MIMICRY.md.

This is *not* DiffPure as Nie et al. ran it (that is ``diffpure``, in pixel space): the
input passes through the LDM's own encoder, the very part encoder attacks (PhotoGuard,
SDS(−), Mist's texture loss) perturb, so it under-purifies them. It stays, under its own
name, as the latent baseline the pixel purifiers are compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry
from cloakbench.mimicry.common import check_epsilon_prediction, ddim_denoise, forward_noise, note


def purification_timesteps(t_star: int, steps: int) -> list[int]:
    """Decreasing DDIM timesteps from exactly ``t_star`` (``steps`` of them, evenly spaced, ≥ 1)."""
    if t_star == 0:
        return []
    count = max(1, min(steps, t_star))
    grid = torch.linspace(t_star, 0, count + 1)[:-1].round().long().tolist()
    return sorted(set(grid), reverse=True)


@MIMICRY.register("diffpure-latent")
class LatentDiffPure(Mimicry):
    """DiffPure's recipe in the attacked LDM's latent space: noise to t* = 0.1·T, DDIM back, unconditional.

    ``z₀ = E(x)`` (``latent`` "sample" draws from the posterior with the generator, as SD
    does; "mean" uses its mean), ``z_{t*} = √ᾱ·z₀ + √(1−ᾱ)·ε`` with ``t* = round(t_star·T)``
    exactly (T = 1000, so 100 by default), then ``steps`` deterministic DDIM steps (η = 0)
    with the empty prompt and no guidance, ending at x̂₀, decoded to ``[0, 1]``.
    ``t_star = 0`` is the plain VAE round trip ``D(E(x))``.

    Written as a loop rather than diffusers' img2img so that t* is exactly 0.1·T: img2img
    snaps to its DDIM grid (it would noise to t = 91 for strength 0.1 and 100 steps).

    Config: ``t_star`` 0.1 (fraction of T), ``steps`` 10 (the density of a 100-step grid),
    ``latent`` "sample".
    """

    version = 1
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        t_star: float = bounded(0.1, 0.0, 1.0)
        steps: int = bounded(10, 1, 1000)
        latent: Literal["sample", "mean"] = "sample"

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        check_epsilon_prediction(model, self.name)
        if not 0.0 <= self.config.t_star <= 1.0:
            raise ValueError(f"{self.name}: t_star must be a fraction of T in [0, 1], got {self.config.t_star}")
        if self.config.steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {self.config.steps}")
        t_star = min(round(self.config.t_star * model.num_train_timesteps), model.num_train_timesteps - 1)
        latents = model.encode(images, mode=self.config.latent, generator=generator)
        timesteps = purification_timesteps(t_star, self.config.steps)
        if timesteps:
            latents = forward_noise(model, latents, t_star, generator)
            latents = ddim_denoise(model, latents, timesteps, prompt="", guidance_scale=1.0)
        note(context, self.name, "t_star", t_star)
        note(context, self.name, "timesteps", timesteps)
        return model.decode(latents).to(device=images.device, dtype=torch.float32)
