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
is frozen, as in :class:`cloakbench.core.ldm.LDM`: purification takes no gradient
w.r.t. weights.

Other pixel models:

- ``tiny-pixel-random``: a seeded random ``UNet2DModel`` (32², built from a config in about a
  second) for tests; its numbers mean nothing beyond "the code path runs".
- any folder of the layout above, or a cached Hugging Face hub id of a ``DDPMPipeline``
  (e.g. an ImageNet/ADM-style 256² model converted to diffusers): :func:`load_pixel_model`.
- DeepFloyd IF stage II (``DeepFloyd/IF-II-L-v1.0``), the pixel model of PDM-Pure: a
  text-conditioned 64² → 256² super-resolution model, loaded only from the local cache by
  :func:`load_if_stage_ii` (files and place: ``cloakbench.core.weights.IF_STAGE_II``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cloakbench.core.architectures import random_weights_hash
from cloakbench.core.devices import parse_dtype
from cloakbench.core.ldm import ModelError
from cloakbench.core.provenance import PROJECT_ROOT, sha256_file

log = logging.getLogger(__name__)

TOY_PIXEL_MODEL_DIR = PROJECT_ROOT / "models" / "toy-pixel"
#: Spec name -> shipped folder.
PIXEL_FOLDERS: dict[str, Path] = {"toy-pixel": TOY_PIXEL_MODEL_DIR}
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
REQUIRED = ("model_index.json", "unet/config.json", UNET_WEIGHTS, "scheduler/scheduler_config.json")
DEFAULT_PIXEL_MODEL = "toy-pixel"

TINY_PIXEL_RESOLUTION = 32


def tiny_pixel_configs() -> dict[str, dict]:
    """A small fully convolutional ``UNet2DModel`` and DDPM's linear β schedule (Ho et al.; DiffPure's)."""
    unet = dict(
        sample_size=TINY_PIXEL_RESOLUTION,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        add_attention=False,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    )
    scheduler = dict(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="epsilon",
        clip_sample=True,
        variance_type="fixed_small",
    )
    return {"unet": unet, "scheduler": scheduler}


#: Seeded random pixel models built from a config: name -> (configs, resolution).
PIXEL_RANDOM: dict[str, tuple] = {"tiny-pixel-random": (tiny_pixel_configs, TINY_PIXEL_RESOLUTION)}


def respaced_timesteps(t_star: int, steps: int = 0) -> list[int]:
    """The reverse-process timesteps of a purification noised to ``t_star`` (decreasing, ending at 0).

    DiffPure's convention (NVlabs/DiffPure runners/diffpure_guided.py:61-75): with ``t = t_star``
    the input is noised with ``ᾱ[t-1]`` and denoised by ``p_sample`` at ``i = t-1, …, 0``: ``t``
    ancestral steps. ``steps`` 0 keeps all of them; ``steps = k`` keeps ``k`` evenly spaced ones
    (``t-1`` first, 0 last), respaced as in guided-diffusion's ``respace.py`` (the posterior
    between consecutive kept timesteps). ``t_star = 0``: no timestep, the input is returned.
    """
    if t_star <= 0:
        return []
    count = t_star if steps <= 0 else min(steps, t_star)
    if count == 1:
        return [t_star - 1]
    grid = torch.linspace(t_star - 1, 0, count).round().long().tolist()
    return sorted(set(grid), reverse=True)


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
        steps = (
            t if isinstance(t, torch.Tensor) and t.ndim > 0 else torch.full((x_t.shape[0],), int(t), dtype=torch.long)
        )
        return self.unet(x_t.to(self.device, self.dtype), steps.to(self.device)).sample

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

    def noise_to(self, images: torch.Tensor, timestep: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`` at the training index ``timestep`` (ε from ``generator``)."""
        return self.add_noise(images, timestep, generator)

    def reverse(
        self, x_t: torch.Tensor, timesteps: list[int], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """DDPM ancestral sampling (Ho et al., Alg. 2) from ``x_t`` at ``timesteps[0]`` through ``timesteps``.

        diffusers' ``DDPMScheduler.step`` with these custom timesteps: each step samples the
        posterior ``q(x_prev | x_t, x̂₀)`` between consecutive listed timesteps (fixed-small
        variance, x̂₀ clipped to ``[-1, 1]`` as the scheduler's config says), the last one lands
        on x̂₀ with no noise added. Returns images in ``[0, 1]``.
        """
        from diffusers import DDPMScheduler

        if not timesteps:
            return self.from_model_range(x_t.float())
        scheduler = DDPMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(timesteps=list(timesteps))
        x = x_t
        for t in scheduler.timesteps:
            eps = self.predict_noise(x, int(t))
            x = scheduler.step(eps.float(), int(t), x.float(), generator=generator).prev_sample.to(self.dtype)
        return self.from_model_range(x.float())

    def purify(
        self, images: torch.Tensor, t_star: int, steps: int = 0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """DiffPure with this model: noise to ``ᾱ[t_star−1]``, reverse through :func:`respaced_timesteps`.

        Images in and out are ``(N, 3, H, W)`` in ``[0, 1]`` at the size given (the caller resizes).
        ``t_star = 0`` returns the input unchanged.
        """
        timesteps = respaced_timesteps(t_star, steps)
        if not timesteps:
            return images.to(self.device, torch.float32).clamp(0.0, 1.0)
        return self.reverse(self.noise_to(images, timesteps[0], generator), timesteps, generator)


def pixel_folder_resolution(folder: Path) -> int:
    """A pixel-model folder's working size: ``cloakbench_resolution`` in its model_index.json, else
    the UNet's ``sample_size`` (a broken JSON file is named, not a traceback)."""
    from cloakbench.core.folders import read_json

    index = read_json(Path(folder) / "model_index.json")
    if "cloakbench_resolution" in index:
        return int(index["cloakbench_resolution"])
    return int(read_json(Path(folder) / "unet" / "config.json")["sample_size"])


def pixel_preflight(folder: Path) -> Path:
    """Check a pixel-model folder before any work; return its UNet weights file.

    Names the first missing file; refuses pickle weights (this loader reads safetensors only).
    """
    folder = Path(folder)
    how = (
        "train it with `python scripts/train_toy_pixel.py` and export it with `--export models/toy-pixel` "
        "(see models/toy-pixel/MODEL_CARD.md), or restore the folder from the repository"
    )
    if not folder.is_dir():
        raise ModelError(f"pixel diffusion model folder {folder} does not exist; {how}")
    for relative in REQUIRED:
        if not (folder / relative).exists():
            pickles = sorted((folder / "unet").glob("*.bin")) if relative == UNET_WEIGHTS else []
            if pickles:
                raise ModelError(
                    f"{pickles[0]} is a pickle file, which can run code when loaded; the pixel model "
                    f"loads {folder / UNET_WEIGHTS} (safetensors) only"
                )
            raise ModelError(f"pixel diffusion model {folder} is missing {folder / relative}; {how}")
    return folder / UNET_WEIGHTS


def load_pixel_model(
    spec_or_folder: str | Path = DEFAULT_PIXEL_MODEL,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
) -> PixelDiffusion:
    """Load a pixel DDPM offline, frozen, in eval mode.

    ``spec_or_folder``: ``toy-pixel`` (the shipped folder), ``tiny-pixel-random`` (seeded with
    ``seed``), a folder of the layout in the module docstring, or a cached hub id (``owner/name``)
    of such a folder. A missing model raises :class:`ModelError` naming the missing file and place.
    """
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    name = str(spec_or_folder)
    diffusers_logging.disable_progress_bar()
    dtype = parse_dtype(dtype)
    device = torch.device(device)
    if name in PIXEL_RANDOM:
        make_configs, resolution = PIXEL_RANDOM[name]
        configs = make_configs()
        # A private RNG stream: building a model must not move the caller's global seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DModel(**configs["unet"])
        unet = unet.to(device) if dtype == torch.float32 else unet.to(device=device, dtype=dtype)
        unet = unet.eval().requires_grad_(False)
        return PixelDiffusion(
            name=name,
            unet=unet,
            scheduler=DDPMScheduler(**configs["scheduler"]),
            resolution=resolution,
            device=device,
            dtype=dtype,
            weights_hash=random_weights_hash(configs, seed),
            source="random (seeded)",
        )
    folder = PIXEL_FOLDERS.get(name, Path(name).expanduser())
    if name not in PIXEL_FOLDERS and not folder.exists() and name.count("/") == 1:
        folder = resolve_cached_pipeline(name)
    weights = pixel_preflight(folder)
    unet = UNet2DModel.from_pretrained(
        str(folder / "unet"), use_safetensors=True, local_files_only=True, torch_dtype=dtype
    )
    unet = unet.to(device).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"), local_files_only=True)
    resolution = pixel_folder_resolution(folder)
    log.info("loaded pixel diffusion model %s from %s", name, folder)
    return PixelDiffusion(
        name=name if name in PIXEL_FOLDERS else folder.name,
        unet=unet,
        scheduler=scheduler,
        resolution=resolution,
        device=device,
        dtype=dtype,
        weights_hash=sha256_file(weights),
        source=str(folder),
    )


def resolve_cached_pipeline(repo_id: str) -> Path:
    """The local Hugging Face cache snapshot of ``repo_id`` (never downloads), or a ModelError naming the place."""
    from cloakbench.core import weights

    spec = weights.WeightSpec(
        name=repo_id,
        filename=UNET_WEIGHTS,
        folder=weights.HF_CACHE,
        repo_id=repo_id,
        required_files=REQUIRED,
        how_to_get=(
            f"on a machine with network run `huggingface-cli download {repo_id}` and copy "
            "its Hugging Face cache (HF_HOME), or pass the folder itself"
        ),
    )
    try:
        return weights.require(spec)
    except weights.WeightsMissing as error:
        raise ModelError(f"pixel diffusion model {error}") from None


def pixel_model_available(spec: str) -> str | None:
    """``None`` if :func:`load_pixel_model` can load ``spec`` here, else why not (the file and place)."""
    if spec in PIXEL_RANDOM:
        return None
    try:
        folder = PIXEL_FOLDERS.get(spec, Path(spec).expanduser())
        if spec not in PIXEL_FOLDERS and not folder.exists() and spec.count("/") == 1:
            folder = resolve_cached_pipeline(spec)
        pixel_preflight(folder)
    except ModelError as error:
        return str(error)
    return None


def load_if_stage_ii(device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32", path: str | None = None):
    """DeepFloyd IF stage II as diffusers' ``IFImg2ImgSuperResolutionPipeline``: cached only, safetensors, offline.

    The folder is found by :func:`cloakbench.core.weights.find` (``path``, then
    ``CLOAKBENCH_IF_STAGE_II``, then the Hugging Face cache snapshot of ``DeepFloyd/IF-II-L-v1.0``);
    a missing one raises :class:`ModelError` naming the files and the place. Every parameter is frozen.
    """
    from cloakbench.core import weights

    try:
        folder = weights.require(weights.IF_STAGE_II, path)
    except weights.WeightsMissing as error:
        raise ModelError(str(error)) from None
    from diffusers import IFImg2ImgSuperResolutionPipeline

    try:
        pipe = IFImg2ImgSuperResolutionPipeline.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            torch_dtype=parse_dtype(dtype),
            safety_checker=None,
            feature_extractor=None,
            watermarker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ModelError(
            f"DeepFloyd IF stage II in {folder} could not be loaded offline with safetensors "
            f"({first_line}); {weights.IF_STAGE_II.how_to_get}"
        ) from None
    for part in ("unet", "text_encoder"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded DeepFloyd IF stage II from %s", folder)
    return pipe.to(torch.device(device))
