"""Mimicry attacks and purifications. Importing this package registers them in :data:`MIMICRY`."""

from mimicry.base import MIMICRY, AttackContext, Mimicry, parse_attack_spec, resolve_attacks
from mimicry import identity  # noqa: F401  (registers)

__all__ = ["MIMICRY", "AttackContext", "Mimicry", "parse_attack_spec", "resolve_attacks"]
