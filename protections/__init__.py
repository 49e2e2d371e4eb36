"""Protections: adversarial perturbations that try to stop diffusion-based mimicry.

One module per method, under its paper's name (``advdm.py`` holds AdvDM and AdvDM(−),
``mist.py``, ``photoguard.py``, ``texture.py``, ``encoder.py``, ``sds.py`` holds SDS(+)
and SDS(−), ``sdst.py``, ``sds_z.py``, ``fsmg.py``, ``aspl.py``, ``noise.py``, ``none.py``, ``amortized.py``,
``external.py`` (another tool's files, scored by the leaderboard); their surrogate ``surrogate.py``,
the amortized protectors' generator ``perturbation_generator.py`` and its training
``amortized_training.py``); the shared PGD loop is
``engine.py``, the losses ``losses.py``, the reference implementation's extra costs
``reference_costs.py``. Importing this package registers every protection in
:data:`PROTECTIONS`, in the order ``--methods all`` lists them.
"""

from cloakbench.protections.base import (
    PROTECTIONS,
    Protection,
    ProtectionUnavailable,
    demo_protections,
    publishable_protections,
)

# Registration order is the listing order (and the order of a run's cells and rows): keep it.
# isort: off
from cloakbench.protections import none, noise  # noqa: F401  (register)
from cloakbench.protections import advdm, mist, photoguard, texture, encoder  # noqa: F401  (register)
from cloakbench.protections import sds, sdst, sds_z  # noqa: F401  (register)
from cloakbench.protections import fsmg, aspl  # noqa: F401  (register)
from cloakbench.protections import amortized  # noqa: F401  (register)
from cloakbench.protections import external  # noqa: F401  (registers: another tool's files, --protected)
# isort: on

__all__ = ["PROTECTIONS", "Protection", "ProtectionUnavailable", "demo_protections", "publishable_protections"]
