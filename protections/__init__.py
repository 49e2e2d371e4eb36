"""Protections: adversarial perturbations that try to stop diffusion-based mimicry.

One module per method, under its paper's name (``advdm.py`` holds AdvDM and AdvDM(−),
``mist.py``, ``photoguard.py``, ``texture.py``, ``encoder.py``, ``sds.py`` holds SDS(+)
and SDS(−), ``sdst.py``, ``sds_z.py``, ``fsmg.py``, ``aspl.py``, ``noise.py``, ``none.py``; their
surrogate ``surrogate.py``); the shared PGD loop is
``engine.py``, the losses ``losses.py``, the reference implementation's extra costs
``reference_costs.py``. Importing this package registers every protection in
:data:`PROTECTIONS`, in the order ``--methods all`` lists them.
"""

# Registration order is the listing order (and the order of a run's cells): keep it.
from cloakbench.protections import advdm, aspl, encoder, fsmg, mist, noise, none, photoguard, sds, sds_z, sdst, texture  # noqa: F401  (register)  # noqa: F401,E402  (register)  # noqa: F401,E402  (register)  # noqa: F401,E402  (register)
from cloakbench.protections.base import PROTECTIONS, Protection, publishable_protections

__all__ = ["PROTECTIONS", "Protection", "publishable_protections"]
