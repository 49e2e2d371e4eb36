"""Helpers shared by the mimicry attacks: input checks, strengths, and the latent DDIM maths.

Written by hand only where a diffusers pipeline cannot do the job exactly (the one-step
x̂₀ edit, and DiffPure's forward-noising to exactly ``t*``); everything else goes through
the pipelines.
"""

from __future__ import annotations

import torch

from cloakbench.core.models import LDM


def format_strength(value: float) -> str:
    """The ``setting`` string of a strength: ``0.3`` -> ``"0.3"``."""
    return f"{value:g}"


def resolve_strength(setting: str, strengths: tuple[float, ...], owner: str) -> float:
    """The strength of this call: ``context.setting`` if set, else the only configured one."""
    if setting:
        try:
            strength = float(setting)
        except ValueError:
            raise ValueError(f"{owner}: setting {setting!r} is not a strength (a number in [0, 1])") from None
    elif len(strengths) == 1:
        strength = float(strengths[0])
    else:
        raise ValueError(
            f"{owner} sweeps strengths {', '.join(map(format_strength, strengths))}; call it once per "
            "setting with context.setting set (see Mimicry.settings())"
        )
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"{owner}: strength must be in [0, 1], got {strength}")
    return strength


def alpha_bar(model: LDM, timestep: int) -> torch.Tensor:
    """``ᾱ_t`` as a float32 scalar on the model's device."""
    return model.alphas_cumprod[timestep].to(torch.float32)


def predict_guided_noise(model: LDM, latents: torch.Tensor, timestep: int, prompt: str,
                         guidance_scale: float) -> torch.Tensor:
    """``ε̂ = ε(z, t, ∅) + g·(ε(z, t, c) − ε(z, t, ∅))``; with ``g ≤ 1`` only the conditional pass
    runs (as in diffusers, where guidance is off unless ``guidance_scale > 1``)."""
    batch = latents.shape[0]
    steps = torch.full((batch,), timestep, device=latents.device, dtype=torch.long)
    conditional = model.predict_noise(latents, steps, model.encode_prompt(prompt, batch))
    if guidance_scale <= 1.0:
        return conditional
    unconditional = model.predict_noise(latents, steps, model.encode_prompt("", batch))
    return unconditional + guidance_scale * (conditional - unconditional)


def predict_x0(noisy: torch.Tensor, noise_pred: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Tweedie/DDIM clean-latent estimate ``x̂₀ = (z_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t`` (ε-prediction)."""
    return (noisy - (1.0 - ab).sqrt() * noise_pred) / ab.sqrt()


def forward_noise(model: LDM, latents: torch.Tensor, timestep: int, generator: torch.Generator) -> torch.Tensor:
    """``z_t = √ᾱ_t·z₀ + √(1−ᾱ_t)·ε`` with ε drawn from ``generator``."""
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    ab = alpha_bar(model, timestep)
    return (ab.sqrt() * latents + (1.0 - ab).sqrt() * noise).to(latents.dtype)


def check_epsilon_prediction(model: LDM, owner: str) -> None:
    kind = getattr(model.scheduler.config, "prediction_type", "epsilon")
    if kind != "epsilon":
        raise ValueError(f"{owner} is written for ε-prediction models; {model.name} predicts {kind!r}")


def ddim_denoise(model: LDM, latents: torch.Tensor, timesteps: list[int], prompt: str,
                 guidance_scale: float = 1.0) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from ``z_{timesteps[0]}`` down to the clean latent.

    ``timesteps`` is decreasing; the last step jumps to ``ᾱ = 1`` and returns x̂₀, as
    diffusers' DDIM does with ``set_alpha_to_one=True``.
    """
    for index, timestep in enumerate(timesteps):
        ab = alpha_bar(model, timestep)
        noise_pred = predict_guided_noise(model, latents, timestep, prompt, guidance_scale).to(torch.float32)
        clean = predict_x0(latents.to(torch.float32), noise_pred, ab)
        if index + 1 == len(timesteps):
            latents = clean
        else:
            ab_next = alpha_bar(model, timesteps[index + 1])
            latents = ab_next.sqrt() * clean + (1.0 - ab_next).sqrt() * noise_pred
        latents = latents.to(model.dtype)
    return latents


def note(context, owner: str, key: str, value) -> None:
    """Record ``value`` as ``context.notes[owner][key]``.

    Notes are kept per attack because a purification and an attack share one context
    (``diffpure+sdedit``) and their keys would otherwise overwrite each other; per-setting
    facts (SDEdit's timesteps per strength) go under the setting as ``key``.
    """
    if context is not None:
        context.notes.setdefault(owner, {})[key] = value
