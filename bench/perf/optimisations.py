"""Speed and memory options for the model a protection attacks, each behind a flag.

docs/PERFORMANCE.md ("Beyond the paper") lists what may make a PGD step cheaper than the
reference implementation of Xue et al., "Toward effective protection against
diffusion based mimicry through score distillation" (ICLR 2024, arXiv 2311.12832):

- ``channels-last``: NHWC memory format for the VAE and UNet convolutions;
- ``sdpa`` / ``classic-attn``: PyTorch's fused ``scaled_dot_product_attention``
  (diffusers ``AttnProcessor2_0``, the diffusers default with torch 2) against the
  classic softmax(QKᵀ)V attention (``AttnProcessor``) that older stacks ran;
- ``bf16`` / ``fp16``: autocast of the VAE encoder and the UNet (weights stay in
  their dtype; outputs are cast back so losses and the image update stay fp32);
- ``vae-ckpt`` / ``unet-ckpt``: gradient (activation) checkpointing, trading a second
  forward for the activations a backward would keep — memory, not speed;
- ``compile``: ``torch.compile`` of the VAE encoder and the UNet.

Batching several images per PGD step is not a model option: ``bench perf --batch``
measures it. Every option here must earn its place with a measured ratio from
``bench perf --opt`` and leave protection strength unchanged (``cloakbench.bench.perf.strength``).
The options are applied to the model in place, once, before a protection runs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from cloakbench.core.registry import suggest

log = logging.getLogger(__name__)

#: Short names accepted on the command line, ``+``-joined into one variant.
FLAG_NAMES = ("none", "channels-last", "sdpa", "classic-attn", "bf16", "fp16", "vae-ckpt", "unet-ckpt", "compile")


class OptimisationError(ValueError):
    """An unknown or contradictory optimisation flag; the message is meant for the user."""


@dataclass(frozen=True)
class Optimisations:
    """One set of optimisation options (all off by default: the model as loaded).

    ``attention``: ``"default"`` leaves the processors as loaded (SDPA with torch 2),
    ``"sdpa"`` forces ``AttnProcessor2_0``, ``"classic"`` forces ``AttnProcessor``.
    ``autocast``: ``None``, ``"bf16"`` or ``"fp16"``.
    """

    channels_last: bool = False
    attention: str = "default"
    autocast: str | None = None
    vae_checkpointing: bool = False
    unet_checkpointing: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        """The canonical ``+``-joined flag string (``none`` when nothing is on)."""
        parts = []
        if self.channels_last:
            parts.append("channels-last")
        if self.attention == "sdpa":
            parts.append("sdpa")
        elif self.attention == "classic":
            parts.append("classic-attn")
        if self.autocast:
            parts.append(self.autocast)
        if self.vae_checkpointing:
            parts.append("vae-ckpt")
        if self.unet_checkpointing:
            parts.append("unet-ckpt")
        if self.compile:
            parts.append("compile")
        return "+".join(parts) or "none"


def parse_optimisations(text: str) -> Optimisations:
    """``"channels-last+bf16"`` -> :class:`Optimisations`; ``"none"`` or ``""`` -> all off."""
    changes: dict[str, Any] = {}
    for flag in (part.strip() for part in text.replace(" ", "").split("+")):
        if flag in ("", "none"):
            continue
        if flag == "channels-last":
            changes["channels_last"] = True
        elif flag in ("sdpa", "classic-attn"):
            value = "sdpa" if flag == "sdpa" else "classic"
            if changes.get("attention", value) != value:
                raise OptimisationError(f"{text!r} asks for both sdpa and classic attention")
            changes["attention"] = value
        elif flag in ("bf16", "fp16"):
            if changes.get("autocast", flag) != flag:
                raise OptimisationError(f"{text!r} asks for both bf16 and fp16 autocast")
            changes["autocast"] = flag
        elif flag == "vae-ckpt":
            changes["vae_checkpointing"] = True
        elif flag == "unet-ckpt":
            changes["unet_checkpointing"] = True
        elif flag == "compile":
            changes["compile"] = True
        else:
            raise OptimisationError(
                f"unknown optimisation {flag!r}{suggest(flag, FLAG_NAMES)} Known: {', '.join(FLAG_NAMES)}"
            )
    return Optimisations(**changes)


#: Our own fastest correct SDS(−), per device (docs/PERFORMANCE.md, "Our own fastest SDS(−)"):
#: the flags ``bench perf --opt`` measured faster that keep the first step's direction
#: (:mod:`cloakbench.bench.perf.strength`). CPU: channels-last alone — exact maths, 0.83× the
#: step time on tiny-random 256² and 0.89-0.94× on sd15-arch 256² (benchmarks/opt_*.json);
#: bf16 autocast was 1.1-1.4× *slower* on this CPU, checkpointing only saves memory. CUDA:
#: bf16 autocast with channels-last — bf16 keeps 99.1 % of SDS(−)'s first-step signs
#: (cosine 0.9995, benchmarks/strength_tiny-random.json); its GPU speed is what
#: scripts/gpu_check.sh measures (group opt_sds-_512), not yet measured on a GPU here.
DEVICE_DEFAULTS = {"cpu": "channels-last", "cuda": "channels-last+bf16"}
#: The least share of first-step signs a device default must keep against no options.
DEFAULT_SIGN_AGREEMENT = 0.98


def device_default(device: str) -> Optimisations:
    """The default options for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``…); see :data:`DEVICE_DEFAULTS`."""
    kind = str(device).split(":", 1)[0]
    if kind not in DEVICE_DEFAULTS:
        raise OptimisationError(
            f"no default optimisations for device {device!r}; "
            f"known: {', '.join(DEVICE_DEFAULTS)} (name the flags instead)"
        )
    return parse_optimisations(DEVICE_DEFAULTS[kind])


def parse_variants(text: str, device: str = "cpu") -> list[Optimisations]:
    """``"none,channels-last,bf16+vae-ckpt"`` -> one :class:`Optimisations` per comma item.

    ``default`` is :func:`device_default` of ``device``.
    """
    variants: list[Optimisations] = []
    for item in text.split(","):
        if item.strip() or not variants:
            variant = device_default(device) if item.strip() == "default" else parse_optimisations(item)
            if variant not in variants:
                variants.append(variant)
    return variants


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """Cast floating tensors in ``value`` (tensor, tuple, diffusers ``BaseOutput``) to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple) and not hasattr(value, "keys"):
        return type(value)(_cast_floats(item, dtype) for item in value)
    if hasattr(value, "keys") and hasattr(value, "__setitem__"):
        for key in list(value.keys()):
            value[key] = _cast_floats(value[key], dtype)
        return value
    return value


def _autocast_forward(module: torch.nn.Module, device_type: str, dtype: torch.dtype, out_dtype: torch.dtype) -> None:
    """Run ``module.forward`` under autocast and hand back ``out_dtype`` outputs.

    Casting back keeps the loss, the sign of the gradient and the image update in the
    model's dtype, so only the network's matmuls and convolutions run in low precision.
    """
    forward = module.forward

    @functools.wraps(forward)
    def autocast_forward(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=dtype):
            output = forward(*args, **kwargs)
        return _cast_floats(output, out_dtype)

    module.forward = autocast_forward  # instance attribute: nn.Module.__call__ picks it up


def attacked_modules(model) -> dict[str, torch.nn.Module]:
    """The modules a PGD step runs: the VAE encoder side and the UNet."""
    return {"vae": model.vae, "unet": model.unet}


def apply_optimisations(model, flags: Optimisations | str) -> dict[str, Any]:
    """Apply ``flags`` to ``model`` (an :class:`cloakbench.core.ldm.LDM`) in place.

    Returns what was applied (for the results JSON). Applying twice is refused: a model
    carries the options it was given, in ``model.optimisations``.
    """
    if isinstance(flags, str):
        flags = parse_optimisations(flags)
    if getattr(model, "_cloakbench_optimised", None) is not None:
        raise OptimisationError(f"model already has optimisations {model._cloakbench_optimised.label!r}")
    applied: dict[str, Any] = {"label": flags.label}
    if flags.attention != "default":
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        processor = AttnProcessor2_0 if flags.attention == "sdpa" else AttnProcessor
        for module in attacked_modules(model).values():
            module.set_attn_processor(processor())
        applied["attention"] = processor.__name__
    if flags.channels_last:
        for module in attacked_modules(model).values():
            module.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    if flags.vae_checkpointing:
        # Checkpointing in diffusers is gated on torch.is_grad_enabled() only, so it
        # works in eval mode with frozen weights: the gradient flows to the image.
        model.vae.enable_gradient_checkpointing()
        applied["vae_checkpointing"] = True
    if flags.unet_checkpointing:
        model.unet.enable_gradient_checkpointing()
        applied["unet_checkpointing"] = True
    if flags.autocast:
        low = _AUTOCAST_DTYPES[flags.autocast]
        device_type = model.device.type
        if low == torch.float16 and device_type == "cpu":
            log.warning("fp16 autocast on CPU is slow on most CPUs; bf16 is the CPU choice")
        for module in (model.vae.encoder, getattr(model.vae, "quant_conv", None), model.unet):
            if module is not None:
                _autocast_forward(module, device_type, low, model.dtype)
        applied["autocast"] = flags.autocast
    if flags.compile:
        # Compile the submodules a step runs; the first call pays the compilation
        # (``bench perf`` reports it as warm-up time, never as a step).
        model.vae.encoder.compile()
        model.unet.compile()
        applied["compile"] = True
    model._cloakbench_optimised = flags
    log.info("optimisations applied to %s: %s", model.name, flags.label)
    return applied
