"""The losses every PGD protection is built from, written once.

Notation (Xue et al., "Toward effective protection against diffusion based mimicry
through score distillation", ICLR 2024, arXiv 2311.12832, Sec. 3):

- ``z = s · (E(x) − b)``: the scaled VAE latent of an image ``x ∈ [0, 1]`` (``s`` is the
  model's scaling factor, 0.18215 for SD 1.x/2.x; ``b`` its shift factor, 0 there and
  0.0609 for SD 3). ``E(x)`` is a *sample* of the posterior ``q(z|x)`` by default (what
  the reference does) or its mean.
- ``z_t = a_t · z + b_t · ε``: the forward process of the model's family at grid index
  ``t`` (``cloakbench.core.families``): ``√ᾱ_t, √(1 − ᾱ_t)`` for an ε-UNet (DDPM), or
  ``1 − σ_t, σ_t`` for a flow transformer (rectified flow, Esser et al. arXiv 2403.03206).
- Semantic loss ``L_S(x) = mean ‖f_θ(z_t, t, c) − y‖²`` with the family's prediction and
  target: ``ε_θ`` and ``y = ε`` (AdvDM, Liang et al. ICML 2023, arXiv 2302.04578), or the
  velocity ``v_θ`` and ``y = ε − z`` (the flow-matching loss, Esser et al. eq. 3 with the
  ``rf`` weighting). One ``t ~ U{0..T−1}`` and one ``ε ~ N(0, I)`` per image.
- Textural loss ``L_T(x) = ‖z − z_target‖²`` summed over latent elements (Mist, Liang
  & Wu 2023, arXiv 2305.12683); the reference sums (``MSELoss(reduction="sum")``) on
  scaled latents, which is why Mist weighs ``L_S`` by 1e4.
- Score distillation (Poole et al., "DreamFusion", arXiv 2209.14988): the gradient
  of ``L_S`` w.r.t. ``z`` without the UNet Jacobian is proportional to ``ε̂ − ε``, so
  the image gradient is the vector-Jacobian product ``J_Eᵀ (ε̂ − ε)``, with ``ε̂``
  computed under ``no_grad``: no UNet activation is kept and none is backpropagated.
  For a flow model the residual is ``v̂ − (ε − z)`` (derived in ``protections/sds.py``).

All functions are per image: they return ``(N,)`` tensors so that a batch of N gives
exactly the N single-image losses (the engine sums them for one backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PosteriorStats:
    """Mean and standard deviation of ``q(z|x)`` (unscaled), kept to re-sample cheaply.

    The target of the textural loss is encoded once; a fresh sample each step is then
    ``mean + std · noise``: the same distribution as re-encoding, without the encoder.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def latent(self, noise: torch.Tensor | None, scaling_factor: float, shift_factor: float = 0.0) -> torch.Tensor:
        """Scaled latent ``(E − shift)·scale``: the mean when ``noise`` is None, else a reparameterised sample."""
        unscaled = self.mean if noise is None else self.mean + self.std * noise
        if shift_factor:
            unscaled = unscaled - shift_factor
        return unscaled * scaling_factor

    def expand(self, batch: int) -> PosteriorStats:
        if self.mean.shape[0] == batch:
            return self
        return PosteriorStats(self.mean.expand(batch, -1, -1, -1), self.std.expand(batch, -1, -1, -1))


def posterior_stats(model, images: torch.Tensor) -> PosteriorStats:
    """``q(z|x)`` of ``images`` in ``[0, 1]``; differentiable when ``images`` requires grad."""
    dist = model.posterior(images)
    return PosteriorStats(dist.mean, dist.std)


def image_latent(model, images: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """``z = s · (E(x) − b)``; ``noise=None`` gives the posterior mean, else the sample ``mean + std · noise``.

    The sample is drawn by the caller (per image, from the image's own generator) so a
    batch gives the same latents as single images; gradients flow through mean and std
    exactly as through ``latent_dist.sample()``.
    """
    return posterior_stats(model, images).latent(noise, model.scaling_factor, model.shift_factor)


def noisy_latents(model, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``z_t``: ``√ᾱ_t z + √(1 − ᾱ_t) ε`` or ``(1 − σ_t) z + σ_t ε``, from the model's training grid."""
    return model.add_noise(latents, timesteps, noise)


def per_image_mean(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).mean(dim=1)


def semantic_loss(
    model, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, prompt_embeds: torch.Tensor, unet=None
) -> torch.Tensor:
    """``L_S`` per image, ``(N,)``: ``mean ‖ε_θ(z_t, t, c) − ε‖²`` or ``mean ‖v_θ(z_t, t, c) − (ε − z)‖²``;
    differentiable w.r.t. ``latents`` (through ``z_t`` and, for a flow model, through the target too)."""
    z_t = noisy_latents(model, latents, timesteps, noise)
    predicted = model.predict(z_t, timesteps, prompt_embeds, unet=unet)
    target = model.prediction_target(latents, noise)
    return per_image_mean((predicted.float() - target.float()) ** 2)


@torch.no_grad()
def sds_residual(
    model, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, prompt_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ε̂ − ε, L_S per image)``, or ``(v̂ − (ε − z), L_S)`` for a flow model, with the denoiser
    run under ``no_grad`` (score distillation).

    ``latents`` may require grad; it is detached here on purpose: the denoiser sees a
    constant and keeps no activation for a backward pass.
    """
    latents = latents.detach()
    z_t = noisy_latents(model, latents, timesteps, noise)
    predicted = model.predict(z_t, timesteps, prompt_embeds)
    residual = predicted - model.prediction_target(latents, noise)
    return residual, per_image_mean(residual.float() ** 2)


def textural_loss(latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
    """``L_T`` per image, ``(N,)``: ``‖z − z_target‖²`` summed over latent elements."""
    return ((latents.float() - target_latents.float()) ** 2).flatten(1).sum(dim=1)
