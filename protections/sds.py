"""SDS(+) and SDS(−) of Xue et al. (ICLR 2024): AdvDM's objective with the score-distillation gradient.

"Toward effective protection against diffusion based mimicry through score
distillation", Xue et al., ICLR 2024, arXiv 2311.12832. The gradient of ``L_S`` w.r.t.
the latent is ``(∂ε̂/∂z_t)ᵀ(ε̂ − ε)`` up to a constant; score distillation (Poole et
al., arXiv 2209.14988) drops the UNet Jacobian, leaving the image gradient
``J_Eᵀ(ε̂ − ε)``: the UNet runs forward under ``no_grad`` and only the encoder is
backpropagated. That saves the UNet's activations and its backward pass.

The flow-matching family (SD 3 / FLUX class; ``cloakbench.core.families``). There the
denoiser predicts a velocity and AdvDM's ``L_S`` is the flow-matching loss (Esser et al.,
arXiv 2403.03206, eq. 3), with ``z_t = (1 − σ)·z + σ·ε`` and the residual
``r = v̂ − (ε − z)``, ``v̂ = v_θ(z_t, t, c)``::

    L_S = mean ‖r‖²
    ∂L_S/∂z ∝ (∂v̂/∂z_t)ᵀ·(∂z_t/∂z)·r + (∂(−(ε − z))/∂z)ᵀ·r = (1 − σ)·J_vᵀ r + r

The second term is new: the target ``ε − z`` itself depends on ``z``. Score distillation drops
the denoiser's Jacobian ``J_v`` — the expensive factor, as DreamFusion drops ``∂ε̂/∂z_t``
(Poole et al. eq. 3: it is treated as a constant absorbed into ``w(t)``) — and what remains is
``∝ r``, so the image gradient is ``J_Eᵀ·r = J_Eᵀ(v̂ − (ε − z))``, the transformer run forward
under ``no_grad``. The same direction follows from DreamFusion's form written in ε: a flow
model's implied noise prediction is ``ε̂ = z_t + (1 − σ)·v̂``, so ``ε̂ − ε = (1 − σ)·r``, and
``J_Eᵀ(ε̂ − ε)`` is ``(1 − σ)·J_Eᵀ r``. What ``w(t)`` stands in for: on SD, the constant
``√ᾱ_t`` of ``∂z_t/∂z`` and whatever scale of the dropped UNet Jacobian (DreamFusion's own
``w(t)`` weighting, e.g. ``1 − ᾱ_t``); on a flow model, ``(1 − σ_t)`` (the ε-form factor) or
``(2 − σ_t)`` (the Jacobian replaced by the identity) — in every reading a positive number
per image and step. The PGD step takes the element-wise ``sign`` of one image's direction,
so any positive per-image ``w(t)`` leaves the update unchanged: this code applies none, on
either family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class SDSConfig(PGDConfig):
    """SDS's settings: the PGD budget (``PGDConfig``) and the prompt.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: False (the reference starts SDS from the clean image).
    alpha_schedule: "constant". latent: "sample". reference_mode: False.
    prompt: conditioning text ``c`` (default "a photo").
    """

    random_start: bool = False
    prompt: str = "a photo"


class _ScoreDistillation(PGDProtection):
    """The SDS step, ``sign · J_Eᵀ(ε̂ − ε)``; SDS(+) and SDS(−) differ only in ``sign``."""

    family = "sds"

    Config = SDSConfig
    needs = frozenset({"diffusion_noise", "prompt"})
    # The reference keeps the UNet trainable, as for AdvDM; under no_grad that costs nothing,
    # which is why reference-mode SDS is so much cheaper than reference-mode AdvDM.
    reference_costs = ("trainable_unet",)
    sign: ClassVar[float] = -1.0

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)  # z = s·E(x), with the encoder's graph
        # ε̂ − ε with the UNet under no_grad: no UNet activation is kept, none backpropagated.
        residual, loss = losses.sds_residual(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        gradient = self.input_gradient(state, adversarial, latents, grad_outputs=residual)  # J_Eᵀ(ε̂ − ε)
        return self.sign * gradient, loss


@PROTECTIONS.register("sds+")
class SDSPlus(_ScoreDistillation):
    """SDS(+): AdvDM's ascent with the score-distillation gradient J_Eᵀ(ε̂−ε); the UNet runs forward only.

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832.

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the latent diffusion model (encoder gradients, UNet
    forward passes).

    Update, per image, one ``t``, ``ε`` per step, ``z = s·E(x)``, ``ε̂ = ε_θ(z_t, t, c)``
    under ``no_grad``::

        x ← clip_[0,1](Π_eps(x + alpha · sign(J_Eᵀ (ε̂ − ε))))

    The step-loss trace is the ``L_S`` estimate ``mean ‖ε̂ − ε‖²``.

    Config (:class:`SDSConfig`): eps 16, alpha 1, steps 100, random_start False,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo".

    Example::

        protection = PROTECTIONS.get("sds+").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    plain = "A faster AdvDM: makes the picture hard to learn, with a cheaper estimate of the same gradient."

    version = 1
    sign = 1.0  # ascend L_S


@PROTECTIONS.register("sds-")
class SDSMinus(_ScoreDistillation):
    """SDS(−): descend with the score-distillation gradient, x ← x − alpha·sign(J_Eᵀ(ε̂−ε)); the paper's main method.

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832: minimising the semantic loss
    protects better than maximising it, and SDS roughly halves the cost of AdvDM by
    never backpropagating through the UNet.

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the latent diffusion model.

    Update, per image, one ``t``, ``ε`` per step, ``z = s·E(x)``, ``ε̂ = ε_θ(z_t, t, c)``
    under ``no_grad``::

        x ← clip_[0,1](Π_eps(x − alpha · sign(J_Eᵀ (ε̂ − ε))))

    Config (:class:`SDSConfig`): eps 16, alpha 1, steps 100, random_start False,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo".

    Example::

        protection = PROTECTIONS.get("sds-").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)  # (N, 3, H, W) in [0, 1]
        assert (protected - images).abs().max() <= 16 / 255
    """

    plain = "Makes diffusion models edit or imitate the picture badly, at low cost (the method Xue et al. recommend)."

    version = 1
    sign = -1.0  # descend L_S
