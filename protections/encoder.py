"""The untargeted encoder attack: push the image's latent away from the clean one."""

from __future__ import annotations

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection


@PROTECTIONS.register("encoder")
class EncoderAttack(PGDProtection):
    """Untargeted encoder attack: ascend ‖E(x) − E(x_clean)‖², pushing the latent away from the clean one.

    The baseline that isolates the VAE encoder's vulnerability studied by Xue et al.
    ("Toward effective protection against diffusion based mimicry through score
    distillation", ICLR 2024, arXiv 2311.12832, Sec. 4) and PhotoGuard (Salman et al.,
    ICML 2023, arXiv 2302.06588): no target image, no UNet.

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit
    units), white-box access to the VAE encoder.

    Update, with ``z = s·E(x)`` and ``z_clean = s·E(x_clean)`` posterior samples (the
    clean posterior encoded once)::

        x ← clip_[0,1](Π_eps(x + alpha · sign(∇_x ‖z − z_clean‖²)))   (summed over elements)

    Config (``PGDConfig``): eps 16, alpha 1, steps 100, random_start True (needed: at
    ``x = x_clean`` with the mean latent the gradient is zero), alpha_schedule
    "constant", latent "sample", reference_mode False (no reference cost: the attack is
    not from Xue et al.'s code).

    Example::

        protection = PROTECTIONS.get("encoder").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        protected = protection(images, model, generator=g)
    """

    family = "encoder"
    plain = "Pushes the model's encoding of the picture away from the original, so edits start from a garbled one."

    Config = PGDConfig
    # 2: the clean image is encoded as given, and it now enters in the canonical channels-last layout
    # (core.images.protection_batch), not the decoder's view: its rounding moved (toy: 0.04-0.46 % of values).
    version = 2
    needs = frozenset({"clean_target"})
    reference_costs = ()

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        distance = losses.textural_loss(latents, self.target_latent(state, draws, latents))
        return self.input_gradient(state, adversarial, distance.sum()), distance.detach()  # ascend
