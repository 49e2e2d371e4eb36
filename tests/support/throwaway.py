"""A throwaway protection, written the way docs/CONTRIBUTING.md says a new one is written.

Loaded as a pytest plugin (``pytest -p tests.support.throwaway``) by tests/test_contributing.py,
so it is registered in that subprocess only: the registry-wide tests must take it with no other
file edited. It is an SDS-family direction (the image latent's residual pushed through the
encoder, here against a zero target) that goes through the engine's hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDConfig, PGDProtection

NAME = "throwaway"


@dataclass(frozen=True)
class ThrowawayConfig(PGDConfig):
    """The engine's settings as they are (eps, alpha, steps): nothing of its own."""


@PROTECTIONS.register(NAME)
class Throwaway(PGDProtection):
    """A throwaway protection for the contributor's guide: pull the image latent towards zero.

    An encoder attack in the manner of PhotoGuard's (Salman et al., "Raising the Cost of Malicious
    AI-Powered Image Editing", ICML 2023, arXiv:2302.06588), with the zero latent as its target.

    Update: ``x ← clip_[0,1](Π_eps(x − alpha · sign(J_Eᵀ z)))`` with ``z = s·E(x)``, i.e. descent on
    ``½‖z‖²`` (units: ``eps``/``alpha`` in 8-bit levels).
    """

    Config = ThrowawayConfig
    family = "encoder"
    plain = "Pulls the picture's encoding towards nothing, so an editing model sees a blank."
    version = 1

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        gradient = self.input_gradient(state, adversarial, latents, grad_outputs=latents.detach())
        loss = 0.5 * latents.detach().pow(2).flatten(1).sum(1)
        return -gradient, loss


def pytest_report_header(config) -> str:
    return f"throwaway protection {NAME!r} registered ({torch.__name__} {torch.__version__})"
