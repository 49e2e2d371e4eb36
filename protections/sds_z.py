"""The latent-only attack ``sds-z`` of Xue et al. (ICLR 2024): analysis only, not a protection to publish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images, quantize_8bit
from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import (
    GeneratorArg,
    PGDProtection,
    PGDState,
    StepDraws,
    draw_normal,
    draw_timesteps,
    image_generators,
    latent_shape,
)


@dataclass(frozen=True)
class LatentSDSConfig:
    """sds-z settings. Budgets are in *scaled-latent* units, not pixels.

    latent_eps: L∞ box around the clean latent ``z = s·E(x)`` (default ``2·16/255``:
        the reference passes its pixel budget on [−1, 1] unchanged to the latent).
    latent_alpha: step on ``z`` (default ``2·1/255``).
    steps: PGD steps (100). prompt: conditioning text (default "a photo"). latent: how
        ``z`` starts (``sample``, default, or ``mean`` of the posterior).
    """

    latent_eps: float = bounded(2 * 16 / 255, 0, 100, low_open=True)
    latent_alpha: float = bounded(2 * 1 / 255, 0, 100, low_open=True)
    steps: int = bounded(100, 1, 100_000)
    prompt: str = "a photo"
    latent: Literal["sample", "mean"] = "sample"


@PROTECTIONS.register("sds-z")
class LatentSDS(PGDProtection):
    """sds-z: SDS(−) on the latent z itself, decoded at the end (no pixel budget); shows the UNet is robust.

    Xue et al., "Toward effective protection against diffusion based mimicry through
    score distillation", ICLR 2024, arXiv 2311.12832, Sec. 4.

    Threat model: none an artist could use. PGD runs directly on the latent, and the
    decoded image has **no pixel budget** (the decoder may move any pixel), which is
    why the entry is ``analysis_only`` and left out of ``--methods all``. It shows that
    attacking the denoiser alone, with the encoder out of the loop, barely moves it.

    Update, per image, one ``t``, ``ε`` per step, ``ε̂ = ε_θ(z_t, t, c)`` under
    ``no_grad``, the box ``Π`` of ``latent_eps`` (scaled-latent units) around the clean
    latent ``z_0 = s·E(x)``::

        z ← Π(z − latent_alpha · sign(ε̂ − ε)),   then   x = D(z / s), rounded to 8-bit

    Config (:class:`LatentSDSConfig`): latent_eps 2·16/255, latent_alpha 2·1/255,
    steps 100, prompt "a photo", latent "sample".

    Example::

        analysis = PROTECTIONS.get("sds-z").from_overrides({"steps": "2"})
        g = torch.Generator().manual_seed(0)
        decoded = analysis(images, model, generator=g)  # 8-bit, but not within any pixel budget
    """

    family = "latent"
    plain = "For analysis only: changes the model's hidden encoding, not the pixels; nothing to publish."

    Config = LatentSDSConfig
    # 2: the clean image is encoded as given, and it now enters in the canonical channels-last layout
    # (core.images.protection_batch), not the decoder's view: its rounding moved (toy: 0.04-0.46 % of values).
    version = 2
    analysis_only = True
    needs = frozenset({"diffusion_noise", "prompt"})

    # Its own prepare / draw / step / finalize: the state's images are latents here.
    def prepare(self, images: torch.Tensor, model, *, generator: GeneratorArg | None) -> PGDState:
        check_images(images, self.name, multiple_of=8)  # the VAE downsamples by 8
        clean = images.detach().to(device=model.device, dtype=torch.float32)
        generators = image_generators(clean, generator)
        shape = latent_shape(model, *clean.shape[-2:])
        noise = draw_normal(generators, shape, model.device, model.dtype) if self.config.latent == "sample" else None
        with torch.no_grad():
            start = losses.image_latent(model, clean, noise)
        return PGDState(
            model=model,
            clean=start,
            adversarial=start.clone(),
            generators=generators,
            latent_shape=shape,
            prompt_embeds=model.encode_prompt(self.config.prompt, clean.shape[0]),
        )

    def draw(self, state: PGDState) -> StepDraws:
        device, dtype = state.model.device, state.model.dtype
        return StepDraws(
            timesteps=draw_timesteps(state.generators, state.model.num_train_timesteps, device),
            noise=draw_normal(state.generators, state.latent_shape, device, dtype),
        )

    def step(self, state: PGDState) -> torch.Tensor:
        draws = self.draw(state)
        residual, loss = losses.sds_residual(
            state.model, state.adversarial, draws.timesteps, draws.noise, state.prompt_embeds
        )
        eps = self.config.latent_eps
        with torch.no_grad():
            moved = state.adversarial - self.config.latent_alpha * residual.sign()
            state.adversarial = torch.minimum(torch.maximum(moved, state.clean - eps), state.clean + eps)
        state.step_index += 1
        loss = loss.detach().float().cpu()
        state.trace.append(loss)
        return loss

    def finalize(self, state: PGDState) -> torch.Tensor:
        with torch.no_grad():
            decoded = state.model.decode(state.adversarial)
        return quantize_8bit(decoded.float())
