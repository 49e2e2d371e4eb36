"""Mist (Liang & Wu, 2023): the textural loss toward a target, minus a weighted diffusion loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloakbench.core.config import bounded
from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection

#: The latent the reference's weight was set for: SD at 512², latent 4 × 64 × 64.
REFERENCE_LATENT_ELEMENTS = 4 * 64 * 64


@dataclass(frozen=True)
class MistConfig(PGDConfig):
    """Mist's settings: the PGD budget (``PGDConfig``), the prompt, the target and the weight of ``L_S``.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: True. alpha_schedule: "constant". latent: "sample". reference_mode: False.
    prompt: conditioning text ``c`` (default "a photo").
    target: the target of ``L_T``: "text" (default: tiled "MIST" text like the reference's
        ``MIST.png``), "pattern", "zero" (the zero latent) or an image path
        (``protections/targets.py``).
    semantic_weight: ``w`` at the reference's latent size (default 1e4, the reference's,
        range [0, 1e8]): ``L_T`` is a sum over latent elements while ``L_S`` is a mean,
        so ``L_S`` needs the large weight to count.
    scale_semantic_weight: keep the reference's balance at any resolution (default True):
        the weight used is ``w · n / (4·64·64)``, ``n`` the latent's elements per image, so
        at 512² it is ``w`` itself, at 256² ``w/4``, at 128² ``w/16``. Off (the
        ``reference`` profile), ``w`` is used as it is at every size.
    """

    prompt: str = "a photo"
    target: str = "text"
    semantic_weight: float = bounded(1e4, 0.0, 1e8)
    scale_semantic_weight: bool = True


@PROTECTIONS.register("mist")
class Mist(PGDProtection):
    """Mist: descend L_T − w·L_S, pulling the latent to a target texture while raising L_S.

    "Mist: Towards Improved Adversarial Examples for Diffusion Models", Liang & Wu 2023,
    arXiv 2305.12683; as run by Xue et al. (ICLR 2024, arXiv 2311.12832), whose
    reference (xavihart/Diff-Protect) this follows: ``code/diff_mist.py:163-164``
    (``mode == 'mist'``: ``fn(zx, zy) - loss_semantic * rate``, ``fn`` the summed MSE of
    ``diff_mist.py:125``), ``rate = 1e4`` (``diff_mist.py:356``), target
    ``test_images/target/MIST.png``.

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the latent diffusion model. Mist combines AdvDM's
    semantic loss with a textural loss that drags the image's latent toward the latent
    of a target pattern, so what a mimic learns or edits carries the pattern.

    Update, per image, one ``t``, ``ε`` per step, ``z = s·E(x)`` and
    ``z_tgt = s·E(x_target)`` (both posterior samples with ``latent="sample"``)::

        L_T(x) = ‖z − z_tgt‖²                      (summed over the n latent elements)
        L_S(x) = mean ‖ε_θ(z_t, t, c) − ε‖²
        w'     = w · n / (4·64·64)   (scale_semantic_weight; w' = w when off)
        x ← clip_[0,1](Π_eps(x − alpha · sign(∇_x (L_T − w' · L_S))))

    On a flow-matching model ``L_S`` is the flow-matching loss ``mean ‖v_θ(z_t, t, c) − (ε − z)‖²``
    with ``z_t = (1 − σ_t) z + σ_t ε`` (as AdvDM's, ``protections/advdm.py``) and the latents are
    ``s·(E(x) − b)`` with the VAE's shift ``b``; ``w'`` scales with the latent's elements as below.

    Deliberate difference, and why: the reference runs only at 512², where ``w = 1e4``
    sets the balance between a sum over 16 384 latent elements and a mean. At 128² the
    sum has 16× fewer terms, so the literal 1e4 makes ``L_S`` 16× heavier than the
    reference intended and Mist behaves almost like AdvDM. Scaling by ``n`` keeps the
    reference's ratio at every size (identical to it at 512²); ``--profile reference``
    (``PROFILES``) gives the literal weight.

    The step-loss trace is ``L_T − w' · L_S``.

    Config (:class:`MistConfig`): eps 16, alpha 1, steps 100, random_start True,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo",
    target "text", semantic_weight 1e4, scale_semantic_weight True.

    Example::

        protection = PROTECTIONS.get("mist").from_overrides({"steps": "2", "target": "zero"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    family = "denoiser"
    plain = "Mist: pulls the model's encoding of the picture toward a text pattern while making it hard to learn."

    Config = MistConfig
    version = 2  # 2: the text target and the resolution-scaled semantic weight
    needs = frozenset({"diffusion_noise", "prompt", "target"})
    # Mist is served by the same reference loss module as AdvDM.
    reference_costs = ("trainable_unet", "target_encode", "target_forward")
    PROFILES = {
        # The reference's literal weight at every resolution (diff_mist.py:356).
        "reference": {"semantic_weight": 1e4, "scale_semantic_weight": False},
    }

    def effective_semantic_weight(self, latent_shape: tuple[int, ...]) -> float:
        """``w'``: the semantic weight used for latents of ``latent_shape`` (per image)."""
        if not self.config.scale_semantic_weight:
            return self.config.semantic_weight
        return self.config.semantic_weight * math.prod(latent_shape) / REFERENCE_LATENT_ELEMENTS

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        semantic = losses.semantic_loss(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        textural = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        objective = textural - self.effective_semantic_weight(state.latent_shape) * semantic
        gradient = self.input_gradient(state, adversarial, objective.sum())
        return -gradient, objective.detach()  # descend the objective
