"""Mist (Liang & Wu, 2023): the textural loss toward a target, minus a weighted diffusion loss."""

from __future__ import annotations

from dataclasses import dataclass

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class MistConfig(PGDConfig):
    """Mist's settings: the PGD budget (``PGDConfig``), the prompt, the target and the weight of ``L_S``.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: True. alpha_schedule: "constant". latent: "sample". reference_mode: False.
    prompt: conditioning text ``c`` (default "a photo").
    target: the target of ``L_T``: "pattern" (this project's own, default), "zero" (the
        zero latent) or an image path (``protections/targets.py``).
    semantic_weight: ``w`` (default 1e4, the reference's: ``L_T`` is a sum over latent
        elements while ``L_S`` is a mean, so ``L_S`` needs the large weight to count).
    """

    prompt: str = "a photo"
    target: str = "pattern"
    semantic_weight: float = 1e4


@PROTECTIONS.register("mist")
class Mist(PGDProtection):
    """Mist: descend L_T − w·L_S, pulling the latent to a target texture while raising L_S.

    "Mist: Towards Improved Adversarial Examples for Diffusion Models", Liang & Wu 2023,
    arXiv 2305.12683.

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the latent diffusion model. Mist combines AdvDM's
    semantic loss with a textural loss that drags the image's latent toward the latent
    of a target pattern, so what a mimic learns or edits carries the pattern.

    Update, per image, one ``t``, ``ε`` per step, ``z = s·E(x)`` and
    ``z_tgt = s·E(x_target)`` (both posterior samples with ``latent="sample"``)::

        L_T(x) = ‖z − z_tgt‖²                      (summed over latent elements)
        L_S(x) = mean ‖ε_θ(z_t, t, c) − ε‖²
        x ← clip_[0,1](Π_eps(x − alpha · sign(∇_x (L_T − w · L_S))))

    The step-loss trace is ``L_T − w · L_S``.

    Config (:class:`MistConfig`): eps 16, alpha 1, steps 100, random_start True,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo",
    target "pattern", semantic_weight 1e4.

    Example::

        protection = PROTECTIONS.get("mist").from_overrides({"steps": "2", "target": "zero"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    Config = MistConfig
    version = 1
    needs = frozenset({"diffusion_noise", "prompt", "target"})
    # Mist is served by the same reference loss module as AdvDM.
    reference_costs = ("trainable_unet", "target_encode", "target_forward")

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        semantic = losses.semantic_loss(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        textural = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        objective = textural - self.config.semantic_weight * semantic
        gradient = self.input_gradient(state, adversarial, objective.sum())
        return -gradient, objective.detach()  # descend the objective
