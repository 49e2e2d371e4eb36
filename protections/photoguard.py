"""PhotoGuard's encoder attack (Salman et al., ICML 2023): pull the image's latent onto a target's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@dataclass(frozen=True)
class PhotoGuardConfig(PGDConfig):
    """PhotoGuard's settings: the PGD budget (``PGDConfig``) and the target.

    eps: 16 (``16/255``). alpha: 1 (``1/255`` per step). steps: 100.
    random_start: True. alpha_schedule: "constant" (the ``paper`` profile: "linear").
    latent: "mean": PhotoGuard pulls the posterior *mean* (``latent_dist.mean`` in its
        code) to the target. reference_mode: False (PhotoGuard pays no reference cost).
    target: "pattern" (this project's own, default), "zero" (the zero latent of the
        original img2img attack) or an image path (``protections/targets.py``).
    """

    latent: Literal["sample", "mean"] = "mean"
    target: str = "pattern"


@PROTECTIONS.register("photoguard")
class PhotoGuard(PGDProtection):
    """PhotoGuard encoder attack: descend ‖E(x) − z_target‖², making img2img edit the target instead.

    "Raising the Cost of Malicious AI-Powered Image Editing", Salman et al., ICML 2023,
    arXiv 2302.06588 (the "encoder attack").

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the VAE encoder only (no UNet). An img2img edit of
    ``x`` starts from its latent; moving that latent onto a target's makes the edit
    work on the target instead.

    Update, with ``z = s·E(x)`` the posterior mean and ``z_tgt`` the target's latent::

        x ← clip_[0,1](Π_eps(x − alpha · sign(∇_x ‖z − z_tgt‖²)))   (summed over elements)

    Defaults follow Xue et al.'s comparison (arXiv 2311.12832) so the methods share one
    budget. ``--profile paper`` gives PhotoGuard's own published settings (``PROFILES``):
    the img2img encoder-attack demo of MadryLab/photoguard states budget 0.06 and step
    0.02 on [−1, 1]; on [0, 1] in 8-bit units that is ``eps = 0.06 · 255/2 = 7.65`` and
    ``alpha = 0.02 · 255/2 = 2.55``, 200 steps, the step decaying linearly to
    ``alpha/100``, uniform random start, zero-latent target. After rounding, the saved
    PNG's budget is ``floor(7.65) = 7`` for 8-bit images.

    Config (:class:`PhotoGuardConfig`): eps 16, alpha 1, steps 100, random_start True,
    alpha_schedule "constant", latent "mean", reference_mode False, target "pattern".

    Example::

        protection = with_profile(PhotoGuard, "paper", {"steps": "2"})  # protections/engine.py
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
        # or Xue et al.'s settings: PROTECTIONS.get("photoguard").from_overrides({"steps": "2"})
    """

    Config = PhotoGuardConfig
    version = 1
    needs = frozenset({"target"})
    # From another code base than Xue et al.'s: none of their reference's extra costs.
    reference_costs = ()
    PROFILES = {
        "paper": {"eps": 0.06 * 255 / 2, "alpha": 0.02 * 255 / 2, "steps": 200, "alpha_schedule": "linear",
                  "random_start": True, "latent": "mean", "target": "zero"},
    }

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        distance = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        return -self.input_gradient(state, adversarial, distance.sum()), distance.detach()  # descend
