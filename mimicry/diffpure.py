"""DiffPure as Nie et al. ran it: diffuse the image a little with a *pixel* diffusion model, then reverse.

Nie et al., "Diffusion Models for Adversarial Purification", ICML 2022 (arXiv:2205.07460).
The input is noised to ``t*`` by the forward process of a pixel-space DDPM and denoised back
by its reverse process: the Gaussian noise drowns the adversarial perturbation and the
model's prior removes the noise. No latent autoencoder is involved, so a protection that
attacks the LDM's encoder gets no help from the purifier (docs/MIMICRY.md, "Purifications").
The latent variant, through the attacked LDM's own VAE, is ``diffpure-latent``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.core.pixel_models import DEFAULT_PIXEL_MODEL, respaced_timesteps
from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry
from cloakbench.mimicry.common import PixelModelHolder, at_pixel_resolution, describe_pixel_model, note, pixel_timestep


class PixelPurification(Mimicry):
    """A purification with a pixel diffusion model (``config.pixel_model``), never the attacked LDM.

    The pixel model is checked before any work (:meth:`check_available`: its files and place
    when missing) and loaded once per instance on the attacked model's device; its name and
    weights hash join :meth:`identity`, so a retrained pixel model never reuses cached cells.
    """

    is_purification = True

    def __init__(self, config=None):
        super().__init__(config)
        self._pixel = PixelModelHolder(self.config.pixel_model, self.name)

    def check_available(self) -> None:
        reason = self._pixel.unavailable_reason()
        if reason:
            raise AttackUnavailable(reason)

    def identity(self) -> dict:
        return {**super().identity(), "pixel_model": self._pixel.identity()}

    def pixel_model(self, images: torch.Tensor, model):
        self.check_available()
        return self._pixel.get(model.device if model is not None else images.device)


@MIMICRY.register("diffpure")
class DiffPure(PixelPurification):
    """DiffPure (Nie et al., arXiv:2205.07460) in pixel space: noise to t* = 0.15·T, DDPM ancestral steps back.

    Per batch, with the pixel model ``P`` (``pixel_model``, default ``toy-pixel``) at its
    resolution ``R`` and ``t = round(t_star·T)``:

    1. resize the ``H × W`` input to ``R × R`` (antialiased bicubic; none when ``H = W = R``) —
       Nie et al. feed ImageNet images at the 256² of their model, and GrIDPure's DiffPure
       baseline resizes every image to it (ZhengyueZhao/GrIDPure diffpure.py:44);
    2. ``x_t = √ᾱ_{t−1}·x + √(1−ᾱ_{t−1})·ε`` in ``[-1, 1]`` (NVlabs/DiffPure
       runners/diffpure_guided.py:60-63: ``a[total_noise_levels − 1]``);
    3. DDPM ancestral sampling ``x_{i−1} ~ p(x_{i−1} | x_i)`` for ``i = t−1, …, 0`` with x̂₀
       clipped to ``[-1, 1]`` (same file, lines 68-75: ``p_sample(…, clip_denoised=True)``);
    4. resize back to ``H × W``.

    Defaults from the authors' code: ``t_star`` 0.15 is their ImageNet setting, the only one
    with a 256² model (run_scripts/imagenet/run_in_rand_inf.sh:7, ``--t 150`` of T = 1000;
    CIFAR-10 uses 100). ``steps`` 0 runs every one of the ``t`` reverse steps as they do;
    ``steps = k`` keeps ``k`` evenly spaced ones (respaced as guided-diffusion does; for
    ``--quick``), see :func:`cloakbench.core.pixel_models.respaced_timesteps`.

    Deliberate differences: their ImageNet runs integrate the reverse VP-SDE with torchsde
    (``--diffusion_type sde``, runners/diffpure_sde.py); we run its DDPM discretisation, their
    ``ddpm`` mode (runners/diffpure_guided.py:58-87), which needs no SDE solver and is what
    GrIDPure's DiffPure baseline runs. They purify with the ADM ImageNet model
    (``256x256_diffusion_uncond.pt``); here the default is the shipped ``toy-pixel`` (any
    diffusers ``UNet2DModel`` folder or cached id can be named). ``t_star = 0`` returns the
    input. ``context.notes["diffpure"]`` names the pixel model (and its weights hash), ``t``
    and the number of reverse steps.
    """

    version = 2
    QUICK = {"steps": 3}

    @dataclass(frozen=True)
    class Config:
        pixel_model: str = DEFAULT_PIXEL_MODEL
        t_star: float = bounded(0.15, 0.0, 1.0)
        steps: int = bounded(0, 0, 1000)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        pixel = self.pixel_model(images, model)
        t = pixel_timestep(self.config.t_star, pixel)
        purified = at_pixel_resolution(
            images, pixel, lambda small: pixel.purify(small, t, self.config.steps, generator)
        )
        note(context, self.name, "pixel_model", describe_pixel_model(pixel))
        note(context, self.name, "t", t)
        note(context, self.name, "reverse_steps", len(respaced_timesteps(t, self.config.steps)))
        return purified
