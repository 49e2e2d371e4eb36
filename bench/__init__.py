"""cloakbench harness core: registry, configs, models, images, store, runner, profiling, CLI.

cloakbench measures how well image protections (AdvDM, Mist, PhotoGuard and the
SDS(+), SDS(-), SDST methods of Xue et al., "Toward effective protection against
diffusion based mimicry through score distillation", ICLR 2024, arXiv:2311.12832)
stop diffusion-based mimicry, and what each protection costs.
"""

__version__ = "0.1.0"
