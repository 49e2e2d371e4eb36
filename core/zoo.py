"""The model zoo: every model cloakbench can build by name, with the facts a plan needs.

One registry (``ZOO``) of :class:`ZooEntry`: how to build the model, and what it is — its
family (``cloakbench.core.families``: ``eps-unet``, an ε-prediction UNet on a DDPM schedule,
SD 1.x/2.x/XL-shaped; ``flow-transformer``, a velocity-prediction MMDiT on a flow-matching
schedule, SD 3-shaped; ``pixel-ddpm``, a pixel-space DDPM for purifications), where its weights come from (seeded
random from configs, or a folder this project ships), its working resolution and latent width.
Adding a model family or a model is one entry (docs/CONTRIBUTING.md, "Adding a model").

:func:`model_facts` reads a model's identity without building it (a plan keys cells on it);
:func:`load_model` builds it. Both also take a local diffusers folder or a hub id already in
the local Hugging Face cache (``cloakbench.core.folders``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cloakbench.core import architectures
from cloakbench.core.devices import check_device, parse_dtype
from cloakbench.core.families import FAMILIES, FLOW_TRANSFORMER, inpaints_with_own_denoiser
from cloakbench.core.folders import (
    component_folder,
    folder_family,
    folder_is_sdxl,
    folder_resolution,
    load_folder,
    preflight,
    read_json,
    resolve_hub_cache,
)
from cloakbench.core.ldm import LDM, ModelError, vae_downsampling
from cloakbench.core.provenance import PROJECT_ROOT, sha256_file, sha256_files
from cloakbench.core.registry import Registry

__all__ = ["FAMILIES", "ZOO", "ModelFacts", "ZooEntry", "load_model", "model_facts", "register"]


@dataclass(frozen=True)
class ModelFacts:
    """What a plan needs to know about a model, read from configs and files without building it."""

    name: str
    weights_hash: str
    resolution: int
    family: str = "eps-unet"
    latent_channels: int | None = 4
    #: Whether the model has an inpainting UNet (a folder's optional ``inpaint_unet/``; every
    #: random-weights entry builds one). :attr:`can_inpaint`, which a plan checks before any cell,
    #: also counts the models that inpaint by blending (``LDM.can_inpaint`` says the same once loaded).
    inpaint_unet: bool = True
    #: The model's inpainting pipeline repaints with its base denoiser by latent blending (SD 3's
    #: flow transformer; SDXL's 4-channel UNet): the inpaint attack runs without an ``inpaint_unet/``.
    inpaints_by_blending: bool = False
    #: The VAE's downsampling factor (1: no VAE, a pixel-space model): the multiple a full-size
    #: picture's sides are padded to, known before the model loads (``bench protect``'s first ETA).
    vae_downsampling: int = 1

    @property
    def can_inpaint(self) -> bool:
        """Whether the inpaint attack can run: an inpainting UNet, or a family that inpaints with its
        own denoiser (:func:`~cloakbench.core.families.inpaints_with_own_denoiser`)."""
        return self.inpaint_unet or self.inpaints_by_blending or inpaints_with_own_denoiser(self.family)

    def identity(self, dtype: str | torch.dtype) -> dict:
        """The same dict :meth:`LDM.identity` gives once the model is built."""
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "dtype": str(parse_dtype(dtype)).replace("torch.", ""),
        }


@dataclass(frozen=True)
class ZooEntry:
    """One buildable model: how to build it and its facts.

    Exactly one of ``random_configs`` (seeded random weights: the configs the identity hashes)
    and ``folder`` (a folder this project ships: its weight files are hashed) is set.
    ``build(device=, dtype=, seed=)`` returns the bundle. ``resolution`` and ``latent_channels``
    of a shipped folder are read from the folder itself, so they cannot disagree with it.
    """

    name: str
    description: str
    family: str
    build: Callable[..., Any]
    random_configs: Callable[[], dict] | None = None
    resolution: int | None = None
    latent_channels: int | None = None
    folder: Path | None = None
    restore_hint: str = ""
    #: For a random entry that cannot be built on every machine: ``() -> reason or None``.
    unavailable: Callable[[], str | None] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"zoo entry {self.name}: unknown family {self.family!r}; one of {', '.join(FAMILIES)}")
        if (self.random_configs is None) == (self.folder is None):
            raise ValueError(f"zoo entry {self.name}: give exactly one of random_configs and folder")
        if self.random_configs is not None and self.resolution is None:
            raise ValueError(f"zoo entry {self.name}: a random-weights entry declares its resolution")

    @property
    def weights(self) -> str:
        """``random`` (seeded, built from configs) or ``shipped`` (a folder in this repository)."""
        return "random" if self.random_configs is not None else "shipped"

    def check_folder(self) -> None:
        """A ModelError naming the shipped folder and how to restore it, when it is missing."""
        if self.folder is not None and not (self.folder / "model_index.json").exists():
            raise ModelError(f"the {self.name} model is not in {self.folder}: {self.restore_hint}")

    def facts(self, *, seed: int = 0, allow_pickle: bool = False) -> ModelFacts:
        if self.random_configs is not None:
            assert self.resolution is not None  # checked in __post_init__
            reason = self.unavailable() if self.unavailable is not None else None
            if reason:
                raise ModelError(reason)
            configs = self.random_configs()
            return ModelFacts(
                self.name,
                architectures.random_weights_hash(configs, seed),
                self.resolution,
                self.family,
                self.latent_channels,
                vae_downsampling=vae_downsampling(configs.get("vae")),
            )
        self.check_folder()
        assert self.folder is not None
        if self.family == "pixel-ddpm":
            from cloakbench.core.pixel_models import pixel_folder_resolution, pixel_preflight

            unet_weights = pixel_preflight(self.folder)
            resolution = pixel_folder_resolution(self.folder)
            return ModelFacts(self.name, sha256_file(unet_weights), resolution, self.family, None, inpaint_unet=False)
        weights = preflight(self.folder, allow_pickle=allow_pickle)
        return folder_facts(self.folder, self.name, weights, self.family)


ZOO: Registry[ZooEntry] = Registry("model")


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo (a second entry of one name is refused)."""
    return ZOO.register(entry.name)(entry)


def folder_facts(folder: Path, name: str, weights: dict[str, Path], family: str | None = None) -> ModelFacts:
    """The facts of a preflighted diffusers folder: weights hash, working size, family, latent width."""
    family = family or folder_family(folder)
    vae = read_json(component_folder(folder, "vae") / "config.json")
    blending = family == FLOW_TRANSFORMER or folder_is_sdxl(folder)
    return ModelFacts(
        name,
        sha256_files(weights.values()),
        folder_resolution(folder),
        family,
        int(vae.get("latent_channels", 4)),
        inpaint_unet="inpaint_unet" in weights,
        inpaints_by_blending=blending,
        vae_downsampling=vae_downsampling(vae),
    )


# -- the entries --------------------------------------------------------------------
def _random(
    name: str,
    description: str,
    make: Callable[..., LDM],
    configs: Callable[[], dict],
    resolution: int,
    latent_channels: int,
    family: str = "eps-unet",
    unavailable: Callable[[], str | None] | None = None,
) -> ZooEntry:
    return register(
        ZooEntry(
            name,
            description,
            family,
            build=lambda device="cpu", dtype=torch.float32, seed=0, **_: make(device=device, dtype=dtype, seed=seed),
            random_configs=configs,
            resolution=resolution,
            latent_channels=latent_channels,
            unavailable=unavailable,
        )
    )


def _shipped(name: str, description: str, restore_hint: str, family: str = "eps-unet") -> ZooEntry:
    folder = PROJECT_ROOT / "models" / name

    def build(device="cpu", dtype=torch.float32, allow_pickle: bool = False, **_) -> LDM:
        entry.check_folder()
        return load_folder(folder, device=device, dtype=dtype, allow_pickle=allow_pickle, name=name)

    entry = register(ZooEntry(name, description, family, build=build, folder=folder, restore_hint=restore_hint))
    return entry


_random(
    "tiny-random",
    "Seeded tiny random SD-shaped model (64², latent 8², 4 channels) for tests; builds in about a second.",
    architectures.tiny_random,
    architectures.tiny_configs,
    architectures.TINY_RESOLUTION,
    4,
)
_random(
    "tiny-random-flow",
    "Seeded tiny random SD 3-shaped flow model (64², latent 8² × 16 channels with shift and scaling factors, "
    "an SD3Transformer2DModel, FlowMatchEulerDiscreteScheduler shift 3) for tests; builds in about a second.",
    architectures.tiny_random_flow,
    architectures.tiny_flow_configs,
    architectures.TINY_RESOLUTION,
    16,
    FLOW_TRANSFORMER,
)
_random(
    "tiny-random-sdxl",
    "Seeded tiny random SDXL-shaped model (64², latent 8² × 4; two CLIP text encoders, the second with a "
    "projection; a UNet with SDXL's text_time added embedding) for tests; builds in about a second.",
    architectures.tiny_random_sdxl,
    architectures.tiny_sdxl_configs,
    architectures.TINY_RESOLUTION,
    4,
)
_random(
    "sd15-arch",
    "Stable Diffusion 1.5 architecture (UNet 860 M), random weights: cost measurement only.",
    lambda **kw: architectures.real_architecture(
        "sd15-arch", architectures.SD15_UNET, architectures.SD15_TEXT, 512, **kw
    ),
    lambda: architectures.architecture_configs(architectures.SD15_UNET, architectures.SD15_TEXT),
    512,
    4,
)
_random(
    "sd21-arch",
    "Stable Diffusion 2.1-base architecture (OpenCLIP-H text), random weights: cost only.",
    lambda **kw: architectures.real_architecture(
        "sd21-arch", architectures.SD21_UNET, architectures.SD21_TEXT, 512, **kw
    ),
    lambda: architectures.architecture_configs(architectures.SD21_UNET, architectures.SD21_TEXT),
    512,
    4,
)
_random(
    "sdxl-arch",
    "SDXL base architecture (UNet 2.6 B), random weights and seeded conditioning: cost only.",
    lambda **kw: architectures.real_architecture(
        "sdxl-arch", architectures.SDXL_UNET, None, 1024, scaling_factor=0.13025, **kw
    ),
    lambda: architectures.architecture_configs(architectures.SDXL_UNET, None),
    1024,
    4,
)
_random(
    "sd3-arch",
    "Stable Diffusion 3 Medium architecture (MMDiT 2 B, 16-channel VAE), random weights and seeded "
    "conditioning of SD 3's shapes: cost measurement only.",
    architectures.sd3_architecture,
    architectures.sd3_configs,
    1024,
    16,
    FLOW_TRANSFORMER,
)
_random(
    "flux-arch",
    "FLUX.1 architecture (transformer 12 B), random weights: refused where the memory it needs is not there.",
    architectures.flux_architecture,
    lambda: {"transformer": architectures.FLUX_TRANSFORMER},
    1024,
    16,
    FLOW_TRANSFORMER,
    unavailable=architectures.flux_unavailable_reason,
)
_shipped(
    "toy",
    "The small LDM this project trains and ships (models/toy; see its MODEL_CARD.md).",
    "train it with `python scripts/train_toy.py` or use --model tiny-random",
)
_shipped(
    "toy-b",
    "toy's VAE with an independently trained UNet and text encoder (models/toy-b): the second model of "
    "transfer experiments (protect on one, attack with the other).",
    "train it with `python scripts/train_toy.py --name toy-b --seed 1 --vae-from models/toy/vae ...` "
    "(see models/toy-b/MODEL_CARD.md) or use --model toy",
)
_shipped(
    "toy-c",
    "A second LDM with its own VAE (4 latent channels, as SD 1.x; toy's has 16) and its own denoiser "
    "(models/toy-c: toy v2, kept): transfer between latent spaces.",
    "restore it from the repository (it is toy v2; see models/toy-c/MODEL_CARD.md) or use --model toy",
)

_shipped(
    "toy-flow",
    "The flow-matching toy (models/toy-flow): toy's 16-channel VAE (read from models/toy/vae, not copied) with "
    "its own shift and scaling factors, an SD3Transformer2DModel trained with the rectified-flow loss, "
    "FlowMatchEulerDiscreteScheduler (see its MODEL_CARD.md).",
    "train it with `python scripts/train_toy_flow.py` (see scripts/train_toy_flow.py) or use --model tiny-random-flow",
    FLOW_TRANSFORMER,
)


def _toy_pixel(device="cpu", dtype=torch.float32, **_):
    from cloakbench.core.pixel_models import load_pixel_model

    return load_pixel_model("toy-pixel", device=device, dtype=dtype)


register(
    ZooEntry(
        "toy-pixel",
        "The pixel-space DDPM for pixel purifications (models/toy-pixel). Builds a PixelDiffusion, not an LDM: "
        "protections and latent attacks cannot run on it.",
        "pixel-ddpm",
        build=_toy_pixel,
        folder=PROJECT_ROOT / "models" / "toy-pixel",
        restore_hint="train it with `python scripts/train_toy_pixel.py` (see models/toy-pixel/MODEL_CARD.md)",
    )
)


# -- by name, folder or cached hub id -----------------------------------------------
def folder_of(spec: str) -> tuple[Path, str]:
    """A local folder or a cached hub id; an unknown name gets the registry's near-miss answer."""
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        return path, path.name
    if spec.count("/") == 1:
        return resolve_hub_cache(spec), spec
    ZOO.get(spec)  # raises "unknown model ...; did you mean ..."
    raise AssertionError("unreachable")


def model_facts(spec: str, *, seed: int = 0, allow_pickle: bool = False) -> ModelFacts:
    """Name, weights hash and working resolution of ``spec`` (as :func:`load_model` takes it).

    Nothing is built and no weight is loaded: random models hash their configs and seed,
    folders hash their weight files after the preflight. A plan of cells is keyed on this,
    so planning never needs a model in memory (docs/ARCHITECTURE.md, "The flow of one cell").
    """
    if spec in ZOO:
        return ZOO.get(spec).facts(seed=seed, allow_pickle=allow_pickle)
    folder, name = folder_of(spec)
    return folder_facts(folder, name, preflight(folder, allow_pickle=allow_pickle))


def load_model(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    allow_pickle: bool = False,
    seed: int = 0,
) -> LDM:
    """Load a model by zoo name, local folder, or cached hub id (``owner/name``)."""
    parsed = parse_dtype(dtype)
    check_device(device)
    if spec in ZOO:
        return ZOO.get(spec).build(device=device, dtype=parsed, seed=seed, allow_pickle=allow_pickle)
    folder, name = folder_of(spec)
    return load_folder(folder, device=device, dtype=parsed, allow_pickle=allow_pickle, name=name)
