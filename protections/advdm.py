"""AdvDM (Liang et al., ICML 2023) and AdvDM(−) (Xue et al., ICLR 2024): PGD on the diffusion loss.

Both backpropagate the semantic loss ``L_S`` through the UNet and the VAE encoder, so
every step keeps the UNet's activations for the backward pass: the cost that score
distillation (``protections/sds.py``) removes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class AdvDMConfig(PGDConfig):
    """AdvDM's settings: the PGD budget (``PGDConfig``) and the conditioning text.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: True. alpha_schedule: "constant". latent: "sample" (``E(x)`` a
    posterior sample, as the reference). reference_mode: False.
    prompt: the text ``c`` the UNet is conditioned on (default "a photo"; the reference
        picks one per dataset, e.g. "an anime picture").
    """

    prompt: str = "a photo"


@PROTECTIONS.register("advdm")
class AdvDM(PGDProtection):
    """AdvDM: ascend the diffusion loss L_S through UNet and encoder (Liang et al., ICML 2023).

    "Adversarial Example Does Good: Preventing Painting Imitation from Diffusion Models
    via Adversarial Examples", Liang et al., ICML 2023, arXiv 2302.04578.

    Threat model: the artist publishes ``x`` with an L∞ perturbation of at most
    ``eps/255`` on ``[0, 1]`` images (8-bit units: ``eps=16`` is 16/255); a mimic
    fine-tunes on or edits ``x`` with a latent diffusion model whose weights the
    protection can read (white box). AdvDM raises the model's denoising loss on ``x``
    so that learning from or editing it goes astray.

    Update, per image, one ``t ~ U{0..T−1}`` and one ``ε ~ N(0, I)`` per step::

        z = s·E(x),  z_t = √ᾱ_t z + √(1−ᾱ_t) ε
        L_S(x) = mean ‖ε_θ(z_t, t, c) − ε‖²
        x ← clip_[0,1](Π_eps(x + alpha · sign(∇_x L_S)))

    On a flow-matching model (SD 3 / FLUX class, ``cloakbench.core.families``) the same
    update ascends the flow-matching loss (Esser et al., arXiv 2403.03206, eq. 3, ``rf``
    weighting), with ``σ_t`` the flow scheduler's shifted grid at index ``t``::

        z = s·(E(x) − b),  z_t = (1−σ_t) z + σ_t ε
        L_S(x) = mean ‖v_θ(z_t, t, c) − (ε − z)‖²

    ``t`` is drawn uniformly over the scheduler's 1000-step grid, as for the ε family (the
    authors' code draws ``t ~ U{0..T−1}``); the shift already puts more of that grid at high
    noise. Gradients flow through ``z_t`` and through the target ``ε − z``.

    Config (:class:`AdvDMConfig`): eps 16, alpha 1, steps 100, random_start True,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo".

    Example::

        protection = PROTECTIONS.get("advdm").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)  # (N, 3, H, W) in [0, 1]
        assert (protected - images).abs().max() <= 16 / 255
    """

    family = "denoiser"
    plain = "Nudges the pixels so that a diffusion model finds the picture hard to learn (raises its denoising loss)."

    Config = AdvDMConfig
    version = 1
    needs = frozenset({"diffusion_noise", "prompt"})
    # The reference's loss module also encodes and denoises its target every step.
    reference_costs = ("trainable_unet", "target_encode", "target_forward")

    def semantic_gradient(self, state, adversarial, draws):
        """``(∇_x Σ L_S, L_S per image)`` through encoder and UNet."""
        latents = self.image_latent(state, adversarial, draws)  # z = s·E(x)
        loss = losses.semantic_loss(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)
        # Summing is exact per image: image i's loss depends on image i only.
        return self.input_gradient(state, adversarial, loss.sum()), loss.detach()

    def direction(self, state, adversarial, draws):
        gradient, loss = self.semantic_gradient(state, adversarial, draws)
        return gradient, loss  # ascend L_S


@PROTECTIONS.register("advdm-")
class AdvDMMinus(AdvDM):
    """AdvDM(−): descend L_S through UNet and encoder, the sign Xue et al. find stronger.

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832: minimising the semantic loss
    (AdvDM's objective with the opposite sign) protects better against SDEdit-style
    mimicry, because it pulls ``x`` toward what the model already denoises well.

    Threat model and budget as AdvDM (L∞ ``eps/255`` on ``[0, 1]`` images, white box).
    Update, with ``L_S`` as in AdvDM::

        x ← clip_[0,1](Π_eps(x − alpha · sign(∇_x L_S)))

    Config (:class:`AdvDMConfig`): eps 16, alpha 1, steps 100, random_start True,
    alpha_schedule "constant", latent "sample", reference_mode False, prompt "a photo".

    Example::

        protection = PROTECTIONS.get("advdm-").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    plain = "Like AdvDM but nudging the other way (lowers the denoising loss), which Xue et al. found stronger."

    version = 1

    def direction(self, state, adversarial, draws):
        gradient, loss = self.semantic_gradient(state, adversarial, draws)
        return -gradient, loss  # descend L_S
