"""PDM-Pure: purify with a strong *pixel* diffusion model: the image lightly noised, then the whole respaced reverse process.

Xue & Chen, "Pixel is a Barrier: Diffusion Models Are More Adversarially Robust Than We
Think" (arXiv:2404.13320; the authors of the SDS paper, arXiv:2311.12832); code:
xavihart/PDM-Pure ``pdm_pure.py``. Protections are crafted against a *latent* diffusion
model's encoder; a pixel-space diffusion model has no encoder to fool, so a short
SDEdit-style pass through it (DeepFloyd IF stage II) washes the perturbation out: the image
is q-sampled to t = 44 and all ten respaced steps 99, 88, …, 0 are run, as IF's
``support_noise_less_qsample_steps`` does (docs/MIMICRY.md, "PDM-Pure").

Two registered names, because they are two computations:

- ``pdm-pure``: the authors' recipe with DeepFloyd IF stage II (``DeepFloyd/IF-II-L-v1.0``),
  available only when its weights are in the local cache; otherwise unavailable, naming the
  files and the place. Never silently another model.
- ``pdm-pure-uncond``: the same support noise level and respaced steps on an unconditional pixel
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


def pdm_timesteps(sections: int, section_steps: int, total: int = 1000) -> list[int]:
    """The respaced timesteps of IF stage II as PDM-Pure configures it (decreasing): all of them are run.

    ``sample_timestep_respacing = "10,0,0,0,0,0,0,0,0,0"`` (xavihart/PDM-Pure pdm_pure.py:19) is
    guided-diffusion's ``space_timesteps`` (deep-floyd/IF deepfloyd_if/model/respace.py:83-104):
    T = ``total`` split into ``sections`` = 10 parts of 100, ``section_steps`` = 10 evenly spaced
    steps from the first part (stride 99/9 = 11: 0, 11, …, 99) and none from the others. IF's
    ``p_sample_loop_progressive`` runs *every* respaced index from the top
    (gaussian_diffusion.py:482, ``indices = list(range(self.num_timesteps))[::-1]``), so the
    UNet sees ``99, 88, …, 0`` (the ``timestep_map``, respace.py:156-163).
    """
    size = total // sections
    stride = (size - 1) / (section_steps - 1) if section_steps > 1 else 0
    return sorted({round(i * stride) for i in range(section_steps)}, reverse=True)


def support_timestep(timesteps: list[int], less_qsample_steps: int) -> int:
    """The timestep IF q-samples the support image to: respaced index ``len − 1 − less_qsample_steps``.

    deep-floyd/IF deepfloyd_if/modules/base.py:180-188: ``q_sample_steps = len(timestep_map) − 1 −
    support_noise_less_qsample_steps`` and ``diffusion.q_sample(support_noise, q_sample_steps)``
    on the respaced diffusion, whose ``ᾱ`` at that index is the original ``ᾱ[timestep_map[i]]``
    (respace.py:117-126). PDM-Pure passes 5 (pdm_pure.py:48): index 10 − 1 − 5 = 4, t = 44.
    The reverse process still starts at the top respaced step (:func:`pdm_timesteps`): the
    support image is *less* noised than the step the model is told, which is the point of the
    option (a gentler edit than a full re-generation).
    """
    if not 0 <= less_qsample_steps < len(timesteps) - 1:
        raise ValueError(
            f"less_qsample_steps ({less_qsample_steps}) must be in [0, {len(timesteps) - 1}) for "
            f"{len(timesteps)} respaced steps (IF base.py:180 asserts the same)"
        )
    ascending = sorted(timesteps)
    return ascending[len(ascending) - 1 - less_qsample_steps]


class QSampleAtScheduler:
    """A scheduler whose ``add_noise`` q-samples at a fixed timestep; everything else is the wrapped scheduler.

    diffusers' ``IFImg2ImgSuperResolutionPipeline`` noises ``original_image`` at the first
    timestep it runs (``prepare_intermediate_images``: ``scheduler.add_noise(image, noise,
    timesteps[0:1])``); IF's own loop noises the support image at ``support_timestep`` and still
    runs from the top (see :func:`support_timestep`). Swapping ``add_noise`` alone reproduces
    that with stock diffusers.
    """

    def __init__(self, scheduler, timestep: int):
        self.scheduler = scheduler
        self.timestep = int(timestep)

    def add_noise(self, original_samples, noise, timesteps):
        fixed = torch.full_like(torch.as_tensor(timesteps), self.timestep)
        return self.scheduler.add_noise(original_samples, noise, fixed)

    def __getattr__(self, name):
        return getattr(self.scheduler, name)


@MIMICRY.register("pdm-pure")
class PDMPure(Mimicry):
    """PDM-Pure (Xue & Chen, arXiv:2404.13320) with DeepFloyd IF stage II: support noised to t = 44, all ten steps 99 → 0.

    As ``pdm_pure.py`` runs it (DeepFloyd's ``style_transfer`` with only stage II, lines 26-56;
    deep-floyd/IF deepfloyd_if/pipelines/style_transfer.py:76-91, modules/base.py:170-208): the
    image resized to 256² is the support image, q-sampled to respaced index 10 − 1 − 5 = 4, i.e.
    ``t = 44`` (:func:`support_timestep`), and then denoised through *all* ten respaced steps
    ``99, 88, …, 0`` (:func:`pdm_timesteps`; IF's ``p_sample_loop`` starts at the top whatever
    the support noise) by IF stage II conditioned on the image at 64² (augmentation noise level
    250, IF's default ``aug_level`` 0.25) and on the prompt, with classifier-free guidance 7.
    Run through diffusers' ``IFImg2ImgSuperResolutionPipeline``: ``original_image`` is the support
    image, ``image`` the low-resolution condition, ``timesteps`` the ten respaced steps with
    ``strength`` 1 (all run), and the pipeline's scheduler wrapped (:class:`QSampleAtScheduler`)
    so its one ``add_noise`` noises at 44 instead of 99. Up to version 1 this ran five steps
    44 → 0 from an image noised at 44 — not IF's schedule.

    ``prompt``: "" uses the run's prompt (``context.prompt``, a description of the images, as
    their ``--prompt`` is: "a sentence to describe the image", default "a picture").

    Deliberate differences: their stage III (the SD x4 upscaler to 1024², then a resize back to
    the input size, lines 30 and 59) is skipped: the 256² output is resized to the input size
    directly, since a bench image is at most the LDM's resolution and the ×4 upscaler is a
    second pretrained model a run cannot assume. IF draws the q-sample noise from torch's
    global generator (seed 0); here it comes from the run's generator. Unavailable (the files
    and place) when IF stage II is not cached; ``if_path`` names a folder instead of the cache.
    """

    version = 2
    is_purification = True
    QUICK: dict = {}  # ten denoising steps already; the *_steps fields are a schedule, not a count to cap

    @dataclass(frozen=True)
    class Config:
        if_path: str = ""
        prompt: str = ""
        guidance_scale: float = bounded(7.0, 0.0, 50.0)
        noise_level: int = bounded(250, 0, 1000)
        respaced_steps: int = bounded(10, 2, 100)
        #: IF's ``support_noise_less_qsample_steps`` (pdm_pure.py:48).
        less_qsample_steps: int = bounded(5, 0, 98)

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
        timesteps = pdm_timesteps(10, self.config.respaced_steps)
        start = support_timestep(timesteps, self.config.less_qsample_steps)
        prompt = self.config.prompt or (context.prompt if context is not None else "a picture")
        height, width = images.shape[-2:]
        support = resize_to(images.to(device, torch.float32), IF_HIGH_RES, IF_HIGH_RES)
        low_res = resize_to(support, IF_LOW_RES, IF_LOW_RES)
        scheduler = self._pipe.scheduler
        # Plain attribute swap: DiffusionPipeline.__setattr__ would re-register the component's config.
        object.__setattr__(self._pipe, "scheduler", QSampleAtScheduler(scheduler, start))
        try:
            output = self._pipe(
                image=low_res * 2 - 1,
                original_image=support * 2 - 1,
                prompt=[prompt] * images.shape[0],
                timesteps=timesteps,
                strength=1.0,
                guidance_scale=self.config.guidance_scale,
                noise_level=self.config.noise_level,
                generator=generator,
                output_type="pt",
            ).images
        finally:
            object.__setattr__(self._pipe, "scheduler", scheduler)
        # output_type "pt" returns the model's range [-1, 1] (diffusers skips its post-processing then).
        purified = ((output.float() + 1) / 2).clamp(0, 1)
        note(context, self.name, "pixel_model", "DeepFloyd/IF-II-L-v1.0")
        note(context, self.name, "support_timestep", start)
        note(context, self.name, "timesteps", timesteps)
        return resize_to(purified, height, width).to(device=images.device, dtype=torch.float32)


@MIMICRY.register("pdm-pure-uncond")
class PDMPureUnconditional(PixelPurification):
    """PDM-Pure's schedule on an unconditional pixel DDPM (default toy-pixel): noised to t = 44, ten ancestral steps 99 → 0.

    The schedule of ``pdm-pure`` as IF runs it: the image q-sampled to :func:`support_timestep`
    (respaced index 10 − 1 − 5 = 4, t = 44), then DDPM ancestral sampling through all of
    :func:`pdm_timesteps` (``99, 88, …, 0``, the posterior between consecutive respaced steps,
    as guided-diffusion's respacing does), on a plain diffusers ``UNet2DModel`` at the model's
    resolution (resized there and back as in ``diffpure``). What IF stage II adds and this
    lacks: the 64² low-resolution conditioning, the text prompt and classifier-free guidance —
    so this is PDM-Pure's schedule with a weaker prior, a separate computation under its own
    name. Up to version 1 it ran five steps 44 → 0 (not IF's schedule). ``context.notes`` names
    the pixel model, the support timestep and the timesteps run.
    """

    version = 2
    QUICK: dict = {}  # ten denoising steps already; the *_steps fields are a schedule, not a count to cap

    @dataclass(frozen=True)
    class Config:
        pixel_model: str = DEFAULT_PIXEL_MODEL
        respaced_steps: int = bounded(10, 2, 100)
        #: IF's ``support_noise_less_qsample_steps`` (pdm_pure.py:48).
        less_qsample_steps: int = bounded(5, 0, 98)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        pixel = self.pixel_model(images, model)
        timesteps = pdm_timesteps(10, self.config.respaced_steps, pixel.num_train_timesteps)
        try:
            start = support_timestep(timesteps, self.config.less_qsample_steps)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None
        purified = at_pixel_resolution(
            images,
            pixel,
            lambda small: pixel.reverse(pixel.noise_to(small, start, generator), timesteps, generator),
        )
        note(context, self.name, "pixel_model", describe_pixel_model(pixel))
        note(context, self.name, "support_timestep", start)
        note(context, self.name, "timesteps", timesteps)
        return purified
