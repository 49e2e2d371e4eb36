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

from cloakbench.core.families import EPS_UNET, FLOW_TRANSFORMER, NoisePath, inpaints_with_own_denoiser, noise_path
from cloakbench.core.per_image import per_image, splits

#: Stable Diffusion's DDPM schedule: scaled-linear β from 0.00085 to 0.012 over 1000 steps.
SD_BETA_START, SD_BETA_END, SD_TIMESTEPS = 0.00085, 0.012, 1000


class ModelError(RuntimeError):
    """Missing, partial or unsafe weights; raised in preflight, before any work starts."""


def vae_downsampling(vae_config) -> int:
    """Pixels per latent along a side: 2 per down block after the first (diffusers' ``AutoencoderKL``);
    1 without a VAE (a pixel-space model). ``vae_config``: the VAE's config, or its dict, or ``None``."""
    if not vae_config or "block_out_channels" not in vae_config:
        return 1
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


@dataclass(frozen=True)
class TextConditioning:
    """Text conditioning with a pooled vector: token states ``(N, L, D)`` and the pooled vector ``(N, P)``.

    SD 3's MMDiT reads both (``SD3Transformer2DModel.forward``: ``encoder_hidden_states`` and
    ``pooled_projections``); SDXL's UNet reads the token states as ``encoder_hidden_states`` and
    the pooled vector as ``added_cond_kwargs["text_embeds"]`` (:meth:`LDM.predict` adds the
    size ids). An SD 1.x/2.x ε-UNet reads the token states only, so its bundle hands out a
    plain tensor. ``expand``, ``shape`` and row slicing behave as on the token-state tensor, so
    code that only passes conditioning along does not need to know which it holds.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.hidden.shape

    def expand(self, batch: int, *_) -> TextConditioning:
        return TextConditioning(self.hidden.expand(batch, -1, -1), self.pooled.expand(batch, -1))

    def to(self, *args, **kwargs) -> TextConditioning:
        return TextConditioning(self.hidden.to(*args, **kwargs), self.pooled.to(*args, **kwargs))

    def __getitem__(self, rows) -> TextConditioning:
        """Batch rows, as ``tensor[rows]`` on the token states (``[:1]``: the first prompt's; a list or an
        index tensor of rows). An integer is refused: it would drop the batch dimension of both parts."""
        if isinstance(rows, int):
            raise TypeError(f"TextConditioning takes a slice of batch rows (e.g. [:1]), not the integer {rows}")
        return TextConditioning(self.hidden[rows], self.pooled[rows])


@dataclass
class LDM:
    """A latent diffusion model bundle: the parts every attack and protection uses.

    Images enter as ``(N, 3, H, W)`` float in ``[0, 1]``; :meth:`to_model_range` is the
    one place they become the model's ``[-1, 1]``. Latents are ``z = (E(x) − shift_factor) ·
    scaling_factor``: SD 1.x/2.x have scale 0.18215 and no shift; SD 3's 16-channel VAE has
    both (shift 0.0609, scale 1.5305: diffusers ``pipeline_stable_diffusion_3.py``).

    ``family`` (``cloakbench.core.families``) says what the denoiser was trained on: its
    noise path (:meth:`add_noise`), its prediction target (:meth:`prediction_target`) and
    the timestep it reads; :meth:`predict` runs it. ``unet`` holds the denoiser of either
    family — a ``UNet2DConditionModel`` (``eps-unet``) or an ``SD3Transformer2DModel``
    (``flow-transformer``; also reachable as :attr:`denoiser`).

    An SDXL-shaped ε-UNet (:attr:`is_sdxl`: ``addition_embed_type="text_time"``) is the same
    family with richer conditioning: two CLIP text encoders (``text_encoder``,
    ``text_encoder_2``) give :class:`TextConditioning`, and :meth:`predict` — the one place the
    UNet is called — adds ``added_cond_kwargs`` (the pooled vector and the size ids of the
    working size, :meth:`add_time_ids`), so no protection or attack needs to know.
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
    shift_factor: float = 0.0
    family: str = EPS_UNET
    source: str = ""
    conditioning_override: Callable[[int], dict] | None = None
    #: SDXL's second text encoder (``CLIPTextModelWithProjection``: token states and the pooled vector) and its tokenizer.
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    #: SDXL base's model_index.json flag: the unconditional branch of guidance is zeros, not the empty prompt.
    force_zeros_for_empty_prompt: bool = False
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
        if not splits(pixels.shape[0]):
            return self.vae.encode(pixels).latent_dist
        # One image per encoder call (core/per_image.py); the distribution is rebuilt from the
        # concatenated moments by the elementwise arithmetic diffusers applies to each image's.
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        moments = per_image(lambda one: self.vae.encode(one).latent_dist.parameters, pixels.shape[0], pixels)
        return DiagonalGaussianDistribution(moments)

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
        return self.scale_latents(latent)

    def scale_latents(self, unscaled: torch.Tensor) -> torch.Tensor:
        """``(E(x) − shift) · scale``: the denoiser's latent space (no shift for SD 1.x/2.x)."""
        if self.shift_factor:
            unscaled = unscaled - self.shift_factor
        return unscaled * self.scaling_factor

    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`scale_latents`: what the VAE decoder reads."""
        unscaled = latents / self.scaling_factor
        return unscaled + self.shift_factor if self.shift_factor else unscaled

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` from scaled latents."""
        unscaled = self.unscale_latents(latents)
        return self.from_model_range(per_image(lambda z: self.vae.decode(z).sample, unscaled.shape[0], unscaled))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def is_flow(self) -> bool:
        return self.family == FLOW_TRANSFORMER

    @property
    def denoiser(self) -> Any:
        return self.unet

    @property
    def is_sdxl(self) -> bool:
        """An SDXL-shaped ε-UNet: it adds SDXL's pooled-text and size embedding (``addition_embed_type
        "text_time"``, ``UNet2DConditionModel.get_aug_embed``), so it reads :class:`TextConditioning`."""
        return getattr(getattr(self.unet, "config", None), "addition_embed_type", None) == "text_time"

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: ``2 ** (len(block_out_channels) − 1)``, as diffusers' pipelines compute it."""
        return vae_downsampling(self.vae.config)

    @property
    def can_inpaint(self) -> bool:
        """Whether the ``inpaint`` attack can run: an inpainting UNet (``inpaint_unet/``), or a pipeline that
        inpaints with the base denoiser by latent blending (SD 3's, :func:`~cloakbench.core.families.inpaints_with_own_denoiser`;
        SDXL's with its 4-channel base UNet). ``ModelFacts.can_inpaint`` says the same before loading."""
        return self.inpaint_unet is not None or inpaints_with_own_denoiser(self.family) or self.is_sdxl

    # -- conditioning -------------------------------------------------------
    def encode_prompt(self, prompt: str, batch: int = 1) -> torch.Tensor:
        """Text conditioning ``c`` of ``prompt``, cached per prompt: ``(batch, 77, D)`` token states
        (SD 1.x/2.x-shaped eps-unet), or a :class:`TextConditioning` (flow-transformer: SD 3's
        penultimate CLIP states and pooled vector, :func:`flow_text_conditioning`; SDXL: both
        encoders' penultimate states and the second's pooled vector, :func:`sdxl_text_conditioning`)."""
        if prompt not in self._prompt_cache:
            if self.conditioning_override is not None:
                self._prompt_cache[prompt] = self.conditioning_override(1)["encoder_hidden_states"]
            else:
                with torch.no_grad():
                    self._prompt_cache[prompt] = self.condition([prompt])
        return self._prompt_cache[prompt].expand(batch, -1, -1)

    def condition(
        self,
        prompts,
        *,
        text_encoder: Any = None,
        text_encoder_2: Any = None,
        tokenizer: Any = None,
        tokenizer_2: Any = None,
    ):
        """The conditioning of ``prompts`` (a list) in the bundle's dtype, gradients kept, through the given
        (fine-tuned or token-extended) encoders and tokenizers or the bundle's own. The one place each
        layout's conditioning is computed: CLIP's last token states (SD 1.x/2.x), SD 3's
        (:func:`flow_text_conditioning`) or SDXL's (:func:`sdxl_text_conditioning`)."""
        text_encoder = text_encoder if text_encoder is not None else self.text_encoder
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if self.is_sdxl:
            encoders = (text_encoder, text_encoder_2 if text_encoder_2 is not None else self.text_encoder_2)
            tokenizers = (tokenizer, tokenizer_2 if tokenizer_2 is not None else self.tokenizer_2)
            if any(part is None for part in encoders + tokenizers):
                raise ModelError(
                    f"{self.name} is SDXL-shaped: it needs text_encoder, text_encoder_2, tokenizer and tokenizer_2"
                )
            return sdxl_text_conditioning(tokenizers, encoders, prompts, self.device).to(self.dtype)
        ids = tokenize(tokenizer, prompts).to(self.device)
        if self.is_flow:
            return flow_text_conditioning(text_encoder, ids).to(self.dtype)
        return text_encoder(ids)[0].to(self.dtype)

    def negative_conditioning(self, batch: int):
        """The unconditional branch of classifier-free guidance: the empty prompt's conditioning, or zeros
        where the model sets ``force_zeros_for_empty_prompt`` (SDXL base does, in model_index.json; diffusers'
        SDXL pipelines then use zeros when no negative prompt is given, ``pipeline_stable_diffusion_xl.py``
        lines 424–427)."""
        empty = self.encode_prompt("", batch)
        if not self.force_zeros_for_empty_prompt:
            return empty
        if isinstance(empty, TextConditioning):
            return TextConditioning(torch.zeros_like(empty.hidden), torch.zeros_like(empty.pooled))
        return torch.zeros_like(empty)

    def add_time_ids(self, latents: torch.Tensor) -> torch.Tensor:
        """SDXL's size conditioning of ``latents`` ``(N, C, h, w)``: ``(N, 6)`` rows ``original_size +
        crops_coords_top_left + target_size = (H, W, 0, 0, H, W)``, ``H, W`` the working size in pixels.

        What diffusers' SDXL pipelines pass when no size is given: ``original_size = target_size =
        (height, width)`` and crop ``(0, 0)`` (``pipeline_stable_diffusion_xl.py`` lines 731–734 and
        1035–1036; the img2img pipeline reads ``height, width`` off the latents, lines 1297–1304 of
        ``pipeline_stable_diffusion_xl_img2img.py``), and what ``train_dreambooth_lora_sdxl.py``
        (``compute_time_ids``, lines 1477–1480) computes for an image already at the training size
        with no crop — the harness's images are at the working size and never cropped.
        """
        height, width = (int(size) * self.vae_scale_factor for size in latents.shape[-2:])
        ids = torch.tensor([height, width, 0, 0, height, width], device=latents.device, dtype=latents.dtype)
        return ids.expand(latents.shape[0], -1)

    def unet_conditioning(self, conditioning, latents: torch.Tensor) -> dict:
        """The ε-UNet's conditioning keywords for ``latents``: ``encoder_hidden_states``, and for SDXL
        ``added_cond_kwargs = {"text_embeds": pooled, "time_ids": add_time_ids(latents)}`` (diffusers
        ``pipeline_stable_diffusion_xl.py`` lines 1126 and 1208)."""
        if not self.is_sdxl:
            return {"encoder_hidden_states": conditioning}
        if not isinstance(conditioning, TextConditioning):
            raise ModelError(
                f"{self.name} is SDXL-shaped: its UNet needs the pooled text vector with the token states "
                "(a TextConditioning from encode_prompt or condition), not token states alone"
            )
        return {
            "encoder_hidden_states": conditioning.hidden,
            "added_cond_kwargs": {"text_embeds": conditioning.pooled, "time_ids": self.add_time_ids(latents)},
        }

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor, unet: Any = None
    ) -> torch.Tensor:
        """``ε_θ(z_t, t, c)`` of an ε-prediction model (a flow transformer predicts velocity: :meth:`predict`)."""
        if self.is_flow:
            raise ModelError(
                f"{self.name} is a flow transformer: it predicts the velocity ε − z, not ε; "
                "this code path is written for ε-prediction models"
            )
        return self.predict(noisy_latents, timesteps, prompt_embeds, unet=unet)

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning, unet: Any = None):
        """The denoiser's output at grid indices ``timesteps``: ``ε̂`` (eps-unet) or ``v̂`` (flow-transformer).

        Compare it with :meth:`prediction_target`. ``unet`` replaces the bundle's denoiser
        (a fine-tuned copy).
        """
        net = unet if unet is not None else self.unet

        def denoise(latents: torch.Tensor, steps: torch.Tensor, condition) -> torch.Tensor:
            if not self.is_flow:
                return net(latents, steps, **self.unet_conditioning(condition, latents)).sample
            return net(
                latents,
                encoder_hidden_states=condition.hidden,
                pooled_projections=condition.pooled,
                timestep=self.noise_path.model_timesteps(steps).to(latents.dtype),
            ).sample

        # One call for the batch, or one per image inside per_image.one_image_per_call.
        return per_image(denoise, noisy_latents.shape[0], noisy_latents, timesteps, conditioning)

    @functools.cached_property
    def noise_path(self) -> NoisePath:
        """The family's forward process and target on the scheduler's training grid."""
        return noise_path(self.family, self.scheduler)

    def add_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``z_t`` at grid indices ``timesteps``: ``√ᾱ_t z + √(1−ᾱ_t) ε`` or ``(1−σ_t) z + σ_t ε``."""
        return self.noise_path.add_noise(latents, timesteps, noise)

    def prediction_target(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` is trained to output: ``ε`` or ``v = ε − z``."""
        return self.noise_path.target(latents, noise)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``ᾱ_t`` of a DDPM schedule; a flow model has none (its path is :meth:`add_noise`)."""
        if self.is_flow:
            raise ModelError(f"{self.name} is a flow transformer: it has no DDPM ᾱ_t (its noise path is σ_t)")
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

    def flow_pipeline_components(self, transformer: Any = None) -> dict:
        """SD 3 pipeline components: one CLIP encoder in ``text_encoder``; the second CLIP and T5
        slots are empty (the bundle passes precomputed conditioning, :meth:`pipeline_prompt_kwargs`)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return dict(
            transformer=transformer if transformer is not None else self.unet,
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config),
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=None,
            tokenizer_2=None,
            text_encoder_3=None,
            tokenizer_3=None,
        )

    def xl_pipeline_components(self, unet: Any = None, **replace) -> dict:
        """SDXL pipeline components: both encoders and tokenizers (``replace`` swaps any, e.g. a concept's
        token-extended copies), DDIM from the model's schedule, ``force_zeros_for_empty_prompt`` as the
        model says, no watermarker (it would change the pixels every metric reads)."""
        from diffusers import DDIMScheduler

        components = dict(
            vae=self.vae,
            text_encoder=self.text_encoder,
            text_encoder_2=self.text_encoder_2,
            tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer_2,
            unet=unet if unet is not None else self.unet,
            scheduler=DDIMScheduler.from_config(self.scheduler.config),
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
            add_watermarker=False,
        )
        return components | replace

    def pipeline_prompt_kwargs(self, prompt: str, batch: int, guidance_scale: float) -> dict:
        """An SD 3 or SDXL pipeline's ``prompt_embeds`` / ``pooled_prompt_embeds`` (and the negative ones
        when guidance runs), computed by :meth:`encode_prompt` exactly as the protections see them; the
        negative ones by :meth:`negative_conditioning` (the empty prompt, or SDXL base's zeros)."""
        return conditioning_kwargs(
            self.encode_prompt(prompt, batch),
            self.negative_conditioning(batch) if guidance_scale > 1.0 else None,
        )

    def img2img_pipeline(self):
        """diffusers' img2img pipeline whose ``image`` is always latents (the caller encodes):
        see ``_latent_img2img_class``. A flow model gets SD 3's ``StableDiffusion3Img2ImgPipeline``
        as it is: it takes ``image`` as latents whenever the channels are the VAE's
        (``pipeline_stable_diffusion_3_img2img.py``, ``prepare_latents``: ``image.shape[1] ==
        self.vae.config.latent_channels``) and its image processor knows the VAE's width."""
        if self.is_flow:
            from diffusers import StableDiffusion3Img2ImgPipeline

            pipe = StableDiffusion3Img2ImgPipeline(**self.flow_pipeline_components())
            pipe.set_progress_bar_config(disable=True)
            return pipe
        if self.is_sdxl:
            # SDXL's img2img takes ``image`` as latents when it has 4 channels, SDXL's width
            # (``pipeline_stable_diffusion_xl_img2img.py``, ``prepare_latents``: ``image.shape[1] == 4``).
            from diffusers import StableDiffusionXLImg2ImgPipeline

            pipe = StableDiffusionXLImg2ImgPipeline(**self.xl_pipeline_components())
            pipe.set_progress_bar_config(disable=True)
            return pipe
        pipe = _latent_img2img_class().from_components(**self.pipeline_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def inpaint_pipeline(self):
        if self.is_flow:
            # SD 3's inpainting pipeline with the 16-channel transformer itself: it repaints by
            # blending the re-noised known latents outside the mask at every step.
            from diffusers import StableDiffusion3InpaintPipeline

            pipe = StableDiffusion3InpaintPipeline(**self.flow_pipeline_components())
            pipe.set_progress_bar_config(disable=True)
            return pipe
        if self.is_sdxl:
            # SDXL's inpainting pipeline: with a 9-channel inpainting UNet (an inpaint_unet/ folder) it
            # conditions on the mask and masked latents; with the 4-channel base UNet it repaints by
            # blending the re-noised known latents outside the mask after every step
            # (``pipeline_stable_diffusion_xl_inpaint.py``, ``num_channels_unet == 4``).
            from diffusers import StableDiffusionXLInpaintPipeline

            _quiet_empty_fp32_warning()
            pipe = StableDiffusionXLInpaintPipeline(**self.xl_pipeline_components(unet=self.inpaint_unet))
            pipe.set_progress_bar_config(disable=True)
            return pipe
        from diffusers import StableDiffusionInpaintPipeline

        if self.inpaint_unet is None:
            raise ModelError(f"model {self.name} has no inpainting UNet (expected an 'inpaint_unet/' folder)")
        pipe = StableDiffusionInpaintPipeline(**self.pipeline_components(unet=self.inpaint_unet))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def text2img_pipeline(self):
        if self.is_sdxl:
            from diffusers import StableDiffusionXLPipeline

            pipe = StableDiffusionXLPipeline(**self.xl_pipeline_components())
            pipe.set_progress_bar_config(disable=True)
            return pipe
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(**self.pipeline_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def modules(self) -> dict[str, torch.nn.Module]:
        parts = {
            "vae": self.vae,
            ("transformer" if self.is_flow else "unet"): self.unet,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
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
        for part in ("vae", "unet", "text_encoder", "text_encoder_2", "inpaint_unet"):
            module = getattr(self, part)
            if module is not None:
                name = "transformer" if part == "unet" and self.is_flow else part
                module.save_pretrained(folder / name, safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        if self.tokenizer_2 is not None:
            self.tokenizer_2.save_pretrained(folder / "tokenizer_2")
        self.scheduler.save_pretrained(folder / "scheduler")
        pipeline = "StableDiffusion3Pipeline" if self.is_flow else "StableDiffusionPipeline"
        index = {
            "_class_name": "StableDiffusionXLPipeline" if self.is_sdxl else pipeline,
            "cloakbench_family": self.family,
            "cloakbench_resolution": self.resolution,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
        }
        if self.is_sdxl:
            index["force_zeros_for_empty_prompt"] = self.force_zeros_for_empty_prompt
        (folder / "model_index.json").write_text(json.dumps(index, indent=1))
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


def tokenize(tokenizer, prompts) -> torch.Tensor:
    """Token ids ``(N, L)`` of ``prompts``, padded to and truncated at the tokenizer's length, as every
    diffusers pipeline tokenizes a prompt."""
    return tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def conditioning_kwargs(conditional: TextConditioning, negative: TextConditioning | None) -> dict:
    """An SD 3 or SDXL pipeline's precomputed-conditioning keywords: ``prompt_embeds``,
    ``pooled_prompt_embeds`` and, when ``negative`` is given (guidance on), the negative ones."""
    kwargs = {"prompt_embeds": conditional.hidden, "pooled_prompt_embeds": conditional.pooled}
    if negative is not None:
        kwargs |= {"negative_prompt_embeds": negative.hidden, "negative_pooled_prompt_embeds": negative.pooled}
    return kwargs


def sdxl_text_conditioning(tokenizers, text_encoders, prompts, device) -> TextConditioning:
    """SDXL's conditioning from its two CLIP encoders (diffusers ``StableDiffusionXLPipeline.encode_prompt``,
    ``pipeline_stable_diffusion_xl.py`` lines 381–421 with ``clip_skip=None``): each encoder's penultimate
    token states ``hidden_states[-2]``, concatenated on the feature axis (768 + 1280 = 2048 in SDXL),
    and the pooled vector of the last encoder, ``CLIPTextModelWithProjection``'s projected ``text_embeds``
    (line 411: "only ALWAYS interested in the pooled output of the final text encoder")."""
    states = []
    for tokenizer, text_encoder in zip(tokenizers, text_encoders):
        out = text_encoder(tokenize(tokenizer, prompts).to(device), output_hidden_states=True)
        states.append(out.hidden_states[-2])
    return TextConditioning(torch.cat(states, dim=-1), out.text_embeds)


def flow_text_conditioning(text_encoder, input_ids: torch.Tensor) -> TextConditioning:
    """SD 3's conditioning from one CLIP encoder with a projection: the penultimate layer's token
    states and the projected pooled vector (diffusers ``StableDiffusion3Pipeline._get_clip_prompt_embeds``
    with ``clip_skip=None``: ``hidden_states[-2]`` and ``text_embeds``)."""
    out = text_encoder(input_ids, output_hidden_states=True)
    return TextConditioning(out.hidden_states[-2], out.text_embeds)


def flow_noise_schedule(shift: float = 3.0):
    """``FlowMatchEulerDiscreteScheduler`` on 1000 steps with ``shift`` (SD 3 Medium ships 3.0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=SD_TIMESTEPS, shift=shift)


def bundle(name: str, parts: dict, device, dtype, weights_hash: str, resolution: int, **extra) -> LDM:
    """An :class:`LDM` of ``parts`` (``vae``, ``unet``, optional ``text_encoder``, ``tokenizer``, ``inpaint_unet``,
    SDXL's ``text_encoder_2``, ``tokenizer_2``, ``force_zeros_for_empty_prompt``,
    ``scaling_factor``, ``shift_factor``, ``family``, ``scheduler``) on ``device`` in ``dtype``, frozen; the
    scheduler defaults to Stable Diffusion's DDPM schedule for ``eps-unet``."""
    device = torch.device(device)
    family = parts.get("family", EPS_UNET)
    if family == FLOW_TRANSFORMER:
        # SD 3's pipelines read the latent factors off the VAE's config; a shared VAE (toy-flow
        # reads toy's) carries the other model's, so the bundle's are written in (in memory only).
        parts["vae"].register_to_config(
            scaling_factor=parts.get("scaling_factor", 1.0), shift_factor=float(parts.get("shift_factor") or 0.0)
        )
    scheduler = parts.get("scheduler") or (flow_noise_schedule() if family == FLOW_TRANSFORMER else sd_noise_schedule())
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
        text_encoder_2=freeze(parts.get("text_encoder_2"), device, dtype),
        tokenizer_2=parts.get("tokenizer_2"),
        force_zeros_for_empty_prompt=bool(parts.get("force_zeros_for_empty_prompt", False)),
        scheduler=scheduler,
        scaling_factor=parts.get("scaling_factor", 0.18215),
        shift_factor=float(parts.get("shift_factor") or 0.0),
        family=family,
        **extra,
    )


@functools.cache
def _quiet_empty_fp32_warning() -> None:
    """Drop diffusers' "modules … that should be kept in float32: []" warning, which its SDXL inpaint
    pipeline triggers on every call by casting the VAE for ``force_upcast`` (``_encode_vae_image``):
    with an empty list there is nothing kept in float32 to warn about. Other warnings pass."""
    import logging

    class EmptyListOnly(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "should be kept in float32: []" not in record.getMessage()

    logging.getLogger("diffusers.models.modeling_utils").addFilter(EmptyListOnly())


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
