"""Protections: adversarial perturbations that try to stop diffusion-based mimicry.

Importing this package registers every protection in :data:`PROTECTIONS`.
"""

from cloakbench.protections.base import PROTECTIONS, Protection, publishable_protections
from cloakbench.protections import none  # noqa: F401  (registers)
from cloakbench.protections import noise, semantic, encoder, sds  # noqa: F401,E402  (register)

__all__ = ["PROTECTIONS", "Protection", "publishable_protections"]
