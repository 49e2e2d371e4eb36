"""Texture-only (Xue et al., ICLR 2024): Mist without its diffusion loss, the encoder alone."""

from __future__ import annotations

from dataclasses import dataclass

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class TextureConfig(PGDConfig):
    """Texture-only's settings: the PGD budget (``PGDConfig``) and the target.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: True. alpha_schedule: "constant". latent: "sample". reference_mode: False.
    target: "text" (default: tiled "MIST" text, the kind of the reference's
        ``MIST.png``), "pattern", "zero" (the zero latent) or an image path
        (``protections/targets.py``).
    """

    target: str = "text"


@PROTECTIONS.register("texture")
class TextureOnly(PGDProtection):
    """Texture-only: descend L_T = ‖E(x) − E(x_target)‖² alone (Xue et al.'s ablation of Mist).

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832: the encoder is the vulnerable
    part of a latent diffusion model, so pulling the latent toward a target texture
    already protects, with no UNet in the gradient at all. Reference: xavihart/Diff-Protect
    ``code/diff_mist.py:161-162`` (``mode == 'texture_only'``: ``fn(zx, zy)``, the summed
    MSE of ``diff_mist.py:125``), target ``test_images/target/MIST.png``, which the
    default ``"text"`` target matches in kind (``protections/targets.py``).

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the VAE encoder.

    Update, with ``z = s·E(x)`` and ``z_tgt = s·E(x_target)`` posterior samples::

        L_T(x) = ‖z − z_tgt‖²                      (summed over latent elements)
        x ← clip_[0,1](Π_eps(x − alpha · sign(∇_x L_T)))

    Config (:class:`TextureConfig`): eps 16, alpha 1, steps 100, random_start True,
    alpha_schedule "constant", latent "sample", reference_mode False, target "text".

    Example::

        protection = PROTECTIONS.get("texture").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    family = "encoder"
    plain = "Mist's pull alone: draws the model's encoding of the picture toward a text pattern."

    Config = TextureConfig
    version = 2  # 2: the text target (was the geometric pattern)
    needs = frozenset({"target"})
    # The reference's loss module (shared with AdvDM and Mist) also encodes the target
    # and runs L_S on the image and on the target every step, though L_T uses neither.
    reference_costs = ("trainable_unet", "target_encode", "target_forward", "image_forward")

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        distance = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        return -self.input_gradient(state, adversarial, distance.sum()), distance.detach()  # descend L_T
