"""Noisy upscaling as Hönig et al. ran it, and its bicubic stand-in under its own name.

Hönig et al., "Adversarial Perturbations Cannot Reliably Protect Artists From Generative AI"
(arXiv:2406.12027; code: ethz-spylab/robust-style-mimicry): Gaussian noise drowns the
perturbation, and the Stable Diffusion x4 upscaler (Rombach et al., arXiv:2112.10752;
``stabilityai/stable-diffusion-x4-upscaler``), itself a diffusion model fed the noisy image
with a high noise level, restores a clean picture. ``upscale`` is that recipe — including their diffusers fork's ``noise_level_sub``, which
stops the upscaler from adding noise of its own — and needs the upscaler; without it the
attack is unavailable, never silently something else. ``upscale-stock`` is stock diffusers'
upscaler call, which does add that noise (a different, stronger purification).
``upscale-bicubic`` is the cheap variant the harness used to substitute (noise, ×¼ down,
bicubic ×4 up): a different attack, so a different name (docs/MIMICRY.md, "Purifications").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images, quantize_8bit
from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry
from cloakbench.mimicry.common import note, resize_to
from cloakbench.mimicry.filters import add_noise

log = logging.getLogger(__name__)

SD_UPSCALER_ID = "stabilityai/stable-diffusion-x4-upscaler"
FACTOR = 4
#: A seeded random upscaler of the SD x4 upscaler's shape, built from a config, for tests only.
TINY_RANDOM_UPSCALER = "tiny-random-upscaler"


def find_cached_upscaler(path: str | None = None):
    """The SD x4 upscaler folder (``path``, ``CLOAKBENCH_SD_X4_UPSCALER`` or the HF cache), or ``None``."""
    from cloakbench.core import weights

    return weights.find(weights.SD_X4_UPSCALER, path or None)


def build_tiny_upscaler(seed: int = 0):
    """``StableDiffusionUpscalePipeline`` with seeded random tiny parts of the SD x4 upscaler's shape.

    VAE with ×4 spatial factor and 4 latent channels, a UNet taking the latent concatenated
    with the low-resolution image (7 channels) and the noise level as a class label (0-350),
    the project's tokenizer and a tiny CLIP text encoder. For tests only: it shows the code
    path runs, its pictures mean nothing.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from cloakbench.core.architectures import project_tokenizer

    tokenizer = project_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(16, 16, 32),
            norm_num_groups=8,
            scaling_factor=0.08333,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
        )
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=7,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=4,
            num_class_embeds=351,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=32,
            )
        )
    for module in (vae, unet, text_encoder):
        module.eval().requires_grad_(False)
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(),
        max_noise_level=350,
    )


def load_upscaler(folder, device, dtype):
    """``StableDiffusionUpscalePipeline`` from a local folder: safetensors, offline, every parameter frozen."""
    from diffusers import StableDiffusionUpscalePipeline

    from cloakbench.core import weights

    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            torch_dtype=dtype,
        )
    except (OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise AttackUnavailable(
            f"upscale: cannot load the x4 upscaler from {folder} offline with safetensors ({first_line}); "
            f"{weights.SD_X4_UPSCALER.how_to_get}"
        ) from None
    for part in ("unet", "vae", "text_encoder"):
        getattr(pipe, part).requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class SubtractedNoiseLevelScheduler:
    """The low-resolution noising of Hönig et al.'s diffusers fork, wrapped around stock diffusers' scheduler.

    roberthoenig/diffusers ``src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion_upscale.py``
    adds a ``noise_level_sub`` argument (line 538) and noises the low-resolution image with
    ``low_res_scheduler.add_noise(image, noise, noise_level - noise_level_sub)`` (line 686), while
    the UNet is still conditioned on ``noise_level`` (``class_labels``, line 737). Stock diffusers
    (``StableDiffusionUpscalePipeline.__call__``) calls ``add_noise(image, noise, noise_level)``
    and uses ``low_res_scheduler`` for nothing else, so this wrapper — which forwards every
    attribute to the wrapped scheduler and shifts only ``add_noise``'s timestep — gives the
    fork's computation without a vendored copy. ``noise_level_sub`` = ``noise_level`` noises at
    index 0: ``√ᾱ₀·x + √(1−ᾱ₀)·ε`` (std 0.01 on ``[−1, 1]`` with the upscaler's β₀ = 1e-4).
    """

    def __init__(self, scheduler, noise_level_sub: int):
        self.scheduler = scheduler
        self.noise_level_sub = int(noise_level_sub)

    def add_noise(self, original_samples, noise, timesteps):
        shifted = timesteps - self.noise_level_sub
        if bool((shifted < 0).any()):
            raise ValueError(
                f"upscale: noise_level_sub {self.noise_level_sub} exceeds noise_level {timesteps.tolist()}"
            )
        return self.scheduler.add_noise(original_samples, noise, shifted)

    def __getattr__(self, name):
        return getattr(self.scheduler, name)


def run_upscaler(pipe, noise_level_sub: int, **kwargs):
    """``pipe(**kwargs)`` with the low-resolution image noised at ``noise_level − noise_level_sub``.

    The pipeline's ``low_res_scheduler`` is swapped for :class:`SubtractedNoiseLevelScheduler`
    for this one call and put back afterwards (the instance is cached across calls).
    """
    original = pipe.low_res_scheduler
    # Plain object attribute: DiffusionPipeline.__setattr__ would re-register the component's config.
    object.__setattr__(pipe, "low_res_scheduler", SubtractedNoiseLevelScheduler(original, noise_level_sub))
    try:
        return pipe(**kwargs)
    finally:
        object.__setattr__(pipe, "low_res_scheduler", original)


class _UpscalerAttack(Mimicry):
    """Shared loading and call of the SD x4 upscaler; subclasses fix ``noise_level_sub``."""

    is_purification = True
    QUICK = {"upscaler_steps": 3}

    def __init__(self, config=None):
        super().__init__(config)
        self._upscaler = None  # loaded once per instance, on first use

    def noise_level_sub(self) -> int:
        raise NotImplementedError

    def upscaler_source(self):
        """The upscaler folder this instance will use, ``TINY_RANDOM_UPSCALER``, or ``None`` when absent."""
        path = self.config.upscaler_path.strip()
        if path == TINY_RANDOM_UPSCALER:
            return path
        return find_cached_upscaler(path or None)

    def check_available(self) -> None:
        if self.upscaler_source() is None:
            from cloakbench.core import weights

            path = self.config.upscaler_path.strip() or None
            raise AttackUnavailable(
                f"{self.name}: the Stable Diffusion x4 upscaler is needed; "
                + weights.missing_message(weights.SD_X4_UPSCALER, path)
                + " (upscale-bicubic is the separate bicubic attack.)"
            )

    def _load(self, source, device, dtype):
        if self._upscaler is None:
            if source == TINY_RANDOM_UPSCALER:
                self._upscaler = build_tiny_upscaler().to(device)
                self._upscaler.set_progress_bar_config(disable=True)
            else:
                self._upscaler = load_upscaler(source, device, dtype)
        return self._upscaler

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        self.check_available()
        sub = self.noise_level_sub()
        if sub > self.config.upscaler_noise_level:
            raise ValueError(
                f"{self.name}: upscaler_noise_level_sub ({sub}) must not exceed "
                f"upscaler_noise_level ({self.config.upscaler_noise_level})"
            )
        source = self.upscaler_source()
        device = model.device if model is not None else images.device
        dtype = model.dtype if model is not None else torch.float32
        pipe = self._load(source, device, dtype)
        height, width = images.shape[-2:]
        noisy = quantize_8bit(add_noise(images.to(device), self.config.sigma, generator))
        prompt = self.config.prompt or (context.prompt if context is not None else "")
        restored = run_upscaler(
            pipe,
            sub,
            prompt=[prompt] * images.shape[0],
            image=noisy.to(dtype),  # [0, 1], the processor's range
            num_inference_steps=self.config.upscaler_steps,
            guidance_scale=self.config.upscaler_guidance,
            noise_level=self.config.upscaler_noise_level,
            generator=generator,
            output_type="pt",
        ).images.to(device, torch.float32)
        if restored.shape[-2:] != (FACTOR * height, FACTOR * width):
            raise ValueError(
                f"{self.name}: the upscaler returned {tuple(restored.shape[-2:])}, expected "
                f"{(FACTOR * height, FACTOR * width)}; is {source} a x4 upscaler?"
            )
        note(context, self.name, "upscaler", str(source))
        note(context, self.name, "prompt", prompt)
        note(context, self.name, "low_res_noise_timestep", self.config.upscaler_noise_level - sub)
        log.debug("%s: %s", self.name, source)
        return resize_to(restored.clamp(0.0, 1.0), height, width).to(device=images.device, dtype=torch.float32)


@MIMICRY.register("upscale")
class NoisyUpscale(_UpscalerAttack):
    """Noisy upscaling (Hönig et al., arXiv:2406.12027): σ = 0.1 noise, then the SD x4 upscaler told noise level 320 on an image noised at 0.

    As their code runs it (ethz-spylab/robust-style-mimicry):

    1. ``x ← clip(x + σ·ε)`` with σ 0.1, saved as 8 bits (noise.py:11-22: skimage
       ``random_noise(mode="gaussian", var=σ², clip=True)``; σ from their README's example,
       ``--gaussian_noise 0.1``);
    2. the noisy ``H × W`` image itself goes into the x4 upscaler — no downsampling first
       (upscale.py:34-38) — with ``noise_level=320, noise_level_sub=320`` (upscale.py:36-38) and
       the image's caption as the prompt; the number of steps and the guidance are diffusers'
       defaults, 75 and 9.0 (their call sets neither). In their diffusers fork
       (roberthoenig/diffusers ``pipeline_stable_diffusion_upscale.py:538,686``) that means the
       low-resolution image is noised by ``low_res_scheduler.add_noise`` at ``320 − 320 = 0``
       (std 0.01 on ``[−1, 1]``, i.e. 0.005 on ``[0, 1]``: almost nothing beyond their own σ)
       while the UNet is conditioned on ``class_labels = 320``: the upscaler is *told* the input
       is heavily noised, so it denoises hard, without the extra noise stock diffusers would add
       (at 320 that is ×0.836 and std 0.274 on ``[0, 1]``). Done with stock diffusers by
       :func:`run_upscaler` (:class:`SubtractedNoiseLevelScheduler`), no vendored fork;
    3. the ``4H × 4W`` output is resized back to ``H × W`` (antialiased bicubic): the bench compares
       at the input's size, as their fine-tuning does by resizing to 512² (finetune.py:30-36).

    Deliberate differences: their captions come from BLIP-2 (caption.py, "An illustration of …");
    with no captioning model offline, the run's prompt (``context.prompt``, the images'
    description) stands in, or ``prompt`` when set. ``upscale-stock`` is stock diffusers'
    noising (``noise_level_sub`` 0), a stronger, lower-fidelity purification the paper did not
    measure, under its own name.

    ``upscaler_path``: "" finds the upscaler where ``cloakbench.core.weights.SD_X4_UPSCALER``
    says (``CLOAKBENCH_SD_X4_UPSCALER``, else the Hugging Face cache); a folder names it;
    ``tiny-random-upscaler`` is a seeded random one of the same shape (tests only). When none
    is there the attack is unavailable with the files and the place — ``upscale-bicubic`` is
    the separate, named bicubic attack. ``context.notes["upscale"]`` names the upscaler used
    and the timestep the low-resolution image was noised at.
    """

    version = 3

    @dataclass(frozen=True)
    class Config:
        sigma: float = bounded(0.1, 0.0, 1.0)
        upscaler_path: str = ""
        prompt: str = ""
        upscaler_steps: int = bounded(75, 1, 1000)
        upscaler_guidance: float = bounded(9.0, 0.0, 50.0)
        upscaler_noise_level: int = bounded(320, 0, 350)
        #: Subtracted from ``upscaler_noise_level`` for the low-resolution noising only (their fork's
        #: ``noise_level_sub``; their script passes 320, upscale.py:37).
        upscaler_noise_level_sub: int = bounded(320, 0, 350)

    def noise_level_sub(self) -> int:
        return self.config.upscaler_noise_level_sub


@MIMICRY.register("upscale-stock")
class NoisyUpscaleStockNoising(_UpscalerAttack):
    """σ = 0.1 noise, then stock diffusers' SD x4 upscaler at noise level 320 — which also *noises* the image at t = 320.

    Stock ``StableDiffusionUpscalePipeline`` noises the low-resolution image at the
    ``noise_level`` it conditions the UNet on (``low_res_scheduler.add_noise(image, noise,
    noise_level)``): at 320 that scales the image by √ᾱ₃₂₀ ≈ 0.836 and adds noise of std
    ≈ 0.274 on ``[0, 1]``, about 2.9× the total noise of Hönig et al.'s recipe. This is what
    ``upscale`` computed up to its version 2; it is *not* the paper's attack (their fork
    subtracts ``noise_level_sub`` = 320, see ``upscale``), so it keeps its own name: a
    stronger, lower-fidelity purification, useful to show how much the extra noise buys.
    Same settings as ``upscale`` otherwise (σ 0.1, 75 steps, guidance 9.0, the run's prompt).
    """

    version = 1

    @dataclass(frozen=True)
    class Config:
        sigma: float = bounded(0.1, 0.0, 1.0)
        upscaler_path: str = ""
        prompt: str = ""
        upscaler_steps: int = bounded(75, 1, 1000)
        upscaler_guidance: float = bounded(9.0, 0.0, 50.0)
        upscaler_noise_level: int = bounded(320, 0, 350)

    def noise_level_sub(self) -> int:
        return 0


@MIMICRY.register("upscale-bicubic")
class NoisyBicubicUpscale(Mimicry):
    """Noisy bicubic resampling: σ = 0.1 noise, ×¼ antialiased bicubic down, bicubic ×4 up (no diffusion model).

    ``clamp(x + σ·ε)`` (ε from the generator), bicubic antialiased downsampling to
    ``H/4 × W/4``, bicubic interpolation back to ``H × W``, clamped to ``[0, 1]`` (bicubic
    overshoots at edges). This is what ``upscale`` used to fall back on when no upscaler was
    cached; it is a weak low-pass baseline, not Hönig et al.'s attack, hence its own name.
    Image sides must be divisible by 4.
    """

    version = 1
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        sigma: float = bounded(0.1, 0.0, 1.0)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model=None, *, generator: torch.Generator, context: AttackContext | None = None
    ) -> torch.Tensor:
        check_images(images, self.name)
        height, width = images.shape[-2:]
        if height % FACTOR or width % FACTOR:
            raise ValueError(f"upscale-bicubic: image sides must be divisible by {FACTOR}, got {width}x{height}")
        noisy = add_noise(images, self.config.sigma, generator)
        small = torch.nn.functional.interpolate(
            noisy, size=(height // FACTOR, width // FACTOR), mode="bicubic", antialias=True, align_corners=False
        ).clamp(0.0, 1.0)
        restored = torch.nn.functional.interpolate(
            small, size=(height, width), mode="bicubic", align_corners=False
        ).clamp(0.0, 1.0)
        note(context, self.name, "upscaler", "bicubic")
        return restored
