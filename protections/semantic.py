"""Protections whose gradient runs through the UNet: AdvDM, AdvDM(−) and Mist.

Each backpropagates the semantic loss ``L_S`` through the UNet and the VAE encoder,
so each step keeps the UNet's activations for the backward pass: the cost that score
distillation (``protections/sds.py``) removes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection, PGDState, StepDraws


@dataclass(frozen=True)
class SemanticConfig(PGDConfig):
    """PGD settings plus ``prompt``: the conditioning text ``c`` (default "a photo", as the reference)."""

    prompt: str = "a photo"


@dataclass(frozen=True)
class MistConfig(SemanticConfig):
    """Mist: ``target`` of ``L_T`` ("pattern", "zero" or an image path) and the weight ``w`` of ``L_S``."""

    target: str = "pattern"
    semantic_weight: float = 1e4


class _SemanticPGD(PGDProtection):
    Config = SemanticConfig
    semantic = True
    uses_prompt = True
    # The reference's loss module encodes and denoises its target every step.
    reference_target_encode = True
    reference_target_forward = True

    def semantic_gradient(self, state: PGDState, adversarial: torch.Tensor, draws: StepDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """``(∇_x Σ L_S, L_S per image)`` through encoder and UNet."""
        latents = self.image_latent(state, adversarial, draws)
        loss = losses.semantic_loss(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        return self.input_gradient(state, adversarial, loss.sum()), loss.detach()


@PROTECTIONS.register("advdm")
class AdvDM(_SemanticPGD):
    """AdvDM: ascend the diffusion loss L_S through UNet and encoder (Liang et al., ICML 2023).

    "Adversarial Example Does Good: Preventing Painting Imitation from Diffusion Models
    via Adversarial Examples", Liang et al., ICML 2023, arXiv 2302.04578. Threat model:
    an L∞ perturbation of ``eps/255`` that raises ``L_S(x) = mean ‖ε_θ(z_t,t,c) − ε‖²``
    (one ``t``, ``ε`` per image per step), so fine-tuning or editing on ``x`` goes astray.
    Update ``x ← x + alpha · sign(∇_x L_S)``. Defaults: eps 16, alpha 1, 100 steps,
    random start, prompt "a photo", posterior sample.
    """

    version = 1

    def direction(self, state, adversarial, draws):
        gradient, loss = self.semantic_gradient(state, adversarial, draws)
        return gradient, loss


@PROTECTIONS.register("advdm-")
class AdvDMMinus(_SemanticPGD):
    """AdvDM(−): descend L_S through UNet and encoder, the sign Xue et al. find stronger.

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832: minimising the semantic loss
    (AdvDM's objective with the opposite sign) protects better against SDEdit-style
    mimicry. Update ``x ← x − alpha · sign(∇_x L_S)``. Defaults as AdvDM.
    """

    version = 1

    def direction(self, state, adversarial, draws):
        gradient, loss = self.semantic_gradient(state, adversarial, draws)
        return -gradient, loss


@PROTECTIONS.register("mist")
class Mist(_SemanticPGD):
    """Mist: descend L_T − w·L_S, pulling the latent to a target texture while raising L_S.

    "Mist: Towards Improved Adversarial Examples for Diffusion Models", Liang & Wu 2023,
    arXiv 2305.12683. ``L_T = ‖s·E(x) − s·E(x_target)‖²`` summed over latent elements,
    ``L_S`` a mean, hence the weight ``w = 1e4`` of the reference. Update
    ``x ← x − alpha · sign(∇_x (L_T − w · L_S))``. Defaults: eps 16, alpha 1, 100 steps,
    random start, prompt "a photo", target "pattern" (this project's own), ``w = 1e4``.
    """

    Config = MistConfig
    version = 1
    uses_target = True

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        semantic = losses.semantic_loss(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        textural = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        objective = textural - self.config.semantic_weight * semantic
        gradient = self.input_gradient(state, adversarial, objective.sum())
        return -gradient, objective.detach()
