"""PDM-Pure: purify with a strong *pixel* diffusion model, a few denoising steps from a small noise level.

Xue & Chen, "Pixel is a Barrier: Diffusion Models Are More Adversarially Robust Than We
Think" (arXiv:2404.13320; the authors of the SDS paper, arXiv:2311.12832); code:
xavihart/PDM-Pure ``pdm_pure.py``. Protections are crafted against a *latent* diffusion
model's encoder; a pixel-space diffusion model has no encoder to fool, so a short
SDEdit-style pass through it (DeepFloyd IF stage II) washes the perturbation out.

Two registered names, because they are two computations:

- ``pdm-pure``: the authors' recipe with DeepFloyd IF stage II (``DeepFloyd/IF-II-L-v1.0``),
  available only when its weights are in the local cache; otherwise unavailable, naming the
  files and the place. Never silently another model.
- ``pdm-pure-uncond``: the same noise level and respaced steps on an unconditional pixel
  DDPM (default ``toy-pixel``): no text or low-resolution conditioning, which IF stage II has
  and a plain ``UNet2DModel`` has not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.core.pixel_models import DEFAULT_PIXEL_MODEL
from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry
from cloakbench.mimicry.common import at_pixel_resolution, describe_pixel_model, note, resize_to
from cloakbench.mimicry.diffpure import PixelPurification

#: IF stage II's working resolutions: a 64² conditioning image, 256² output.
IF_LOW_RES, IF_HIGH_RES = 64, 256


def pdm_timesteps(sections: int, section_steps: int, skipped: int, total: int = 1000) -> list[int]:
    """The timesteps PDM-Pure denoises through (decreasing).

    ``sample_timestep_respacing = "10,0,0,0,0,0,0,0,0,0"`` (pdm_pure.py:19) is
    guided-diffusion's ``space_timesteps``: T = 1000 split into ``sections`` = 10 parts of 100,
    ``section_steps`` = 10 evenly spaced steps taken from the first part (0, 11, 22, …, 99)
    and none from the others. ``support_noise_less_qsample_steps = 5`` (pdm_pure.py:48) starts
    the reverse process that many respaced steps below the top, from the support image noised
    to that step: the last ``10 − 5`` steps, 44, 33, 22, 11, 0.
    """
    size = total // sections
    stride = (size - 1) / (section_steps - 1) if section_steps > 1 else 0
    grid = sorted({round(i * stride) for i in range(section_steps)}, reverse=True)
    return grid[skipped:]


@MIMICRY.register("pdm-pure")
class PDMPure(Mimicry):
    """PDM-Pure (Xue & Chen, arXiv:2404.13320) with DeepFloyd IF stage II: noise to t = 44, 5 guided steps back.

    As ``pdm_pure.py`` runs it (DeepFloyd's ``style_transfer`` with only stage II, lines 26-56):
    the image resized to 256² is the support image, noised to ``t = 44`` and denoised through
    ``44, 33, 22, 11, 0`` (:func:`pdm_timesteps`) by IF stage II conditioned on the image at 64²
    (augmentation noise level 250, IF's default ``aug_level`` 0.25) and on the prompt, with
    classifier-free guidance 7. Run through diffusers' ``IFImg2ImgSuperResolutionPipeline``:
    ``original_image`` is the support image, ``image`` the low-resolution condition, the custom
    ``timesteps`` the respaced grid and ``strength`` 0.5 keeps its last five steps.

    ``prompt``: "" uses the run's prompt (``context.prompt``, a description of the images, as
    their ``--prompt`` is: "a sentence to describe the image", default "a picture").

    Deliberate differences: their stage III (the SD x4 upscaler to 1024², then a resize back to
    the input size, lines 30 and 59) is skipped: the 256² output is resized to the input size
    directly, since a bench image is at most the LDM's resolution and the ×4 upscaler is a
    second pretrained model a run cannot assume. Unavailable (the files and place) when IF
    stage II is not cached; ``if_path`` names a folder instead of the cache.
    """

    version = 1
    is_purification = True
    QUICK: dict = {}  # five denoising steps already; the *_steps fields are a schedule, not a count to cap

    @dataclass(frozen=True)
    class Config:
        if_path: str = ""
        prompt: str = ""
        guidance_scale: float = bounded(7.0, 0.0, 50.0)
        noise_level: int = bounded(250, 0, 1000)
        respaced_steps: int = bounded(10, 2, 100)
        skipped_steps: int = bounded(5, 0, 99)

    def __init__(self, config=None):
        super().__init__(config)
        self._pipe = None

    def check_available(self) -> None:
        from cloakbench.core import weights

        if weights.find(weights.IF_STAGE_II, self.config.if_path or None) is None:
            raise AttackUnavailable(
                f"{self.name}: DeepFloyd IF stage II is needed; "
                + weights.missing_message(weights.IF_STAGE_II, self.config.if_path or None)
                + " Or use pdm-pure-uncond (the same schedule on an unconditional pixel model)."
            )

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        self.check_available()
        from cloakbench.core.ldm import ModelError
        from cloakbench.core.pixel_models import load_if_stage_ii

        device = model.device if model is not None else images.device
        if self._pipe is None:
            try:
                self._pipe = load_if_stage_ii(device, "float32", self.config.if_path or None)
            except ModelError as error:
                raise AttackUnavailable(f"{self.name}: {error}") from None
        timesteps = pdm_timesteps(10, self.config.respaced_steps, 0)
        strength = (len(timesteps) - self.config.skipped_steps) / len(timesteps)
        prompt = self.config.prompt or (context.prompt if context is not None else "a picture")
        height, width = images.shape[-2:]
        support = resize_to(images.to(device, torch.float32), IF_HIGH_RES, IF_HIGH_RES)
        low_res = resize_to(support, IF_LOW_RES, IF_LOW_RES)
        output = self._pipe(
            image=low_res * 2 - 1,
            original_image=support * 2 - 1,
            prompt=[prompt] * images.shape[0],
            timesteps=timesteps,
            strength=strength,
            guidance_scale=self.config.guidance_scale,
            noise_level=self.config.noise_level,
            generator=generator,
            output_type="pt",
        ).images
        # output_type "pt" returns the model's range [-1, 1] (diffusers skips its post-processing then).
        purified = ((output.float() + 1) / 2).clamp(0, 1)
        note(context, self.name, "pixel_model", "DeepFloyd/IF-II-L-v1.0")
        note(context, self.name, "timesteps", timesteps[self.config.skipped_steps :])
        return resize_to(purified, height, width).to(device=images.device, dtype=torch.float32)


@MIMICRY.register("pdm-pure-uncond")
class PDMPureUnconditional(PixelPurification):
    """PDM-Pure's schedule on an unconditional pixel DDPM (default toy-pixel): noise to t = 44, 5 ancestral steps back.

    The timesteps of ``pdm-pure`` (:func:`pdm_timesteps`: respacing "10,0,…,0", 5 steps skipped,
    so ``44, 33, 22, 11, 0``), run on a plain diffusers ``UNet2DModel`` with DDPM ancestral
    sampling between those timesteps, at the model's resolution (resized there and back as in
    ``diffpure``). What IF stage II adds and this lacks: the 64² low-resolution conditioning,
    the text prompt and classifier-free guidance — so this is PDM-Pure's noise budget with a
    weaker prior, a separate computation under its own name. ``context.notes`` names the pixel model.
    """

    version = 1
    QUICK: dict = {}  # five denoising steps already; the *_steps fields are a schedule, not a count to cap

    @dataclass(frozen=True)
    class Config:
        pixel_model: str = DEFAULT_PIXEL_MODEL
        respaced_steps: int = bounded(10, 2, 100)
        skipped_steps: int = bounded(5, 0, 99)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        if self.config.skipped_steps >= self.config.respaced_steps:
            raise ValueError(
                f"{self.name}: skipped_steps ({self.config.skipped_steps}) must be below "
                f"respaced_steps ({self.config.respaced_steps})"
            )
        pixel = self.pixel_model(images, model)
        timesteps = pdm_timesteps(10, self.config.respaced_steps, self.config.skipped_steps, pixel.num_train_timesteps)
        purified = at_pixel_resolution(
            images,
            pixel,
            lambda small: pixel.reverse(pixel.noise_to(small, timesteps[0], generator), timesteps, generator),
        )
        note(context, self.name, "pixel_model", describe_pixel_model(pixel))
        note(context, self.name, "timesteps", timesteps)
        return purified
