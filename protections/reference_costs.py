"""What the reference implementation of Xue et al. pays on top of each method (``reference_mode``).

By default every protection runs at *fair* cost (docs/PROTECTIONS.md, "Fair cost"):
every weight frozen, gradients taken w.r.t. the image only (``torch.autograd.grad``),
the target latent computed once. The reference code of Xue et al. ("Toward effective
protection against diffusion based mimicry through score distillation", ICLR 2024,
arXiv 2311.12832; xavihart/Diff-Protect) pays more, and ``reference_mode=True``
reproduces that cost, as the reference pays it, so ``bench perf`` can measure both.
Each method declares which costs its reference pays in ``reference_costs`` (names
documented in ``protections/base.py``):

- ``trainable_unet``: the UNet's weights require grad during the step and the step's
  gradient comes from ``loss.backward()``, so the backward pass also builds weight
  gradients. The reference never freezes its UNet: ``LatentDiffusion`` freezes only the
  first-stage (VAE) and conditioning models (``code/ldm/models/diffusion/ddpmAttack.py:506,522``).
  The gradients are dropped, and ``requires_grad`` restored, at the end of every step,
  so the shared model leaves the step exactly as it entered it.
- ``target_encode``: the target image is re-encoded every step (its posterior does not
  change, so the update does not either); the VAE is frozen in the reference, so this
  encode builds no graph.
- ``target_forward``: the reference's loss module runs ``L_S`` through the UNet on the
  target's latent every step (``code/diff_mist.py:155``,
  ``zy, loss_semantic_y = self.get_components(self.target_info)``), for every method it
  serves, even AdvDM, which never uses it.
- ``image_forward``: the same on the image's latent (texture-only's branch,
  ``diff_mist.py:161-162``, returns ``fn(zx, zy)`` and drops the ``L_S`` it computed).

And, for every method that declares any cost, two things of the reference's model:

- **UNet gradient checkpointing.** The reference's LDM config
  (``configs/stable-diffusion/v1-inference-attack.yaml:34``) sets ``use_checkpoint: True``;
  its ``ResBlock`` (``code/ldm/modules/diffusionmodules/openaimodel.py:250-251``) and
  ``BasicTransformerBlock`` (``code/ldm/modules/attention.py:209``) then keep only their
  inputs in the forward pass and recompute it during the backward pass. Reference mode
  turns on diffusers' UNet checkpointing (per ResNet and per transformer block, the same
  granularity) for the step and restores the previous setting after. It trades memory
  for a second forward in the backward pass, and only acts where a UNet forward builds
  a graph (with grad enabled).
- **Extra graphs freed when the loss module returns.** ``loss_semantic_y`` (and, for
  texture-only, the image's unused ``L_S``) are locals of the loss module's ``forward``:
  their graphs die when it returns, before the backward pass. So the extra forwards here
  are run, their losses dropped at once; under checkpointing what they hold meanwhile is
  the blocks' inputs, not their activations.

Option ``reference_double_encode`` (``PGDConfig``; default False): the reference's SDS
loop (``code/attacks.py:pgd_sds``) encoded the image twice per step until commit
e14dd7e (2023-10-03): once under ``no_grad`` for the UNet's input, once with grad for
the backward pass (first commit d2413cb, 2023-09-27, ``attacks.py:213`` and ``:246``),
which is the code as of the ICLR 2024 submission deadline (2023-09-28). The option
adds that ``no_grad`` encoder pass to every step of the methods served by that loop
(:data:`SDS_LOOP_FAMILY`); the current code encodes once, which is the default.

None of this changes the update: the extra forwards draw their ``t``, ``ε`` and
posterior noise from a generator of their own (seeded 0), never from the images'
generators, their losses are never differentiated, and checkpointing recomputes the
same numbers. Methods taken from other code bases (PhotoGuard, the encoder attack)
declare no cost; for them ``reference_mode`` changes nothing.

The engine (``protections/engine.py``) holds one :class:`ReferenceCosts` per run in
``state.reference`` (``None`` at fair cost) and calls it at four marked points:
``start`` in ``prepare``, ``step`` around the direction, ``image_latent`` when a
direction encodes the image, ``input_gradient`` for the step's gradient.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import torch

from cloakbench.protections import losses
from cloakbench.protections.targets import TEXT

if TYPE_CHECKING:
    from cloakbench.protections.engine import PGDProtection, PGDState

log = logging.getLogger(__name__)

# What the reference's loss module falls back to for methods without these settings
# (diff_mist.py:173, ``input_prompt='a photo'``; its target is MIST.png, here "text").
REFERENCE_PROMPT = "a photo"
REFERENCE_TARGET = TEXT
#: The family the reference runs through its SDS loop (``attacks.py:pgd_sds``), whose code once
#: encoded the image twice per step (``reference_double_encode``): SDS(+), SDS(-), SDST.
SDS_LOOP_FAMILY = "sds"


def uses_unet_checkpointing(protection) -> bool:
    """Whether ``protection`` runs with the reference's UNet gradient checkpointing (reference mode)."""
    config = getattr(protection, "config", None)
    return bool(getattr(config, "reference_mode", False) and getattr(protection, "reference_costs", ()))


@contextlib.contextmanager
def trainable_unet(model, enabled: bool):
    """The reference's accident, for one step: UNet weights require grad; restored after.

    Weight gradients built by ``backward()`` are dropped so the shared model leaves the
    step exactly as it entered it.
    """
    if not enabled:
        yield
        return
    parameters = list(model.unet.parameters())
    previous = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(parameters, previous):
            p.grad = None
            p.requires_grad_(flag)


@contextlib.contextmanager
def unet_checkpointing(model):
    """The reference's ``use_checkpoint: True``, for one step; the UNet's own setting restored after."""
    unet = model.unet
    if not getattr(unet, "_supports_gradient_checkpointing", False):
        log.warning(
            "%s's UNet does not support gradient checkpointing; reference mode runs without it",
            getattr(model, "name", "the model"),
        )
        yield
        return
    was_on = bool(unet.is_gradient_checkpointing)
    if not was_on:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if not was_on:
            unet.disable_gradient_checkpointing()


class ReferenceCosts:
    """The extra costs one run pays in reference mode; see the module docstring."""

    def __init__(self, costs: tuple[str, ...], *, double_encode: bool = False):
        self.costs = frozenset(costs)
        self.double_encode = double_encode
        # Separate from the images' generators, so the update is the one fair mode draws.
        self.generator = torch.Generator().manual_seed(0)

    @classmethod
    def start(cls, protection: PGDProtection, state: PGDState) -> ReferenceCosts | None:
        """The run's costs (``None`` when the method declares none); encodes what they use.

        The reference's loss module conditions on a prompt and holds a target image
        even for methods that use neither (AdvDM, texture-only): those are encoded here,
        once, with the reference's defaults.
        """
        if not protection.reference_costs:
            return None
        config = protection.config
        double = bool(getattr(config, "reference_double_encode", False)) and protection.family == SDS_LOOP_FAMILY
        costs = cls(protection.reference_costs, double_encode=double)
        if costs.costs & {"target_forward", "image_forward"} and state.prompt_embeds is None:
            state.prompt_embeds = state.model.encode_prompt(getattr(config, "prompt", REFERENCE_PROMPT), state.batch)
        if "target_forward" in costs.costs and state.target is None and not state.target_is_zero:
            state.set_target(getattr(config, "target", REFERENCE_TARGET))
        return costs

    @contextlib.contextmanager
    def step(self, state: PGDState):
        """Around one direction: checkpointed trainable UNet, target re-encoded and re-forwarded."""
        model = state.model
        with unet_checkpointing(model), trainable_unet(model, "trainable_unet" in self.costs):
            if "target_encode" in self.costs and state.target_images is not None:
                with torch.no_grad():
                    state.target = losses.posterior_stats(model, state.target_images)
            if "target_forward" in self.costs:
                if state.target_is_zero:
                    target = torch.zeros((1, *state.latent_shape), device=model.device, dtype=model.dtype)
                else:
                    target = state.target.latent(None, model.scaling_factor, model.shift_factor)[:1]
                self._semantic_forward(state, target)
            yield

    def image_latent(self, state: PGDState, latents: torch.Tensor) -> None:
        """Called with the image's latent ``z = s·E(x)`` a direction has just computed."""
        if self.double_encode:
            # The paper-time SDS loop's first, no_grad encoder pass (its posterior sample
            # from this run's own generator, so the images' streams are untouched).
            with torch.no_grad():
                stats = losses.posterior_stats(state.model, state.adversarial)
                noise = torch.randn(tuple(latents.shape), generator=self.generator)
                stats.latent(
                    noise.to(latents.device, latents.dtype), state.model.scaling_factor, state.model.shift_factor
                )
        if "image_forward" in self.costs:
            self._semantic_forward(state, latents)

    def input_gradient(
        self, adversarial: torch.Tensor, outputs: torch.Tensor, grad_outputs: torch.Tensor | None
    ) -> torch.Tensor:
        """``∂outputs/∂x``; with a trainable UNet through ``backward()``, as the reference does."""
        if "trainable_unet" in self.costs:
            outputs.backward(gradient=grad_outputs)
            return adversarial.grad.detach()
        (gradient,) = torch.autograd.grad(outputs, adversarial, grad_outputs=grad_outputs)
        return gradient

    def _semantic_forward(self, state: PGDState, latents: torch.Tensor) -> None:
        """``L_S`` on ``latents`` with its own ``t``, ``ε``; dropped at once, as the loss module drops it."""
        model = state.model
        timesteps = torch.randint(0, model.num_train_timesteps, (latents.shape[0],), generator=self.generator)
        noise = torch.randn(tuple(latents.shape), generator=self.generator)
        loss = losses.semantic_loss(
            model,
            latents,
            timesteps.to(model.device),
            noise.to(model.device, latents.dtype),
            state.prompt_embeds[:1].expand(latents.shape[0], -1, -1),
        )
        del loss  # its graph (and what checkpointing kept of it) is freed here, before the backward
