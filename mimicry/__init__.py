"""Mimicry attacks and purifications. Importing this package registers them in :data:`MIMICRY`."""

from cloakbench.mimicry.base import (
    MIMICRY,
    AttackContext,
    AttackUnavailable,
    Mimicry,
    parse_attack_spec,
    resolve_attacks,
)

# Registration order is the listing order (``--attacks all``, and a run's cells and rows): keep it.
# isort: off
from cloakbench.mimicry import identity  # noqa: F401  (registers)
from cloakbench.mimicry import sdedit  # noqa: F401  (registers sdedit, sdedit-1step)
from cloakbench.mimicry import inpaint  # noqa: F401  (registers)
from cloakbench.mimicry import textual_inversion  # noqa: F401  (registers)
from cloakbench.mimicry import lora, dreambooth  # noqa: F401  (register)
from cloakbench.mimicry import filters  # noqa: F401  (registers jpeg, blur, noise)
from cloakbench.mimicry import upscale  # noqa: F401  (registers upscale, upscale-bicubic)
from cloakbench.mimicry import diffpure, diffpure_latent, gridpure, pdm_pure  # noqa: F401  (register)
from cloakbench.mimicry import impress  # noqa: F401  (registers)
from cloakbench.mimicry import encoder_harden, counter_pgd  # noqa: F401  (register: the adaptive attackers)
# isort: on

__all__ = ["MIMICRY", "AttackContext", "AttackUnavailable", "Mimicry", "parse_attack_spec", "resolve_attacks"]
