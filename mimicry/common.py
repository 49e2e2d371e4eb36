"""Helpers shared by the mimicry attacks: input checks, strengths, and the latent DDIM maths.

Written by hand only where a diffusers pipeline cannot do the job exactly (the one-step
x̂₀ edit, and DiffPure's forward-noising to exactly ``t*``); everything else goes through
the pipelines.
"""

from __future__ import annotations

import torch

from cloakbench.core.ldm import LDM


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


def predict_guided_noise(
    model: LDM, latents: torch.Tensor, timestep: int, prompt: str, guidance_scale: float
) -> torch.Tensor:
    """``ε̂ = ε(z, t, ∅) + g·(ε(z, t, c) − ε(z, t, ∅))``; with ``g ≤ 1`` only the conditional pass
    runs (as in diffusers, where guidance is off unless ``guidance_scale > 1``)."""
    batch = latents.shape[0]
    steps = torch.full((batch,), timestep, device=latents.device, dtype=torch.long)
    conditional = model.predict_noise(latents, steps, model.encode_prompt(prompt, batch))
    if guidance_scale <= 1.0:
        return conditional
    unconditional = model.predict_noise(latents, steps, model.negative_conditioning(batch))
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
    """Refuse a model whose denoiser is not an ε-prediction DDPM: the hand-written DDIM maths
    here would be wrong for it. A flow model's cell is *unavailable*, with the reason."""
    if model.is_flow:
        from cloakbench.mimicry.base import AttackUnavailable

        raise AttackUnavailable(
            f"{owner} is written with DDPM/DDIM maths for ε-prediction models; {model.name} is a flow "
            "transformer (velocity prediction on σ_t), for which no published form of it exists — "
            "use sdedit (SD 3's img2img pipeline) instead"
        )
    kind = getattr(model.scheduler.config, "prediction_type", "epsilon")
    if kind != "epsilon":
        raise ValueError(f"{owner} is written for ε-prediction models; {model.name} predicts {kind!r}")


def ddim_denoise(
    model: LDM, latents: torch.Tensor, timesteps: list[int], prompt: str, guidance_scale: float = 1.0
) -> torch.Tensor:
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


def epoch_batches(count: int, batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Indices for ``steps`` batches: shuffled passes over the set, like a data loader's epochs."""
    needed = batch * steps
    passes = -(-needed // count)
    order = torch.cat(
        [torch.randperm(count, generator=generator, device=generator.device).cpu() for _ in range(passes)]
    )
    return order[:needed].view(steps, batch)


def note(context, owner: str, key: str, value) -> None:
    """Record ``value`` as ``context.notes[owner][key]``.

    Notes are kept per attack because a purification and an attack share one context
    (``diffpure+sdedit``) and their keys would otherwise overwrite each other; per-setting
    facts (SDEdit's timesteps per strength) go under the setting as ``key``.
    """
    if context is not None:
        context.notes.setdefault(owner, {})[key] = value


# -- pixel-space purification (DiffPure, GrIDPure, PDM-Pure) ---------------------------------
def resize_to(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking), clamped to ``[0, 1]``; the identity at the same size.

    Bicubic overshoots at edges, hence the clamp. The pixel purifiers resize an image to their
    pixel model's resolution and back with this one function.
    """
    if tuple(images.shape[-2:]) == (height, width):
        return images
    return torch.nn.functional.interpolate(
        images, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    ).clamp(0.0, 1.0)


class PixelModelHolder:
    """A purifier's pixel diffusion model: checked before any work, loaded once per instance.

    ``spec`` is what :func:`cloakbench.core.pixel_models.load_pixel_model` takes (``toy-pixel``,
    ``tiny-pixel-random``, a folder or a cached hub id). Never the attacked LDM: a pixel purifier
    must not see the autoencoder a protection attacks.
    """

    def __init__(self, spec: str, owner: str):
        self.spec, self.owner = spec, owner
        self._model = None
        self._identity: dict | None = None

    def unavailable_reason(self) -> str | None:
        from cloakbench.core.pixel_models import pixel_model_available

        reason = pixel_model_available(self.spec)
        return f"{self.owner}: {reason}" if reason else None

    def get(self, device):
        from cloakbench.core.ldm import ModelError
        from cloakbench.core.pixel_models import load_pixel_model
        from cloakbench.mimicry.base import AttackUnavailable

        if self._model is None:
            try:
                self._model = load_pixel_model(self.spec, device=device, dtype="float32")
            except ModelError as error:
                raise AttackUnavailable(f"{self.owner}: {error}") from None
        if self._model.device != torch.device(device):
            self._model.unet.to(device)
            self._model.device = torch.device(device)
        return self._model

    def identity(self) -> dict:
        """Name and weights hash of the pixel model (for cache keys), without building the network."""
        if self._identity is None:
            from pathlib import Path

            from cloakbench.core.architectures import random_weights_hash
            from cloakbench.core.pixel_models import PIXEL_FOLDERS, PIXEL_RANDOM, UNET_WEIGHTS
            from cloakbench.core.provenance import sha256_file

            if self.spec in PIXEL_RANDOM:
                digest = random_weights_hash(PIXEL_RANDOM[self.spec][0](), 0)
            else:
                weights = PIXEL_FOLDERS.get(self.spec, Path(self.spec).expanduser()) / UNET_WEIGHTS
                digest = sha256_file(weights) if weights.is_file() else "absent"
            self._identity = {"name": self.spec, "weights_hash": digest}
        return self._identity


def pixel_timestep(t_star: float, pixel) -> int:
    """The pixel model's timestep at the fraction ``t_star`` of its schedule (at most its last step)."""
    return min(round(t_star * pixel.num_train_timesteps), pixel.num_train_timesteps)


def at_pixel_resolution(images: torch.Tensor, pixel, purify) -> torch.Tensor:
    """``purify`` the images at the pixel model's square working size, then resize back.

    The pixel purifiers run at the model's resolution (docs/MIMICRY.md, "Purifications");
    the result is float32 on the images' device, at their size.
    """
    height, width = images.shape[-2:]
    small = resize_to(images.to(pixel.device, torch.float32), pixel.resolution, pixel.resolution)
    return resize_to(purify(small), height, width).to(device=images.device, dtype=torch.float32)


def describe_pixel_model(model) -> str:
    """The note text naming which pixel model purified: ``toy-pixel (sha256 1a2b3c4d5e6f)``."""
    digest = model.weights_hash.split(":")[-1][:12]
    return f"{model.name} ({digest})"
