"""Mimicry attacks and purifications. Importing this package registers them in :data:`MIMICRY`."""

from cloakbench.mimicry import (  # noqa: F401  (register)  # noqa: F401,E401  (register)
    counter_pgd,
    diffpure,
    diffpure_latent,
    dreambooth,
    encoder_harden,
    filters,
    gridpure,
    identity,
    impress,
    inpaint,
    lora,
    pdm_pure,
    sdedit,
    textual_inversion,
    upscale,
)
from cloakbench.mimicry.base import (
    MIMICRY,
    AttackContext,
    AttackUnavailable,
    Mimicry,
    parse_attack_spec,
    resolve_attacks,
)

__all__ = ["MIMICRY", "AttackContext", "AttackUnavailable", "Mimicry", "parse_attack_spec", "resolve_attacks"]
