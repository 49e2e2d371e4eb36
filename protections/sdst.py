"""SDST(−) of Xue et al. (ICLR 2024): SDS(−) plus the textural pull toward a target."""

from __future__ import annotations

from dataclasses import dataclass

from cloakbench.core.config import bounded
from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class SDSTConfig(PGDConfig):
    """SDST(−)'s settings: the PGD budget (``PGDConfig``), prompt, target and the SDS weight.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: False (as SDS). alpha_schedule: "constant". latent: "sample".
    reference_mode: False.
    prompt: conditioning text ``c`` (default "a photo").
    target: the target of ``L_T``: "text" (default: tiled "MIST" text, the kind of the
        reference's ``MIST.png``), "pattern", "zero" or an image path.
    target_rate: ``r``, the weight of the SDS term against ``∇L_T`` (default 5, the paper's).
    """

    random_start: bool = False
    prompt: str = "a photo"
    target: str = "text"
    target_rate: float = bounded(5.0, 0, 1000)


@PROTECTIONS.register("sdst-")
class SDSTMinus(PGDProtection):
    """SDST(−): SDS(−) plus the textural pull, x ← x − alpha·sign(r·J_Eᵀ(ε̂−ε) + ∇L_T), r = 5.

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832.

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the latent diffusion model (encoder gradients, UNet
    forward passes only).

    Update, per image, one ``t``, ``ε`` per step, ``z = s·E(x)``, ``ε̂ = ε_θ(z_t, t, c)``
    under ``no_grad``, ``L_T = ‖z − z_tgt‖²`` summed, so ``∂L_T/∂z = 2(z − z_tgt)``::

        x ← clip_[0,1](Π_eps(x − alpha · sign(J_Eᵀ (r·(ε̂ − ε) + 2(z − z_tgt)))))

    On a flow-matching model the SDS term is the velocity residual (derived in
    ``protections/sds.py``): ``J_Eᵀ(r·(v̂ − (ε − z)) + 2(z − z_tgt))``. The weight ``r`` is kept
    on the velocity residual as it is; written in ε (``ε̂ − ε = (1 − σ_t)(v̂ − (ε − z))``) the SDS
    term would be weighed ``(1 − σ_t)`` less against the textural one — unlike for SDS alone,
    that factor does not cancel in the sign of a sum, and we keep the residual the model predicts.

    Reference: xavihart/Diff-Protect ``code/attacks.py:252-274`` (``pgd_sds`` with
    ``using_target``: ``(g_dir·g_x·target_rate − g_tex).sign()``, target ``MIST.png``).
    Both terms go through one encoder backward (the reference encodes the image twice,
    drawing two posterior samples; one sample serves both terms here). The step-loss
    trace is the ``L_S`` estimate ``mean ‖ε̂ − ε‖²``.

    Config (:class:`SDSTConfig`): eps 16, alpha 1, steps 100, random_start False,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo",
    target "text", target_rate 5.

    Example::

        protection = PROTECTIONS.get("sdst-").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    family = "sds"
    plain = "SDS(−) combined with Mist's pull of the encoding toward a text pattern."

    Config = SDSTConfig
    version = 2  # 2: the text target (was the geometric pattern)
    needs = frozenset({"diffusion_noise", "prompt", "target"})
    # The reference's SDS loop keeps the UNet trainable and encodes its target every step.
    reference_costs = ("trainable_unet", "target_encode")

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        residual, loss = losses.sds_residual(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        target = self.target_latent(state, draws, latents)
        textural_grad = 2.0 * (latents.detach() - target)  # ∂L_T/∂z, no autograd needed
        vector = self.config.target_rate * residual + textural_grad.to(residual.dtype)
        return -self.input_gradient(state, adversarial, latents, grad_outputs=vector), loss  # descend
