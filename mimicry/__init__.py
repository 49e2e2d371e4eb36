"""Mimicry attacks and purifications. Importing this package registers them in :data:`MIMICRY`."""

from mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry, parse_attack_spec, resolve_attacks
from mimicry import identity  # noqa: F401  (registers)
from mimicry import sdedit  # noqa: F401  (registers sdedit, sdedit-1step)
from mimicry import inpaint  # noqa: F401  (registers)
from mimicry import textual_inversion  # noqa: F401  (registers)
from mimicry import filters  # noqa: F401  (registers jpeg, blur, noise)
from mimicry import upscale  # noqa: F401  (registers)
from mimicry import diffpure  # noqa: F401  (registers)
from mimicry import impress  # noqa: F401  (registers)

__all__ = ["MIMICRY", "AttackContext", "AttackUnavailable", "Mimicry", "parse_attack_spec", "resolve_attacks"]
