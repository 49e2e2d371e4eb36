"""cloakbench: which image protection really stops diffusion-based mimicry, and at what cost.

cloakbench measures how well image protections (AdvDM, Mist, PhotoGuard and the
SDS(+), SDS(-), SDST methods of Xue et al., "Toward effective protection against
diffusion based mimicry through score distillation", ICLR 2024, arXiv:2311.12832)
stop diffusion-based mimicry, and what each protection costs.

The repository root is this package: module ``cloakbench.X.Y`` is the file ``X/Y.py``.
Three layers, imports pointing down only (docs/ARCHITECTURE.md, "Layers"):

- ``cloakbench.core``: registry, components, configs, schema, images, io, the model zoo;
- ``cloakbench.protections``, ``cloakbench.mimicry``, ``cloakbench.metrics``: the methods;
- ``cloakbench.bench`` (the harness: spec, plan, execute, executors, store, perf, CLI) and
  ``cloakbench.reports``.
"""

#: The one place the version is written (pyproject reads it). It is part of every cell key
#: (``cloakbench.bench.plan``), so it moves exactly when cell keys or results change
#: (CHANGELOG.md, "Versioning").
__version__ = "0.1.0"
