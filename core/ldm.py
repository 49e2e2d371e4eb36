"""The ``LDM`` model bundle: the parts every protection and attack uses, frozen.

A bundle is built by a zoo entry (``cloakbench.core.zoo``): seeded random architectures
(``cloakbench.core.architectures``), the shipped toys and local diffusers folders
(``cloakbench.core.folders``). Every parameter is frozen: attacks take gradients with respect
to the image, never the weights (docs/ARCHITECTURE.md, "Contracts").
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Stable Diffusion's DDPM schedule: scaled-linear β from 0.00085 to 0.012 over 1000 steps.
SD_BETA_START, SD_BETA_END, SD_TIMESTEPS = 0.00085, 0.012, 1000


class ModelError(RuntimeError):
    """Missing, partial or unsafe weights; raised in preflight, before any work starts."""


@dataclass
class LDM:
    """A latent diffusion model bundle: the parts every attack and protection uses.

    Images enter as ``(N, 3, H, W)`` float in ``[0, 1]``; :meth:`to_model_range` is the
    one place they become the model's ``[-1, 1]``. Latents are scaled by
    ``scaling_factor`` (0.18215 for SD 1.x/2.x) as in Stable Diffusion.
    """

    name: str
    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype
    weights_hash: str
    resolution: int
    inpaint_unet: Any = None
    scaling_factor: float = 0.18215
    source: str = ""
    conditioning_override: Callable[[int], dict] | None = None
    _prompt_cache: dict = field(default_factory=dict, repr=False)

    # -- ranges and latents -------------------------------------------------
    @staticmethod
    def to_model_range(images: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` -> ``[-1, 1]``: the single conversion point."""
        return images * 2.0 - 1.0

    @staticmethod
    def from_model_range(decoded: torch.Tensor) -> torch.Tensor:
        return ((decoded + 1.0) / 2.0).clamp(0.0, 1.0)

    def posterior(self, images: torch.Tensor):
        """The VAE posterior ``q(z|x)`` (a diagonal Gaussian) of ``images`` in ``[0, 1]``."""
        pixels = self.to_model_range(images.to(self.device, self.dtype))
        return self.vae.encode(pixels).latent_dist

    def encode(
        self, images: torch.Tensor, *, mode: str = "sample", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latent ``z = s * E(x)``; ``mode`` is ``sample`` (the reference's choice) or ``mean``."""
        dist = self.posterior(images)
        if mode == "mean":
            latent = dist.mean
        elif mode == "sample":
            latent = dist.sample(generator=generator)
        else:
            raise ValueError(f"latent mode must be 'sample' or 'mean', got {mode!r}")
        return latent * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` from scaled latents."""
        return self.from_model_range(self.vae.decode(latents / self.scaling_factor).sample)

    # -- conditioning -------------------------------------------------------
    def encode_prompt(self, prompt: str, batch: int = 1) -> torch.Tensor:
        """Text embedding ``c`` of ``prompt``, ``(batch, 77, D)``, cached per prompt."""
        if prompt not in self._prompt_cache:
            if self.conditioning_override is not None:
                self._prompt_cache[prompt] = self.conditioning_override(1)["encoder_hidden_states"]
            else:
                tokens = self.tokenizer(
                    [prompt],
                    padding="max_length",
                    max_length=self.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                )
                with torch.no_grad():
                    hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
                self._prompt_cache[prompt] = hidden.to(self.dtype)
        return self._prompt_cache[prompt].expand(batch, -1, -1)

    def unet_extra_kwargs(self, batch: int) -> dict:
        """Extra UNet inputs some architectures need (SDXL's ``added_cond_kwargs``)."""
        if self.conditioning_override is None:
            return {}
        extra = self.conditioning_override(batch)
        return {k: v for k, v in extra.items() if k != "encoder_hidden_states"}

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor, unet: Any = None
    ) -> torch.Tensor:
        """``ε_θ(z_t, t, c)``."""
        unet = unet if unet is not None else self.unet
        return unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=prompt_embeds,
            **self.unet_extra_kwargs(noisy_latents.shape[0]),
        ).sample

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod.to(self.device)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    # -- pipelines ----------------------------------------------------------
    def pipeline_components(self, unet: Any = None, scheduler: Any = None) -> dict:
        from diffusers import DDIMScheduler

        return dict(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=unet if unet is not None else self.unet,
            scheduler=scheduler if scheduler is not None else DDIMScheduler.from_config(self.scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def img2img_pipeline(self):
        """diffusers' img2img pipeline whose ``image`` is always latents (the caller encodes):
        see ``_latent_img2img_class``."""
        pipe = _latent_img2img_class().from_components(**self.pipeline_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def inpaint_pipeline(self):
        from diffusers import StableDiffusionInpaintPipeline

        if self.inpaint_unet is None:
            raise ModelError(f"model {self.name} has no inpainting UNet (expected an 'inpaint_unet/' folder)")
        pipe = StableDiffusionInpaintPipeline(**self.pipeline_components(unet=self.inpaint_unet))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def text2img_pipeline(self):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(**self.pipeline_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def modules(self) -> dict[str, torch.nn.Module]:
        parts = {
            "vae": self.vae,
            "unet": self.unet,
            "text_encoder": self.text_encoder,
            "inpaint_unet": self.inpaint_unet,
        }
        return {k: v for k, v in parts.items() if isinstance(v, torch.nn.Module)}

    def weights_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self.modules().values() for p in m.parameters())

    def identity(self) -> dict:
        return {"name": self.name, "weights_hash": self.weights_hash, "dtype": str(self.dtype).replace("torch.", "")}

    def save_pretrained(self, folder: Path) -> Path:
        """Write a diffusers-style folder (safetensors only) that :func:`load_model` reads back."""
        folder = Path(folder)
        for part in ("vae", "unet", "text_encoder", "inpaint_unet"):
            module = getattr(self, part)
            if module is not None:
                module.save_pretrained(folder / part, safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.scheduler.save_pretrained(folder / "scheduler")
        (folder / "model_index.json").write_text(
            json.dumps(
                {
                    "_class_name": "StableDiffusionPipeline",
                    "cloakbench_resolution": self.resolution,
                    "scaling_factor": self.scaling_factor,
                },
                indent=1,
            )
        )
        return folder


def freeze(module: torch.nn.Module | None, device: torch.device, dtype: torch.dtype):
    if module is None:
        return None
    module.requires_grad_(False).eval()
    current = next(module.parameters()).dtype
    # Cast only when needed: diffusers warns about a no-op ``to(dtype)`` on some modules.
    return module.to(device=device) if current == dtype else module.to(device=device, dtype=dtype)


def sd_noise_schedule():
    """DDPM with Stable Diffusion's scaled-linear β (0.00085–0.012, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=SD_TIMESTEPS,
        beta_start=SD_BETA_START,
        beta_end=SD_BETA_END,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )


def bundle(name: str, parts: dict, device, dtype, weights_hash: str, resolution: int, **extra) -> LDM:
    """An :class:`LDM` of ``parts`` (``vae``, ``unet``, optional ``text_encoder``, ``tokenizer``, ``inpaint_unet``,
    ``scaling_factor``) on ``device`` in ``dtype``, frozen, with Stable Diffusion's DDPM schedule."""
    device = torch.device(device)
    return LDM(
        name=name,
        device=device,
        dtype=dtype,
        weights_hash=weights_hash,
        resolution=resolution,
        vae=freeze(parts["vae"], device, dtype),
        unet=freeze(parts["unet"], device, dtype),
        text_encoder=freeze(parts.get("text_encoder"), device, dtype),
        tokenizer=parts.get("tokenizer"),
        inpaint_unet=freeze(parts.get("inpaint_unet"), device, dtype),
        scheduler=sd_noise_schedule(),
        scaling_factor=parts.get("scaling_factor", 0.18215),
        **extra,
    )


@functools.cache
def _latent_img2img_class():
    """``StableDiffusionImg2ImgPipeline`` taking latents of any width as ``image``.

    diffusers recognises latents passed as ``image`` only by their 4 channels, SD 1.x's
    (``prepare_latents`` in ``pipeline_stable_diffusion_img2img.py``: ``image.shape[1] == 4``;
    its ``VaeImageProcessor`` likewise defaults to ``vae_latent_channels=4``), and would
    treat the toy's 16-channel latents as pixels: preprocess them as an image, then push them
    through the VAE encoder. This subclass tells its image processor the VAE's latent width
    and always takes ``image`` as latents, otherwise doing what diffusers does: one
    ``randn_tensor`` draw of the latents' shape from the caller's generator, then
    ``scheduler.add_noise`` to the first kept timestep — for 4-channel latents the same
    numbers as diffusers' own path (the golden SDEdit slices on tiny-random check it).
    """
    from diffusers import StableDiffusionImg2ImgPipeline
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.utils.torch_utils import randn_tensor

    class LatentImg2ImgPipeline(StableDiffusionImg2ImgPipeline):
        @classmethod
        def from_components(cls, **components) -> LatentImg2ImgPipeline:
            # Not an __init__ override: diffusers reads the component names off __init__'s signature.
            pipe = cls(**components)
            pipe.image_processor = VaeImageProcessor(
                vae_scale_factor=pipe.vae_scale_factor, vae_latent_channels=pipe.vae.config.latent_channels
            )
            return pipe

        def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None):
            latents = image.to(device=device, dtype=dtype)
            if latents.shape[1] != self.vae.config.latent_channels:
                raise ValueError(
                    f"img2img: expected latents with {self.vae.config.latent_channels} channels, "
                    f"got a tensor of shape {tuple(latents.shape)}"
                )
            if batch_size * num_images_per_prompt != latents.shape[0]:
                raise ValueError(
                    f"img2img: {latents.shape[0]} latents for {batch_size * num_images_per_prompt} prompts"
                )
            noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
            return self.scheduler.add_noise(latents, noise, timestep)

    return LatentImg2ImgPipeline
