"""Score-distillation protections of Xue et al.: SDS(+), SDS(−), SDST(−), and the latent attack sds-z.

"Toward effective protection against diffusion based mimicry through score
distillation", Xue et al., ICLR 2024, arXiv 2311.12832. The gradient of ``L_S`` w.r.t.
the latent is ``(∂ε̂/∂z_t)ᵀ(ε̂ − ε)`` up to a constant; score distillation (Poole et
al., arXiv 2209.14988) drops the UNet Jacobian, leaving the image gradient
``J_Eᵀ(ε̂ − ε)``: the UNet runs forward under ``no_grad`` and only the encoder is
backpropagated. That saves the UNet's activations and its backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from cloakbench.protections import losses
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import (
    GeneratorArg, PGDProtection, PGDState, StepDraws, check_images, draw_normal, draw_timesteps,
    image_generators, latent_shape,
)
from cloakbench.protections.semantic import SemanticConfig


@dataclass(frozen=True)
class SDSConfig(SemanticConfig):
    """PGD settings, prompt; no random start (the reference starts SDS from the clean image)."""

    random_start: bool = False


@dataclass(frozen=True)
class SDSTConfig(SDSConfig):
    """SDST(−): ``target`` of ``L_T`` and ``target_rate`` r, the weight of the SDS term (5)."""

    target: str = "pattern"
    target_rate: float = 5.0


class _ScoreDistillation(PGDProtection):
    Config = SDSConfig
    semantic = True
    uses_prompt = True
    sign: ClassVar[float] = -1.0

    def sds_vector(self, state: PGDState, latents: torch.Tensor, draws: StepDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ε̂ − ε, L_S per image)``, UNet under ``no_grad``."""
        return losses.sds_residual(state.model, latents, draws.timesteps, draws.noise, state.prompt_embeds)

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        residual, loss = self.sds_vector(state, latents, draws)
        gradient = self.input_gradient(state, adversarial, latents, grad_outputs=residual)  # J_Eᵀ(ε̂ − ε)
        return self.sign * gradient, loss


@PROTECTIONS.register("sds+")
class SDSPlus(_ScoreDistillation):
    """SDS(+): AdvDM's ascent with the score-distillation gradient J_Eᵀ(ε̂−ε); the UNet runs forward only.

    Xue et al., ICLR 2024, arXiv 2311.12832. Update ``x ← x + alpha · sign(J_Eᵀ(ε̂ − ε))``
    with ``ε̂ = ε_θ(z_t, t, c)`` under ``no_grad``. The step-loss trace is the ``L_S``
    estimate ``mean ‖ε̂ − ε‖²``. Defaults: eps 16, alpha 1, 100 steps, no random start,
    prompt "a photo", posterior sample.
    """

    version = 1
    sign = 1.0


@PROTECTIONS.register("sds-")
class SDSMinus(_ScoreDistillation):
    """SDS(−): descend with the score-distillation gradient, x ← x − alpha·sign(J_Eᵀ(ε̂−ε)); the paper's main method.

    Xue et al., ICLR 2024, arXiv 2311.12832: minimising the semantic loss protects
    better than maximising it, and SDS halves the cost of AdvDM by never
    backpropagating through the UNet. Defaults: eps 16, alpha 1, 100 steps, no random
    start, prompt "a photo", posterior sample.
    """

    version = 1
    sign = -1.0


@PROTECTIONS.register("sdst-")
class SDSTMinus(_ScoreDistillation):
    """SDST(−): SDS(−) plus the textural pull, x ← x − alpha·sign(r·J_Eᵀ(ε̂−ε) + ∇L_T), r = 5.

    Xue et al., ICLR 2024, arXiv 2311.12832. ``L_T = ‖s·E(x) − s·E(x_target)‖²`` summed.
    Both terms go through one encoder backward: ``J_Eᵀ(r·(ε̂ − ε) + ∂L_T/∂z)`` with
    ``∂L_T/∂z = 2(z − z_target)`` (the reference encodes the image twice, drawing two
    posterior samples; one sample serves both terms here). Defaults: eps 16, alpha 1,
    100 steps, no random start, prompt "a photo", target "pattern", r = 5.
    """

    Config = SDSTConfig
    version = 1
    uses_target = True
    reference_target_encode = True  # the reference's SDS loop encodes its target every step

    def direction(self, state, adversarial, draws):
        latents = self.image_latent(state, adversarial, draws)
        residual, loss = self.sds_vector(state, latents, draws)
        target = self.target_latent(state, draws, latents)
        textural_grad = 2.0 * (latents.detach() - target)
        vector = self.config.target_rate * residual + textural_grad.to(residual.dtype)
        return -self.input_gradient(state, adversarial, latents, grad_outputs=vector), loss


# -- the latent-only attack (analysis) ---------------------------------------------------
@dataclass(frozen=True)
class LatentSDSConfig:
    """sds-z settings. Budgets are in *scaled-latent* units, not pixels.

    latent_eps: L∞ box around the clean latent ``z = s·E(x)`` (default ``2·16/255``:
        the reference passes its pixel budget on [−1, 1] unchanged to the latent).
    latent_alpha: step on ``z`` (default ``2·1/255``).
    steps: PGD steps (100). prompt: conditioning text. latent: how ``z`` starts
        (``sample`` or ``mean`` of the posterior).
    """

    latent_eps: float = 2 * 16 / 255
    latent_alpha: float = 2 * 1 / 255
    steps: int = 100
    prompt: str = "a photo"
    latent: Literal["sample", "mean"] = "sample"


@PROTECTIONS.register("sds-z")
class LatentSDS(PGDProtection):
    """sds-z: SDS(−) on the latent z itself, decoded at the end (no pixel budget); shows the UNet is robust.

    Xue et al., ICLR 2024, arXiv 2311.12832, Sec. 4: PGD directly on ``z`` with the
    score-distillation gradient, ``z ← Π(z − latent_alpha · sign(ε̂ − ε))`` in an L∞ box
    of ``latent_eps`` (scaled-latent units) around the clean latent, then ``x = D(z)``,
    rounded to 8-bit. The decoded image has **no pixel budget** (the decoder may move
    any pixel), which is why it is not a protection an artist could publish; it is
    left out of ``all``.
    """

    Config = LatentSDSConfig
    version = 1
    analysis_only = True
    semantic = True
    uses_prompt = True

    def prepare(self, images: torch.Tensor, model, *, generator: GeneratorArg | None) -> PGDState:
        check_images(images)
        clean = images.detach().to(device=model.device, dtype=torch.float32)
        generators = image_generators(clean, generator)
        shape = latent_shape(model, *clean.shape[-2:])
        noise = draw_normal(generators, shape, model.device, model.dtype) if self.config.latent == "sample" else None
        with torch.no_grad():
            start = losses.image_latent(model, clean, noise)
        return PGDState(model=model, clean=start, adversarial=start.clone(), generators=generators,
                        latent_shape=shape, prompt_embeds=model.encode_prompt(self.config.prompt, clean.shape[0]))

    def draw(self, state: PGDState) -> StepDraws:
        device, dtype = state.model.device, state.model.dtype
        return StepDraws(timesteps=draw_timesteps(state.generators, state.model.num_train_timesteps, device),
                         noise=draw_normal(state.generators, state.latent_shape, device, dtype))

    def step(self, state: PGDState) -> torch.Tensor:
        draws = self.draw(state)
        residual, loss = losses.sds_residual(state.model, state.adversarial, draws.timesteps, draws.noise,
                                             state.prompt_embeds)
        eps = self.config.latent_eps
        with torch.no_grad():
            moved = state.adversarial - self.config.latent_alpha * residual.sign()
            state.adversarial = torch.minimum(torch.maximum(moved, state.clean - eps), state.clean + eps)
        state.step_index += 1
        loss = loss.detach().float().cpu()
        state.trace.append(loss)
        return loss

    def finalize(self, state: PGDState) -> torch.Tensor:
        from cloakbench.core.images import quantize_8bit

        with torch.no_grad():
            decoded = state.model.decode(state.adversarial)
        return quantize_8bit(decoded.float())
