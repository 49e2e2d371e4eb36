"""Encoder-only protections: PhotoGuard's encoder attack, texture-only, and an untargeted encoder attack.

The gradient runs through the VAE encoder alone: no UNet at all in fair mode, which
makes these the cheapest PGD protections (the lower bound of an SDS step's cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class TargetConfig(PGDConfig):
    """PGD settings plus ``target``: "pattern" (this project's own), "zero" (the zero latent) or an image path."""

    target: str = "pattern"


@dataclass(frozen=True)
class PhotoGuardConfig(TargetConfig):
    """PhotoGuard pulls the posterior *mean* (``latent_dist.mean`` in its code) to the target."""

    latent: Literal["sample", "mean"] = "mean"


class _LatentDistancePGD(PGDProtection):
    """Descend ``‖s·E(x) − z_target‖²`` (summed): the shared update of photoguard and texture."""

    Config = TargetConfig
    uses_target = True

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        if self.reference_target_forward:
            self.reference_semantic_forward(state, latents)
        distance = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        return -self.input_gradient(state, adversarial, distance.sum()), distance.detach()


@PROTECTIONS.register("photoguard")
class PhotoGuard(_LatentDistancePGD):
    """PhotoGuard encoder attack: descend ‖E(x) − z_target‖², making img2img edit the target instead.

    "Raising the Cost of Malicious AI-Powered Image Editing", Salman et al., ICML 2023,
    arXiv 2302.06588 (the "encoder attack"). Update ``x ← x − alpha · sign(∇_x ‖s·E(x) −
    z_tgt‖²)`` with ``E(x)`` the posterior mean, as in its code. Defaults follow Xue et
    al.'s comparison (arXiv 2311.12832) so the methods share one budget: eps 16,
    alpha 1, 100 steps, random start, target "pattern". ``--profile paper`` gives
    PhotoGuard's own published settings (see ``PROFILES``).

    Profile ``paper`` (the img2img encoder-attack demo of MadryLab/photoguard): its
    budget 0.06 and step 0.02 are on [−1, 1]; on [0, 1] in 8-bit units that is
    ``eps = 0.06 · 255/2 = 7.65`` and ``alpha = 0.02 · 255/2 = 2.55``, 200 steps, the
    step decaying linearly to ``alpha/100``, uniform random start, zero-latent target.
    After rounding, the saved PNG's budget is ``floor(7.65) = 7`` for 8-bit images.
    """

    Config = PhotoGuardConfig
    version = 1
    PROFILES = {
        "paper": {"eps": 0.06 * 255 / 2, "alpha": 0.02 * 255 / 2, "steps": 200, "alpha_schedule": "linear",
                  "random_start": True, "latent": "mean", "target": "zero"},
    }


@PROTECTIONS.register("texture")
class TextureOnly(_LatentDistancePGD):
    """Texture-only: descend L_T = ‖E(x) − E(x_target)‖² alone (Xue et al.'s ablation of Mist).

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832: the encoder is the vulnerable
    part, so pulling the latent toward a target texture already protects. Update
    ``x ← x − alpha · sign(∇_x L_T)``, ``E(x)`` a posterior sample. Defaults: eps 16,
    alpha 1, 100 steps, random start, target "pattern".
    """

    version = 1
    # Reference mode: the reference's loss module also encodes the target and runs L_S
    # on image and target every step.
    reference_target_encode = True
    reference_target_forward = True


@PROTECTIONS.register("encoder")
class EncoderAttack(PGDProtection):
    """Untargeted encoder attack: ascend ‖E(x) − E(x_clean)‖², pushing the latent away from the clean one.

    The baseline that isolates the VAE encoder's vulnerability studied by Xue et al.
    (arXiv 2311.12832, Sec. 4) and PhotoGuard (arXiv 2302.06588): no target, no UNet.
    The clean image's posterior is encoded once. Update ``x ← x + alpha · sign(∇_x
    ‖s·E(x) − s·E(x_clean)‖²)``. Defaults: eps 16, alpha 1, 100 steps, random start
    (needed: at ``x = x_clean`` with the mean latent the gradient is zero).
    """

    version = 1
    uses_target = True
    clean_is_target = True

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        distance = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        return self.input_gradient(state, adversarial, distance.sum()), distance.detach()
