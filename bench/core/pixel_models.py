"""Pixel-space diffusion models: the ``PixelDiffusion`` bundle and ``load_pixel_model``.

Pixel-space purifications — DiffPure (Nie et al., Diffusion Models for Adversarial
Purification, ICML 2022, arXiv:2205.07460), GrIDPure, PDM-Pure — diffuse an image to a
small ``t*`` with a *pixel* DDPM (Ho et al., Denoising Diffusion Probabilistic Models,
arXiv:2006.11239) and run the reverse process back, so no latent autoencoder (the part a
protection attacks) is involved. The project ships one such model, ``toy-pixel``
(``models/toy-pixel``, see its MODEL_CARD.md): a diffusers ``UNet2DModel`` trained for
ε-prediction with a ``DDPMScheduler``.

A folder holds ``unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors``),
``scheduler/scheduler_config.json`` and ``model_index.json`` (a ``DDPMPipeline`` index with
``cloakbench_resolution``). Weights load offline from safetensors only. Every parameter
is frozen, as in :class:`cloakbench.core.models.LDM`: purification takes no gradient
w.r.t. weights.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cloakbench.core.models import PROJECT_ROOT, ModelError, parse_dtype
from cloakbench.core.provenance import sha256_file

log = logging.getLogger(__name__)

TOY_PIXEL_MODEL_DIR = PROJECT_ROOT / "models" / "toy-pixel"
#: Spec name -> shipped folder.
PIXEL_FOLDERS: dict[str, Path] = {"toy-pixel": TOY_PIXEL_MODEL_DIR}
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
REQUIRED = ("model_index.json", "unet/config.json", UNET_WEIGHTS, "scheduler/scheduler_config.json")


@dataclass
class PixelDiffusion:
    """A pixel DDPM: ``unet`` predicts ε from ``(x_t, t)`` on images in ``[-1, 1]``.

    Images enter and leave as ``(N, 3, H, W)`` in ``[0, 1]`` (the bench's range);
    :meth:`to_model_range` is the one conversion point, as in ``LDM``.
    """

    name: str
    unet: Any  # diffusers.UNet2DModel
    scheduler: Any  # diffusers.DDPMScheduler
    resolution: int
    device: torch.device
    dtype: torch.dtype
    weights_hash: str
    source: str = ""

    @staticmethod
    def to_model_range(images: torch.Tensor) -> torch.Tensor:
        return images * 2.0 - 1.0

    @staticmethod
    def from_model_range(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod.to(self.device, torch.float32)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def identity(self) -> dict:
        return {"name": self.name, "weights_hash": self.weights_hash, "dtype": str(self.dtype).replace("torch.", "")}

    def predict_noise(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """``ε_θ(x_t, t)`` for ``x_t`` in model range."""
        if not torch.is_tensor(t) or t.ndim == 0:
            t = torch.full((x_t.shape[0],), int(t), dtype=torch.long)
        return self.unet(x_t.to(self.device, self.dtype), t.to(self.device)).sample

    def add_noise(self, images: torch.Tensor, t: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`` from images in ``[0, 1]`` (model range out)."""
        x0 = self.to_model_range(images.to(self.device, torch.float32))
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        a = self.alphas_cumprod[t]
        return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(self.dtype)

    def predict_x0(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The one-step estimate ``x̂_0 = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t``, clipped to ``[-1, 1]``."""
        a = self.alphas_cumprod[t]
        eps = self.predict_noise(x_t, t).float()
        return ((x_t.float() - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)

    def denoise(self, x_t: torch.Tensor, t_start: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM ancestral sampling (Ho et al., Alg. 2) from ``x_t`` at ``t_start`` down to 0,
        one step per training timestep (DiffPure's reverse process, discretised); returns
        images in ``[0, 1]``."""
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.num_train_timesteps)
        x = x_t
        for t in scheduler.timesteps[scheduler.timesteps <= t_start]:
            eps = self.predict_noise(x, int(t))
            x = scheduler.step(eps, int(t), x, generator=generator).prev_sample
        return self.from_model_range(x.float())

    def purify(self, images: torch.Tensor, t_star: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise to ``t* = round(t_star·T)`` and denoise back (DiffPure with this model)."""
        t = int(round(t_star * self.num_train_timesteps))
        return self.denoise(self.add_noise(images, t, generator), t, generator)


def pixel_preflight(folder: Path) -> Path:
    """Check a pixel-model folder before any work; return its UNet weights file.

    Names the first missing file; refuses pickle weights (this loader reads safetensors only).
    """
    folder = Path(folder)
    how = ("train it with `python scripts/train_toy_pixel.py` and export it with `--export models/toy-pixel` "
           "(see models/toy-pixel/MODEL_CARD.md), or restore the folder from the repository")
    if not folder.is_dir():
        raise ModelError(f"pixel diffusion model folder {folder} does not exist; {how}")
    for relative in REQUIRED:
        if not (folder / relative).exists():
            pickles = sorted((folder / "unet").glob("*.bin")) if relative == UNET_WEIGHTS else []
            if pickles:
                raise ModelError(f"{pickles[0]} is a pickle file, which can run code when loaded; the pixel model "
                                 f"loads {folder / UNET_WEIGHTS} (safetensors) only")
            raise ModelError(f"pixel diffusion model {folder} is missing {folder / relative}; {how}")
    return folder / UNET_WEIGHTS


def load_pixel_model(spec_or_folder: str | Path = "toy-pixel", *, device: str | torch.device = "cpu",
                     dtype: str | torch.dtype = "float32") -> PixelDiffusion:
    """Load ``toy-pixel`` (or any folder of the same layout) offline, frozen, in eval mode."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    name = str(spec_or_folder)
    folder = PIXEL_FOLDERS.get(name, Path(name).expanduser())
    weights = pixel_preflight(folder)
    diffusers_logging.disable_progress_bar()
    dtype = parse_dtype(dtype)
    device = torch.device(device)
    unet = UNet2DModel.from_pretrained(str(folder / "unet"), use_safetensors=True, local_files_only=True,
                                       torch_dtype=dtype)
    unet = unet.to(device).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"), local_files_only=True)
    index = json.loads((folder / "model_index.json").read_text())
    resolution = int(index.get("cloakbench_resolution", unet.config.sample_size))
    log.info("loaded pixel diffusion model %s from %s", name, folder)
    return PixelDiffusion(name=name if name in PIXEL_FOLDERS else folder.name, unet=unet, scheduler=scheduler,
                          resolution=resolution, device=device, dtype=dtype, weights_hash=sha256_file(weights),
                          source=str(folder))
