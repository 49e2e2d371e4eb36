"""Model families: what a latent diffusion model's denoiser was trained on, asked through the bundle.

A protection or an attack never assumes SD 1.x. It asks the bundle (``cloakbench.core.ldm.LDM``)
for the family's **noise path** (how a clean latent ``z`` and a noise draw ``ε`` make ``z_t``),
its **prediction target** (what the denoiser's output is compared with) and the **timestep the
denoiser reads** at a training-grid index ``t ∈ {0, …, T − 1}``. Two families:

``eps-unet`` — DDPM (Ho et al., arXiv 2006.11239) as Stable Diffusion 1.x/2.x/XL train it::

    z_t = √ᾱ_t · z + √(1 − ᾱ_t) · ε,     target ε,     denoiser reads t

with ``ᾱ_t`` from the scheduler (SD's scaled-linear β, ``cloakbench.core.ldm.sd_noise_schedule``).

``flow-transformer`` — rectified flow (Esser et al., "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis", arXiv 2403.03206, §2 eq. 1–3 and §3.1) as SD 3 and FLUX train it::

    z_t = (1 − σ_t) · z + σ_t · ε,       target v = ε − z,       denoiser reads 1000 · σ_t

``σ_t`` is the index ``t`` of the training grid of diffusers' ``FlowMatchEulerDiscreteScheduler``
(``scheduling_flow_match_euler_discrete.py``, ``__init__``): ``s = (t + 1) / T``, shifted by the
scheduler's ``shift`` α (Esser et al. §5.3.2, eq. 23) to ``σ_t = α·s / (1 + (α − 1)·s)``; the
denoiser's timestep input is ``σ_t · T`` (the scheduler's ``timesteps``). ``t`` drawn uniformly
over the grid gives σ with the density the shift sets — what diffusers'
``train_dreambooth_sd3.py`` does with ``--weighting_scheme none`` (uniform indices into
``noise_scheduler.sigmas``).

Both are affine in ``(z, ε)``: ``z_t = a_t·z + b_t·ε`` (:meth:`NoisePath.coefficients`), and the
target is ``c_z·z + c_ε·ε`` (:meth:`NoisePath.target`), which is all the protections' losses need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS_UNET = "eps-unet"
FLOW_TRANSFORMER = "flow-transformer"
PIXEL_DDPM = "pixel-ddpm"

#: Families a zoo entry may declare (docs/ARCHITECTURE.md, "Models").
FAMILIES = {
    EPS_UNET: "latent diffusion, ε-prediction UNet on a DDPM schedule (SD 1.x/2.x/XL)",
    FLOW_TRANSFORMER: "latent rectified flow, velocity-prediction transformer (MMDiT) on a shifted flow-matching "
    "schedule, 16-channel autoencoder with shift and scaling factors (SD 3 / FLUX class)",
    PIXEL_DDPM: "pixel-space DDPM, ε-prediction (purifications only)",
}
#: The families whose bundle is an LDM (protections and latent attacks run on them).
LATENT_FAMILIES = (EPS_UNET, FLOW_TRANSFORMER)


def inpaints_with_own_denoiser(family: str) -> bool:
    """Whether ``family`` inpaints with its ordinary denoiser, needing no separate inpainting model.

    SD 3's ``StableDiffusion3InpaintPipeline`` with a 16-input-channel transformer repaints by
    latent blending (the known latents re-noised to each σ are put back outside the mask), so a
    flow model inpaints with its own transformer; the ε family's inpaint pipeline needs SD's
    9-channel inpainting UNet (an ``inpaint_unet/`` folder)."""
    return family == FLOW_TRANSFORMER


@dataclass(frozen=True)
class NoisePath:
    """The forward process and prediction target of one family, on a ``T``-step training grid."""

    family: str
    #: ``(T,)`` float64: ``ᾱ_t`` (eps-unet) or ``σ_t`` (flow-transformer) per grid index.
    table: torch.Tensor

    @property
    def num_train_timesteps(self) -> int:
        return int(self.table.shape[0])

    @property
    def target_name(self) -> str:
        return "epsilon" if self.family == EPS_UNET else "velocity (ε − z)"

    def _at(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = self.table.to(device=like.device, dtype=like.dtype)[timesteps.to(like.device)]
        return values.view(-1, *([1] * (like.ndim - 1)))

    def coefficients(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, b_t)`` broadcastable to ``like``: ``z_t = a_t·z + b_t·ε``."""
        value = self._at(timesteps, like)
        if self.family == EPS_UNET:
            return value.sqrt(), (1.0 - value).sqrt()
        return 1.0 - value, value

    def add_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``z_t`` of ``latents`` at grid indices ``timesteps`` (one per row) with ``noise``."""
        a, b = self.coefficients(timesteps, latents)
        return a * latents + b * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output: ``ε`` or ``ε − z``."""
        return noise if self.family == EPS_UNET else noise - latents

    def target_coefficients(self) -> tuple[float, float]:
        """``(c_z, c_ε)``: the target is ``c_z·z + c_ε·ε``."""
        return (0.0, 1.0) if self.family == EPS_UNET else (-1.0, 1.0)

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The timestep the denoiser reads: the index itself, or ``T·σ_t`` (float)."""
        if self.family == EPS_UNET:
            return timesteps
        return self.table.to(timesteps.device, torch.float32)[timesteps] * self.num_train_timesteps


def flow_sigmas(num_train_timesteps: int, shift: float) -> torch.Tensor:
    """``σ_t`` for ``t = 0 … T − 1``, increasing, as ``FlowMatchEulerDiscreteScheduler.__init__`` builds
    its (decreasing) table: ``s = (t + 1)/T``, ``σ = shift·s / (1 + (shift − 1)·s)``."""
    s = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    return shift * s / (1 + (shift - 1) * s)


def noise_path(family: str, scheduler) -> NoisePath:
    """The :class:`NoisePath` of ``family`` with ``scheduler``'s table (DDPM's ᾱ, or the flow σ)."""
    if family == EPS_UNET:
        return NoisePath(family, scheduler.alphas_cumprod.to(torch.float64))
    if family == FLOW_TRANSFORMER:
        config = scheduler.config
        if getattr(config, "use_dynamic_shifting", False):
            raise ValueError(
                "a flow scheduler with use_dynamic_shifting (FLUX's resolution-dependent shift) has no fixed "
                "training grid; set shift in its scheduler_config.json"
            )
        return NoisePath(family, flow_sigmas(int(config.num_train_timesteps), float(config.shift)))
    raise ValueError(f"family {family!r} has no latent noise path; one of {', '.join(LATENT_FAMILIES)}")
