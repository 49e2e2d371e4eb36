"""Noisy upscaling: add noise, shrink by 4, and grow back with a 4× upscaler.

Hönig et al., "Adversarial Perturbations Cannot Reliably Protect Artists From Generative
AI" (arXiv 2406.12027): Gaussian noise drowns the perturbation and the Stable Diffusion x4
upscaler (Rombach et al., arXiv 2112.10752; ``stabilityai/stable-diffusion-x4-upscaler``)
restores a clean-looking image from the small noisy one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry
from cloakbench.mimicry.filters import add_noise

log = logging.getLogger(__name__)

SD_UPSCALER_ID = "stabilityai/stable-diffusion-x4-upscaler"
FACTOR = 4


def find_cached_upscaler() -> str | None:
    """The local Hugging Face cache snapshot of the SD x4 upscaler, or ``None`` (never downloads)."""
    from cloakbench.core.models import ModelError, resolve_hub_cache

    try:
        return str(resolve_hub_cache(SD_UPSCALER_ID))
    except ModelError:
        return None


def load_upscaler(path: str, device, dtype):
    """``StableDiffusionUpscalePipeline`` from a local folder or cached hub id: safetensors, offline."""
    from diffusers import StableDiffusionUpscalePipeline

    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(
            path, local_files_only=True, use_safetensors=True, torch_dtype=dtype,
        )
    except (OSError, ValueError) as error:
        raise AttackUnavailable(
            f"upscale: cannot load the x4 upscaler from {path!r} offline with safetensors ({error}). Copy "
            f"{SD_UPSCALER_ID} (its *.safetensors, *.json and tokenizer files) there from a machine with "
            "network, or set upscale.upscaler_path=bicubic"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@MIMICRY.register("upscale")
class NoisyUpscale(Mimicry):
    """Noisy upscaling (Hönig et al., arXiv 2406.12027): σ = 0.1 noise, ×¼ down, ×4 up with the SD x4 upscaler.

    Steps: ``clamp(x + σ·ε)`` (ε from the generator), bicubic antialiased downsampling to
    ``H/4 × W/4``, then back to ``H × W`` with the Stable Diffusion x4 upscaler if one is
    available, else bicubic interpolation. ``context.notes["upscaler"]`` says which ran.

    ``upscaler_path``:
        ``""`` (default): the SD x4 upscaler from the local Hugging Face cache if it is there,
            else bicubic (no download is ever tried).
        ``"bicubic"``: bicubic, always.
        a folder or a cached hub id: that upscaler; if it cannot be loaded offline (with
            safetensors) the attack is unavailable, never silently bicubic.
    Upscaler settings are diffusers' defaults: ``upscaler_steps`` 75, ``upscaler_guidance``
    9.0, ``upscaler_noise_level`` 20; the prompt is empty (a purification does not know the
    attack's prompt). Image sides must be divisible by 4.
    """

    version = 1
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        sigma: float = 0.1
        upscaler_path: str = ""
        upscaler_steps: int = 75
        upscaler_guidance: float = 9.0
        upscaler_noise_level: int = 20

    def __init__(self, config=None):
        super().__init__(config)
        self._upscaler = None  # loaded once per instance, on first use

    def upscaler_source(self) -> str | None:
        """The upscaler folder/id this instance will use, or ``None`` for bicubic."""
        path = self.config.upscaler_path.strip()
        if path.lower() == "bicubic":
            return None
        if path:
            return path
        return find_cached_upscaler()

    def check_available(self) -> None:
        path = self.config.upscaler_path.strip()
        if path and path.lower() != "bicubic" and not Path(path).expanduser().exists() and path.count("/") != 1:
            raise AttackUnavailable(f"upscale: upscaler_path {path!r} is neither a folder nor a hub id "
                                    "(owner/name); set it to the SD x4 upscaler's folder or to 'bicubic'")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, model=None, *, generator: torch.Generator,
                 context: AttackContext | None = None) -> torch.Tensor:
        check_images(images, self.name)
        self.check_available()
        height, width = images.shape[-2:]
        if height % FACTOR or width % FACTOR:
            raise ValueError(f"upscale: image sides must be divisible by {FACTOR}, got {width}x{height}")
        source = self.upscaler_source()
        if source is not None and self._upscaler is None:
            device = model.device if model is not None else images.device
            dtype = model.dtype if model is not None else torch.float32
            self._upscaler = load_upscaler(source, device, dtype)
        noisy = add_noise(images, self.config.sigma, generator)
        small = torch.nn.functional.interpolate(noisy, size=(height // FACTOR, width // FACTOR), mode="bicubic",
                                                antialias=True, align_corners=False).clamp(0.0, 1.0)
        if source is None:
            # Bicubic overshoots at edges; the clamp keeps a valid image.
            restored = torch.nn.functional.interpolate(small, size=(height, width), mode="bicubic",
                                                       align_corners=False).clamp(0.0, 1.0)
            which = "bicubic"
        else:
            restored = self._upscaler(
                prompt=[""] * images.shape[0], image=small, num_inference_steps=self.config.upscaler_steps,
                guidance_scale=self.config.upscaler_guidance, noise_level=self.config.upscaler_noise_level,
                generator=generator, output_type="pt",
            ).images.to(images.device, torch.float32)
            if restored.shape[-2:] != (height, width):
                raise ValueError(f"upscale: the upscaler returned {tuple(restored.shape[-2:])}, expected "
                                 f"{(height, width)}; is {source} a 4x upscaler?")
            which = f"sd-x4 ({source})"
        if context is not None:
            context.notes["upscaler"] = which
        log.debug("upscale: %s", which)
        return restored
