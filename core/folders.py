"""Local diffusers folders and the Hugging Face cache: preflight, then an offline load.

A preflight names the first missing file and how to get it before any work starts; weights
load with ``use_safetensors=True``; pickle files are refused unless the user opts in, and then
read with ``torch.load(weights_only=True)`` only (docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from cloakbench.core.ldm import LDM, ModelError, bundle
from cloakbench.core.provenance import sha256_files

#: The sub-folders a Stable-Diffusion-layout folder must have (``inpaint_unet/`` is optional).
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: An SD 3-layout folder (one CLIP encoder; the second CLIP and T5 are not read).
FLOW_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
#: An SDXL-layout folder: two CLIP text encoders and their tokenizers (stabilityai/stable-diffusion-xl-base-1.0).
SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def folder_family(folder: Path) -> str:
    """``flow-transformer`` for an SD 3-layout folder (``cloakbench_family`` in model_index.json, or
    a ``StableDiffusion3…`` pipeline class, or a ``transformer/`` folder), else ``eps-unet``."""
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").exists() else {}
    if "cloakbench_family" in index:
        return str(index["cloakbench_family"])
    if str(index.get("_class_name", "")).startswith("StableDiffusion3") or (folder / "transformer").is_dir():
        return "flow-transformer"
    return "eps-unet"


def folder_is_sdxl(folder: Path) -> bool:
    """An SDXL-layout folder: a ``StableDiffusionXL…`` pipeline class in model_index.json, or a UNet
    beside a ``text_encoder_2/`` folder (SDXL's second CLIP encoder)."""
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").exists() else {}
    if str(index.get("_class_name", "")).startswith("StableDiffusionXL"):
        return True
    return (folder / "text_encoder_2").is_dir() and (folder / "unet").is_dir()


def folder_components(folder: Path) -> tuple[str, ...]:
    """The sub-folders a folder of this layout must have (SD 1.x/2.x, SDXL or SD 3)."""
    if folder_family(folder) == "flow-transformer":
        return FLOW_COMPONENTS
    return SDXL_COMPONENTS if folder_is_sdxl(folder) else COMPONENTS


def check_shared_vae(folder: Path, weights: Path) -> None:
    """A shared VAE must be the file the model was trained on (``cloakbench_vae_sha256``)."""
    from cloakbench.core.provenance import sha256_file

    expected = read_json(folder / "model_index.json").get("cloakbench_vae_sha256")
    if expected and sha256_file(weights) != expected:
        raise ModelError(
            f"{folder.name} shares the VAE in {weights.parent}, but that file is not the one it was trained on "
            f"(sha256 {expected[:12]}…); restore {weights} from the repository or retrain {folder.name}"
        )


def component_folder(folder: Path, part: str) -> Path:
    """Where ``part`` lives: ``folder/part``, except a VAE shared with another model
    (``cloakbench_vae`` in model_index.json, relative to ``folder``: toy-flow reads toy's)."""
    if part == "vae" and (folder / "model_index.json").exists():
        shared = read_json(folder / "model_index.json").get("cloakbench_vae")
        if shared:
            return (folder / shared).resolve()
    return folder / part


def read_json(path: Path) -> dict:
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


def folder_resolution(folder: Path) -> int:
    """The working size: ``cloakbench_resolution`` in model_index.json, else the VAE's ``sample_size``."""
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").exists() else {}
    if "cloakbench_resolution" in index:
        return int(index["cloakbench_resolution"])
    return int(read_json(component_folder(folder, "vae") / "config.json").get("sample_size", 512))


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
    for part in folder_components(folder) + ("inpaint_unet",):
        sub = component_folder(folder, part)
        optional = part == "inpaint_unet"
        if not sub.is_dir():
            if optional:
                continue
            raise ModelError(f"model folder {folder} is missing {sub}/ ; {how}")
        if part in ("tokenizer", "tokenizer_2", "scheduler"):
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
            if part == "vae" and sub != folder / "vae":
                check_shared_vae(folder, safetensors[0])
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
    from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    weights = preflight(folder, allow_pickle=allow_pickle)
    family = folder_family(folder)
    _quiet_loading_bars()
    flow = family == "flow-transformer"
    classes = {
        "unet": UNet2DConditionModel,
        "transformer": SD3Transformer2DModel,
        "vae": AutoencoderKL,
        "text_encoder": CLIPTextModelWithProjection if flow else CLIPTextModel,
        # SDXL's second encoder: token states and the projected pooled vector (``text_embeds``).
        "text_encoder_2": CLIPTextModelWithProjection,
        "inpaint_unet": UNet2DConditionModel,
    }
    parts: dict[str, Any] = {}
    for part, path in weights.items():
        cls = classes[part]
        sub = component_folder(folder, part)
        read_json(sub / "config.json")  # a broken config.json is named, not a library traceback
        try:
            if path.suffix == ".safetensors":
                parts[part] = cls.from_pretrained(str(sub), use_safetensors=True, local_files_only=True)
            else:
                parts[part] = _load_pickled(cls, sub, path)
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
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").exists() else {}
    if "text_encoder_2" in parts:
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2"), local_files_only=True)
        # The SDXL pipelines' default (their __init__) when model_index.json does not say.
        parts["force_zeros_for_empty_prompt"] = bool(index.get("force_zeros_for_empty_prompt", True))
    # The model's own latent factors: model_index.json's when it has them (a shared VAE's config
    # carries the other model's), else the VAE config's, as diffusers' pipelines read them.
    vae_config = parts["vae"].config
    parts["scaling_factor"] = float(index.get("scaling_factor") or vae_config.get("scaling_factor") or 0.18215)
    parts["shift_factor"] = float(index.get("shift_factor") or vae_config.get("shift_factor") or 0.0)
    parts["family"] = family
    if flow:
        from diffusers import FlowMatchEulerDiscreteScheduler

        parts["unet"] = parts.pop("transformer")
        parts["scheduler"] = FlowMatchEulerDiscreteScheduler.from_pretrained(
            str(folder / "scheduler"), local_files_only=True
        )
    model = bundle(
        name or folder.name,
        parts,
        device,
        dtype,
        sha256_files(weights.values()),
        folder_resolution(folder),
        source=str(folder),
    )
    if not flow:
        from diffusers import DDPMScheduler

        model.scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"), local_files_only=True)
    return model


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
