"""cloakbench: which image protection really stops diffusion-based mimicry, and at what cost.

cloakbench measures how well image protections (AdvDM, Mist, PhotoGuard and the
SDS(+), SDS(-), SDST methods of Xue et al., "Toward effective protection against
diffusion based mimicry through score distillation", ICLR 2024, arXiv:2311.12832)
stop diffusion-based mimicry, and what each protection costs.

This package is the harness layer (spec, plan, execute, executors, the compare driver, the
store, profiling, ``bench perf``, the CLI); ``cloakbench.core`` is the layer below everything,
and ``cloakbench.protections``, ``cloakbench.mimicry``, ``cloakbench.metrics`` the methods
between them (docs/ARCHITECTURE.md, "Layers").
"""

__version__ = "0.1.0"
