"""SDEdit: noise the published image's latent part-way and denoise it with the prompt.

Meng et al., "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations", ICLR 2022 (arXiv 2108.01073), run in Stable Diffusion's latent space as in
Xue et al., "Toward effective protection against diffusion based mimicry through score
distillation", ICLR 2024 (arXiv 2311.12832).

Threat model: the mimic holds the published 8-bit image and the same latent diffusion
model, and edits the image at a chosen strength; a protection works if the edit of the
protected image is worse than the edit of the clean one (same seed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry
from cloakbench.mimicry.common import (
    alpha_bar,
    check_epsilon_prediction,
    format_strength,
    forward_noise,
    note,
    predict_guided_noise,
    predict_x0,
    resolve_strength,
)

log = logging.getLogger(__name__)


class StrengthSweep(Mimicry):
    """An attack swept over ``config.strengths``: one setting (and one output) per strength."""

    def settings(self) -> list[str]:
        return [format_strength(s) for s in self.config.strengths]


@MIMICRY.register("sdedit")
class SDEdit(StrengthSweep):
    """SDEdit (Meng et al., arXiv 2108.01073): img2img at several strengths with DDIM, through diffusers.

    Per strength ``s``, the latent ``z₀ = s_vae·E(x)`` is noised and denoised by diffusers'
    ``StableDiffusionImg2ImgPipeline`` with a DDIM scheduler (η = 0). Images are
    ``(N, 3, H, W)`` in ``[0, 1]``; the output has the same shape and range.

    Timestep convention (docs/MIMICRY.md): this harness does what diffusers does. With ``steps``
    DDIM steps on the 1000-step schedule (``steps_offset=1``), strength ``s`` keeps the last
    ``int(steps·s)`` steps of the grid; the latent is noised **straight to** the first of them
    and denoising starts there. For s = 0.3 and 100 steps: noised to t = 291, first denoising
    step at t = 291, 30 steps. (The reference noises to 301 and starts denoising at 291.) The
    timesteps actually used are written to ``context.notes["sdedit"][setting]``.

    Strength 0 means no noise and no denoising: the output is the VAE round trip ``D(E(x))``
    (diffusers refuses a strength that leaves zero steps; so do we for ``0 < s < 1/steps``).

    Config (defaults from docs/MIMICRY.md):
        strengths: ``(0.1, 0.2, 0.3, 0.5)`` — Xue et al. use 0.01–0.3, PhotoGuard 0.5; one
            call per strength (``context.setting``).
        steps: 100 DDIM steps on the full schedule (η = 0).
        guidance_scale: 1.0 (no classifier-free guidance, as in the reference); 7.5 is the
            usual SD option.
        eta: 0.0 (deterministic DDIM).
        latent: ``"sample"`` draws ``z ~ q(z|x)`` with the generator (what diffusers and the
            reference do); ``"mean"`` uses the posterior mean.
    The prompt is ``context.prompt`` (the protection prompt by default).
    """

    version = 1
    # --quick: enough DDIM steps that the smallest strength (0.1) still denoises once
    QUICK = {"steps": 10}

    @dataclass(frozen=True)
    class Config:
        strengths: tuple[float, ...] = bounded((0.1, 0.2, 0.3, 0.5), 0, 1)
        steps: int = bounded(100, 1, 10_000)
        guidance_scale: float = bounded(1.0, 0, 100)
        eta: float = bounded(0.0, 0, 1)
        latent: Literal["sample", "mean"] = "sample"

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        check_images(images, self.name)
        strength = resolve_strength(context.setting, self.config.strengths, self.name)
        steps = self.config.steps
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {steps}")
        used = int(steps * strength)  # diffusers' own rounding (get_timesteps)
        if strength > 0.0 and used < 1:
            raise ValueError(
                f"{self.name}: strength {strength} leaves int({steps}·{strength}) = 0 of {steps} DDIM steps; "
                f"use strength 0 (the VAE round trip) or at least {1 / steps:g}, or more steps"
            )
        latents = model.encode(images, mode=self.config.latent, generator=generator)
        if strength == 0.0:
            note(context, self.name, format_strength(strength), {"noised_to": None, "denoising_steps": 0})
            return model.decode(latents).to(device=images.device, dtype=torch.float32)
        if model.is_flow:
            return self.flow_edit(latents, strength, model, generator, context).to(images.device, torch.float32)
        pipe = model.img2img_pipeline()
        # SDXL: StableDiffusionXLImg2ImgPipeline fed the bundle's conditioning (its pooled vector;
        # the pipeline adds the size ids of the latents' working size, as LDM.predict does).
        prompt = (
            model.pipeline_prompt_kwargs(context.prompt, images.shape[0], self.config.guidance_scale)
            if model.is_sdxl
            else {"prompt": [context.prompt] * images.shape[0]}
        )
        # Latents are passed in, so the pipeline skips its own encode and the posterior sample
        # above uses the caller's generator in the same order diffusers would (the pipeline
        # takes latents of any width: LDM.img2img_pipeline).
        output = pipe(
            **prompt,
            image=latents,
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=self.config.guidance_scale,
            eta=self.config.eta,
            generator=generator,
            output_type="pt",
        ).images
        timesteps = [int(t) for t in pipe.scheduler.timesteps[steps - used :]]
        note(
            context,
            self.name,
            format_strength(strength),
            {"noised_to": timesteps[0], "first_denoise": timesteps[0], "denoising_steps": len(timesteps)},
        )
        note(context, self.name, "convention", "diffusers: noised straight to the first kept DDIM step")
        log.debug("sdedit s=%g: noised to t=%d, %d DDIM steps", strength, timesteps[0], len(timesteps))
        return output.to(device=images.device, dtype=torch.float32)

    def flow_edit(self, latents, strength, model, generator, context) -> torch.Tensor:
        """SDEdit on a flow model (SD 3 class): diffusers' ``StableDiffusion3Img2ImgPipeline``.

        The flow scheduler (``FlowMatchEulerDiscreteScheduler``, the model's shift) keeps the
        last ``int(steps·s)`` of its ``steps`` σ's; the latent is noised straight to the first,
        ``z = (1 − σ)·z₀ + σ·ε`` (``scheduler.scale_noise``), and Euler integrates the velocity
        to σ = 0. Euler on the probability-flow ODE is deterministic: ``eta`` has no meaning
        here and is not passed. The pipeline returns latents, decoded with the bundle's shift
        and scale. The σ's used are noted.
        """
        steps, batch = self.config.steps, latents.shape[0]
        pipe = model.img2img_pipeline()
        height, width = (size * pipe.vae_scale_factor for size in latents.shape[-2:])
        out = pipe(
            **model.pipeline_prompt_kwargs(context.prompt, batch, self.config.guidance_scale),
            image=latents,
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=self.config.guidance_scale,
            generator=generator,
            height=height,
            width=width,
            output_type="latent",
        ).images
        # The pipeline's own start (get_timesteps -> scheduler.set_begin_index), not a recomputation.
        sigmas = [round(float(s), 4) for s in pipe.scheduler.sigmas[pipe.scheduler.begin_index : -1]]
        note(
            context,
            self.name,
            format_strength(strength),
            {
                "noised_to_sigma": sigmas[0],
                "denoising_steps": len(sigmas),
                "scheduler_shift": pipe.scheduler.config.shift,
            },
        )
        note(context, self.name, "convention", "diffusers SD 3: noised straight to the first kept flow σ")
        return model.decode(out)


@MIMICRY.register("sdedit-1step")
class SDEditOneStep(StrengthSweep):
    """One-step SDEdit: decode the x̂₀ prediction at t = strength·T (the reference's one-step edit).

    Xue et al. (arXiv 2311.12832) report both one-step and multi-step edits. Here
    ``z_t = √ᾱ_t·z₀ + √(1−ᾱ_t)·ε`` with ``t = round(strength·T)`` (T = 1000; strength 1
    uses t = T − 1, the last timestep that exists), one UNet call gives ε̂, and
    ``D((z_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t)`` is the output. Strength 0 is the VAE round trip.
    Written by hand: no diffusers pipeline returns x̂₀ directly.

    Config: ``strengths`` (0.1, 0.2, 0.3, 0.5), ``guidance_scale`` 1.0, ``latent`` "sample" —
    the same meaning as in ``sdedit``. The prompt is ``context.prompt``.
    """

    version = 1

    @dataclass(frozen=True)
    class Config:
        strengths: tuple[float, ...] = bounded((0.1, 0.2, 0.3, 0.5), 0, 1)
        guidance_scale: float = bounded(1.0, 0, 100)
        latent: Literal["sample", "mean"] = "sample"

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        check_images(images, self.name)
        if not model.is_flow:
            check_epsilon_prediction(model, self.name)
        strength = resolve_strength(context.setting, self.config.strengths, self.name)
        latents = model.encode(images, mode=self.config.latent, generator=generator)
        if strength == 0.0:
            note(context, self.name, format_strength(strength), {"timestep": None})
            return model.decode(latents).to(device=images.device, dtype=torch.float32)
        timestep = min(round(strength * model.num_train_timesteps), model.num_train_timesteps - 1)
        if model.is_flow:
            return self.flow_one_step(latents, timestep, model, generator, context, strength).to(
                images.device, torch.float32
            )
        noisy = forward_noise(model, latents, timestep, generator)
        noise_pred = predict_guided_noise(model, noisy, timestep, context.prompt, self.config.guidance_scale)
        clean = predict_x0(noisy.to(torch.float32), noise_pred.to(torch.float32), alpha_bar(model, timestep))
        note(context, self.name, format_strength(strength), {"timestep": timestep})
        return model.decode(clean.to(model.dtype)).to(device=images.device, dtype=torch.float32)

    def flow_one_step(self, latents, timestep, model, generator, context, strength) -> torch.Tensor:
        """The flow form: ``z_t = (1 − σ_t) z₀ + σ_t ε`` at grid index ``t``, one velocity
        ``v̂`` (guided as ``v(∅) + g·(v(c) − v(∅))``), and ``x̂₀ = z_t − σ_t·v̂`` — the clean
        end of the straight path that ``v = ε − z`` defines (Esser et al., arXiv 2403.03206, eq. 2)."""
        from diffusers.utils.torch_utils import randn_tensor

        batch = latents.shape[0]
        steps = torch.full((batch,), timestep, device=latents.device, dtype=torch.long)
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noisy = model.add_noise(latents, steps, noise)
        velocity = model.predict(noisy, steps, model.encode_prompt(context.prompt, batch))
        if self.config.guidance_scale > 1.0:
            empty = model.predict(noisy, steps, model.encode_prompt("", batch))
            velocity = empty + self.config.guidance_scale * (velocity - empty)
        _, sigma = model.noise_path.coefficients(steps, latents)
        note(context, self.name, format_strength(strength), {"timestep": timestep, "sigma": round(float(sigma[0]), 4)})
        return model.decode((noisy.float() - sigma.float() * velocity.float()).to(model.dtype))
