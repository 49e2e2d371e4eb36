"""The ``LDM`` model bundle and ``load_model(spec)``.

Specs:
- ``tiny-random``: seeded small Stable-Diffusion-shaped components (tests; ~1 s on CPU).
- ``toy``: the small latent diffusion model this project trains and ships (``models/toy``).
- ``sd15-arch`` / ``sd21-arch`` / ``sdxl-arch``: the real architectures with random
  weights, for cost measurement where no weights are needed.
- a local diffusers folder, or a hub id already in the local Hugging Face cache,
  loaded offline with ``use_safetensors=True`` after a preflight.

Every parameter is frozen: attacks take gradients w.r.t. the image, never the weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cloakbench.core.provenance import PROJECT_ROOT, sha256_files
from cloakbench.core.registry import Registry
from cloakbench.core.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

SD_BETA_START, SD_BETA_END, SD_TIMESTEPS = 0.00085, 0.012, 1000
TOY_MODEL_DIR = PROJECT_ROOT / "models" / "toy"

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "inpaint_unet")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


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


MODELS: Registry[Callable[..., LDM]] = Registry("model")


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


def random_weights_hash(configs: dict, seed: int) -> str:
    """The identity of seeded random weights: the seed and a hash of the configs they are built from."""
    digest = hashlib.sha256(json.dumps([configs], sort_keys=True, default=str).encode()).hexdigest()
    return f"random:{seed}:{digest[:16]}"


def project_tokenizer():
    """The project's byte-level CLIP tokenizer, built in a temporary folder removed after loading."""
    with tempfile.TemporaryDirectory(prefix="cloakbench-tokenizer-") as folder:
        return build_tokenizer(Path(folder))


# -- tiny-random ------------------------------------------------------------------
TINY_RESOLUTION = 64


def tiny_configs() -> dict[str, dict]:
    """Small SD-shaped configs: VAE downsampling 8 with 4 latent channels, as in SD."""
    vae = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 32, 32),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=TINY_RESOLUTION,
    )
    unet = dict(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
    )
    return {"vae": vae, "unet": unet, "text": text}


def build_components(
    configs: dict[str, dict], seed: int, tokenizer_dir: Path | None = None, inpaint: bool = True
) -> dict:
    """Seeded random SD-shaped components from ``configs`` (see :func:`tiny_configs`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(tokenizer_dir) if tokenizer_dir is not None else project_tokenizer()
    # A private RNG stream: building a model must not move the caller's global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**configs["vae"])
        unet = UNet2DConditionModel(**configs["unet"])
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **configs["text"],
        )
        text_encoder = CLIPTextModel(text_config)
        inpaint_unet = UNet2DConditionModel(**{**configs["unet"], "in_channels": 9}) if inpaint else None
    return dict(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, inpaint_unet=inpaint_unet)


@MODELS.register("tiny-random")
def tiny_random(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0, **_) -> LDM:
    """Seeded tiny random SD-shaped model (64², latent 8²) for tests; builds in about a second."""
    parts = build_components(tiny_configs(), seed)
    return _bundle("tiny-random", parts, device, dtype, random_weights_hash(tiny_configs(), seed), TINY_RESOLUTION)


def _bundle(name: str, parts: dict, device, dtype, weights_hash: str, resolution: int, **extra) -> LDM:
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


# -- the real architectures with random weights -------------------------------------
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512,
)
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
)
SD21_UNET = {
    **SD15_UNET,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
SD21_TEXT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    projection_dim=512,
    hidden_act="gelu",
)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)


def _arch_model(
    name: str,
    unet_cfg: dict,
    text_cfg: dict | None,
    resolution: int,
    device,
    dtype,
    seed: int,
    scaling_factor: float = 0.18215,
) -> LDM:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = project_tokenizer()
    with torch.random.fork_rng(devices=[]):  # leave the caller's global seed where it was
        torch.manual_seed(seed)
        parts: dict[str, Any] = {
            "vae": AutoencoderKL(**SD_VAE),
            "unet": UNet2DConditionModel(**unet_cfg),
            "tokenizer": tokenizer,
            "scaling_factor": scaling_factor,
        }
        if text_cfg is not None:
            parts["text_encoder"] = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=49408,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **text_cfg,
                )
            )
    override = None
    if text_cfg is None:
        # SDXL's two text encoders only run once per prompt, never inside a PGD step, so
        # the cost benchmark feeds seeded embeddings of the true shapes instead.
        generator = torch.Generator().manual_seed(seed)
        hidden = torch.randn(1, 77, unet_cfg["cross_attention_dim"], generator=generator)
        pooled = torch.randn(1, 1280, generator=generator)
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)

        def override(batch: int, _dev=torch.device(device), _dt=dtype) -> dict:
            return {
                "encoder_hidden_states": hidden.to(_dev, _dt).expand(batch, -1, -1),
                "added_cond_kwargs": {
                    "text_embeds": pooled.to(_dev, _dt).expand(batch, -1),
                    "time_ids": time_ids.to(_dev, _dt).expand(batch, -1),
                },
            }

    return _bundle(
        name,
        parts,
        device,
        dtype,
        random_weights_hash(_arch_configs(unet_cfg, text_cfg), seed),
        resolution,
        conditioning_override=override,
    )


def _arch_configs(unet_cfg: dict, text_cfg: dict | None) -> dict:
    return {"unet": unet_cfg, "text": text_cfg, "vae": SD_VAE}


@MODELS.register("sd15-arch")
def sd15_arch(device="cpu", dtype=torch.float32, seed: int = 0, **_) -> LDM:
    """Stable Diffusion 1.5 architecture (UNet 860 M), random weights: cost measurement only."""
    return _arch_model("sd15-arch", SD15_UNET, SD15_TEXT, 512, device, dtype, seed)


@MODELS.register("sd21-arch")
def sd21_arch(device="cpu", dtype=torch.float32, seed: int = 0, **_) -> LDM:
    """Stable Diffusion 2.1-base architecture (OpenCLIP-H text), random weights: cost only."""
    return _arch_model("sd21-arch", SD21_UNET, SD21_TEXT, 512, device, dtype, seed)


@MODELS.register("sdxl-arch")
def sdxl_arch(device="cpu", dtype=torch.float32, seed: int = 0, **_) -> LDM:
    """SDXL base architecture (UNet 2.6 B), random weights and seeded conditioning: cost only."""
    return _arch_model("sdxl-arch", SDXL_UNET, None, 1024, device, dtype, seed, scaling_factor=0.13025)


@MODELS.register("toy")
def toy(device="cpu", dtype=torch.float32, allow_pickle: bool = False, **_) -> LDM:
    """The small LDM this project trains and ships (models/toy; see its MODEL_CARD.md)."""
    if not (TOY_MODEL_DIR / "model_index.json").exists():
        raise ModelError(
            f"the toy model is not in {TOY_MODEL_DIR}: train it with `python scripts/train_toy.py` "
            "or use --model tiny-random"
        )
    return load_folder(TOY_MODEL_DIR, device=device, dtype=dtype, name="toy")


TOY_B_MODEL_DIR = PROJECT_ROOT / "models" / "toy-b"


@MODELS.register("toy-b")
def toy_b(device="cpu", dtype=torch.float32, allow_pickle: bool = False, **_) -> LDM:
    """toy's VAE with an independently trained UNet and text encoder (models/toy-b): the
    second model of transfer experiments (protect on one, attack with the other)."""
    if not (TOY_B_MODEL_DIR / "model_index.json").exists():
        raise ModelError(
            f"the toy-b model is not in {TOY_B_MODEL_DIR}: train it with `python scripts/train_toy.py --name toy-b "
            "--seed 1 --vae-from models/toy/vae ...` (see models/toy-b/MODEL_CARD.md) or use --model toy"
        )
    return load_folder(TOY_B_MODEL_DIR, device=device, dtype=dtype, name="toy-b")


TOY_C_MODEL_DIR = PROJECT_ROOT / "models" / "toy-c"


@MODELS.register("toy-c")
def toy_c(device="cpu", dtype=torch.float32, allow_pickle: bool = False, **_) -> LDM:
    """A second LDM with its *own* VAE (4 latent channels, as SD 1.x; toy's has 16) and its
    own denoiser (models/toy-c: toy v2, kept): transfer between latent spaces."""
    if not (TOY_C_MODEL_DIR / "model_index.json").exists():
        raise ModelError(
            f"the toy-c model is not in {TOY_C_MODEL_DIR}: restore it from the repository (it is toy v2; see "
            "models/toy-c/MODEL_CARD.md) or use --model toy"
        )
    return load_folder(TOY_C_MODEL_DIR, device=device, dtype=dtype, name="toy-c")


@MODELS.register("toy-pixel")
def toy_pixel(device="cpu", dtype=torch.float32, **_):
    """The pixel-space DDPM for pixel purifications (models/toy-pixel). Returns a
    ``PixelDiffusion`` (cloakbench.core.pixel_models), not an ``LDM``: protections and
    latent attacks cannot run on it."""
    from cloakbench.core.pixel_models import load_pixel_model

    return load_pixel_model("toy-pixel", device=device, dtype=dtype)


# -- identities without building ----------------------------------------------------
#: Registry models built from configs with seeded random weights: name -> (configs, resolution).
RANDOM_MODELS: dict[str, Callable[[], tuple[dict, int]]] = {
    "tiny-random": lambda: (tiny_configs(), TINY_RESOLUTION),
    "sd15-arch": lambda: (_arch_configs(SD15_UNET, SD15_TEXT), 512),
    "sd21-arch": lambda: (_arch_configs(SD21_UNET, SD21_TEXT), 512),
    "sdxl-arch": lambda: (_arch_configs(SDXL_UNET, None), 1024),
}
#: Registry models that are folders this project ships: name -> folder.
FOLDER_MODELS: dict[str, Path] = {"toy": TOY_MODEL_DIR, "toy-b": TOY_B_MODEL_DIR, "toy-c": TOY_C_MODEL_DIR}


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


@dataclass(frozen=True)
class ModelFacts:
    """What a plan needs to know about a model, read from configs and files without building it."""

    name: str
    weights_hash: str
    resolution: int

    def identity(self, dtype: str | torch.dtype) -> dict:
        """The same dict :meth:`LDM.identity` gives once the model is built."""
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "dtype": str(parse_dtype(dtype)).replace("torch.", ""),
        }


def model_facts(spec: str, *, seed: int = 0, allow_pickle: bool = False) -> ModelFacts:
    """Name, weights hash and working resolution of ``spec`` (as :func:`load_model` takes it).

    Nothing is built and no weight is loaded: random models hash their configs and seed,
    folders hash their weight files after the preflight. A plan of cells is keyed on this,
    so planning never needs a model in memory (docs/ARCHITECTURE.md, "Plan and execute").
    """
    if spec in RANDOM_MODELS:
        configs, resolution = RANDOM_MODELS[spec]()
        return ModelFacts(spec, random_weights_hash(configs, seed), resolution)
    if spec in FOLDER_MODELS:
        folder, name = FOLDER_MODELS[spec], spec
    elif spec in MODELS:
        raise ModelError(
            f"model {spec!r} is registered but declares no facts: add it to RANDOM_MODELS or "
            "FOLDER_MODELS in cloakbench/core/models.py"
        )
    else:
        folder, name = _folder_of(spec)
    weights = preflight(folder, allow_pickle=allow_pickle)
    return ModelFacts(name, sha256_files(weights.values()), _folder_resolution(folder))


def _folder_of(spec: str) -> tuple[Path, str]:
    """A local folder or a cached hub id; an unknown name gets the registry's near-miss answer."""
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        return path, path.name
    if spec.count("/") == 1:
        return resolve_hub_cache(spec), spec
    MODELS.get(spec)  # raises "unknown model ...; did you mean ..."
    raise AssertionError("unreachable")


def _read_json(path: Path) -> dict:
    """A model folder's JSON file, or a ModelError naming it (a broken file is not a traceback)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(
            f"{path} cannot be read as JSON ({error}); restore it from the model's original download"
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds no JSON object; restore it from the model's original download")
    return data


def _folder_resolution(folder: Path) -> int:
    """The working size: ``cloakbench_resolution`` in model_index.json, else the VAE's ``sample_size``."""
    index = _read_json(folder / "model_index.json") if (folder / "model_index.json").exists() else {}
    if "cloakbench_resolution" in index:
        return int(index["cloakbench_resolution"])
    return int(_read_json(folder / "vae" / "config.json").get("sample_size", 512))


# -- local folders and the Hugging Face cache ---------------------------------------
def preflight(folder: Path, *, allow_pickle: bool = False) -> dict[str, Path]:
    """Check a diffusers folder before any work; return each weight component's file.

    Names the first missing file or folder and says how to get the weights; refuses
    pickle-only weights unless ``allow_pickle`` (then loaded with ``weights_only=True``).
    """
    how = (
        "download it on a machine with network (e.g. `huggingface-cli download "
        "stable-diffusion-v1-5/stable-diffusion-v1-5 --include '*.safetensors' '*.json' '*.txt'`) "
        "and copy the folder here, or pass --model tiny-random"
    )
    if not folder.exists():
        raise ModelError(f"model folder {folder} does not exist; {how}")
    if not folder.is_dir():
        raise ModelError(f"model path {folder} is not a folder of a diffusers model; {how}")
    found: dict[str, Path] = {}
    for part in COMPONENTS + ("inpaint_unet",):
        sub = folder / part
        optional = part == "inpaint_unet"
        if not sub.is_dir():
            if optional:
                continue
            raise ModelError(f"model folder {folder} is missing {sub}/ ; {how}")
        if part in ("tokenizer", "scheduler"):
            needed = ["scheduler_config.json"] if part == "scheduler" else []
            for name in needed:
                if not (sub / name).exists():
                    raise ModelError(f"missing {sub / name}; {how}")
            continue
        if not (sub / "config.json").exists():
            raise ModelError(f"missing {sub / 'config.json'}; {how}")
        safetensors = sorted(sub.glob("*.safetensors"))
        pickles = sorted(p for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if safetensors:
            found[part] = safetensors[0]
        elif pickles:
            if not allow_pickle:
                raise ModelError(
                    f"{pickles[0]} is a pickle file, which can run code when loaded; convert it to "
                    "safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)"
                )
            found[part] = pickles[0]
        else:
            raise ModelError(
                f"no weights in {sub}/ (expected diffusion_pytorch_model.safetensors or model.safetensors); {how}"
            )
    return found


def _load_pickled(cls, sub: Path, weights: Path):
    """Build ``cls`` from its config and load a pickle state dict with ``weights_only=True`` only."""
    if hasattr(cls, "load_config"):
        model = cls.from_config(cls.load_config(str(sub)))
    else:
        model = cls(cls.config_class.from_pretrained(str(sub)))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def _quiet_loading_bars() -> None:
    """The libraries' per-file progress bars would interleave with the CLI's own progress."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_folder(
    folder: Path, *, device="cpu", dtype=torch.float32, allow_pickle: bool = False, name: str | None = None
) -> LDM:
    """Load a local diffusers folder offline (safetensors; pickle only by opt-in)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    weights = preflight(folder, allow_pickle=allow_pickle)
    _quiet_loading_bars()
    classes = {
        "unet": UNet2DConditionModel,
        "vae": AutoencoderKL,
        "text_encoder": CLIPTextModel,
        "inpaint_unet": UNet2DConditionModel,
    }
    parts: dict[str, Any] = {}
    for part, path in weights.items():
        cls = classes[part]
        _read_json(folder / part / "config.json")  # a broken config.json is named, not a library traceback
        try:
            if path.suffix == ".safetensors":
                parts[part] = cls.from_pretrained(str(folder / part), use_safetensors=True, local_files_only=True)
            else:
                parts[part] = _load_pickled(cls, folder / part, path)
        except pickle.UnpicklingError as error:
            raise ModelError(
                f"{path} was refused by torch.load(weights_only=True): it holds objects other than "
                f"tensors, which could run code ({str(error).splitlines()[0]}); convert it to "
                "safetensors on a trusted machine"
            ) from None
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            # Truncated or damaged weights: safetensors and diffusers raise these with long messages.
            first_line = (str(error).strip().splitlines() or [error.__class__.__name__])[0][:200]
            raise ModelError(
                f"{path} could not be loaded ({first_line}); the file is damaged or incomplete: "
                "copy it again from the model's original download"
            ) from None
    parts["tokenizer"] = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    parts["scaling_factor"] = float(parts["vae"].config.get("scaling_factor", 0.18215))
    bundle = _bundle(
        name or folder.name,
        parts,
        device,
        dtype,
        sha256_files(weights.values()),
        _folder_resolution(folder),
        source=str(folder),
    )
    from diffusers import DDPMScheduler

    bundle.scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"), local_files_only=True)
    return bundle


def resolve_hub_cache(repo_id: str) -> Path:
    """The local snapshot folder of a hub id, or a ModelError saying it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as error:
        raise ModelError(
            f"{repo_id} is not in the local Hugging Face cache ({error.__class__.__name__}); this machine "
            f"cannot download it. On a machine with network run `huggingface-cli download {repo_id}` and copy "
            "the cache (HF_HOME), or pass a local folder with --model PATH"
        ) from None


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here, or a ModelError saying which ones do."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"--device {device!r} is not a torch device; use cpu or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ModelError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    elif parsed.type not in ("cpu", "mps", "xpu", "meta"):
        raise ModelError(f"--device {device!r} is not supported here; use cpu or cuda:N")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return parsed


def load_model(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    allow_pickle: bool = False,
    seed: int = 0,
) -> LDM:
    """Load a model by registry name, local folder, or cached hub id (``owner/name``)."""
    dtype = parse_dtype(dtype)
    check_device(device)
    if spec in MODELS:
        return MODELS.get(spec)(device=device, dtype=dtype, seed=seed, allow_pickle=allow_pickle)
    folder, name = _folder_of(spec)
    return load_folder(folder, device=device, dtype=dtype, allow_pickle=allow_pickle, name=name)
