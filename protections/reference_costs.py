"""What the reference implementation of Xue et al. pays on top of each method (``reference_mode``).

By default every protection runs at *fair* cost (docs/PROTECTIONS.md, "Fair cost"):
every weight frozen, gradients taken w.r.t. the image only (``torch.autograd.grad``),
the target latent computed once. The reference code of Xue et al. (arXiv 2311.12832)
pays more, and ``reference_mode=True`` reproduces that cost so ``bench perf`` can
measure both. Each method declares which of these costs its reference pays in
``reference_costs`` (names documented in ``protections/base.py``):

- ``trainable_unet``: the UNet's weights require grad during the step and the step's
  gradient comes from ``loss.backward()``, so the backward pass also builds weight
  gradients. They are dropped, and ``requires_grad`` restored, at the end of every
  step, so the shared model leaves the step exactly as it entered it.
- ``target_encode``: the target image is re-encoded every step (its posterior does
  not change, so the update does not either).
- ``target_forward``: the reference's loss module runs the UNet on the target's latent
  (the posterior mean) every step, and the graph stays alive through the backward pass.
- ``image_forward``: the same on the image's latent (texture-only computes an ``L_S``
  it does not use).

None of this changes the update: the extra forwards draw their ``t`` and ``ε`` from a
generator of their own (seeded 0), never from the images' generators, and their losses
are never differentiated. Methods taken from other code bases (PhotoGuard, the encoder
attack) declare no cost; for them ``reference_mode`` changes nothing.

The engine (``protections/engine.py``) holds one :class:`ReferenceCosts` per run in
``state.reference`` (``None`` at fair cost) and calls it at four marked points:
``start`` in ``prepare``, ``step`` around the direction, ``image_latent`` when a
direction encodes the image, ``input_gradient`` for the step's gradient.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from cloakbench.protections import losses
from cloakbench.protections.targets import PATTERN

if TYPE_CHECKING:
    from cloakbench.protections.engine import PGDProtection, PGDState

# What the reference's loss module falls back to for methods without these settings.
REFERENCE_PROMPT = "a photo"


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


class ReferenceCosts:
    """The extra costs one run pays in reference mode; see the module docstring."""

    def __init__(self, costs: tuple[str, ...]):
        self.costs = frozenset(costs)
        # Separate from the images' generators, so the update is the one fair mode draws.
        self.generator = torch.Generator().manual_seed(0)
        self.keep_alive: list[torch.Tensor] = []

    @classmethod
    def start(cls, protection: "PGDProtection", state: "PGDState") -> "ReferenceCosts | None":
        """The run's costs (``None`` when the method declares none); encodes what they use.

        The reference's loss module conditions on a prompt and holds a target image
        even for methods that use neither (AdvDM, texture-only): those are encoded here,
        once, with the reference's defaults.
        """
        if not protection.reference_costs:
            return None
        costs = cls(protection.reference_costs)
        config = protection.config
        if costs.costs & {"target_forward", "image_forward"} and state.prompt_embeds is None:
            state.prompt_embeds = state.model.encode_prompt(getattr(config, "prompt", REFERENCE_PROMPT), state.batch)
        if "target_forward" in costs.costs and state.target is None and not state.target_is_zero:
            state.set_target(getattr(config, "target", PATTERN))
        return costs

    @contextlib.contextmanager
    def step(self, state: "PGDState"):
        """Around one direction: trainable UNet, target re-encoded and re-forwarded, graphs kept."""
        model = state.model
        try:
            with trainable_unet(model, "trainable_unet" in self.costs):
                if "target_encode" in self.costs and state.target_images is not None:
                    with torch.no_grad():
                        state.target = losses.posterior_stats(model, state.target_images)
                if "target_forward" in self.costs:
                    if state.target_is_zero:
                        target = torch.zeros((1, *state.latent_shape), device=model.device, dtype=model.dtype)
                    else:
                        target = state.target.latent(None, model.scaling_factor)[:1]
                    self._semantic_forward(state, target)
                yield
        finally:
            # The graphs die only now, after the direction's backward pass: what the reference holds.
            self.keep_alive.clear()

    def image_latent(self, state: "PGDState", latents: torch.Tensor) -> None:
        """Called with the image's latent ``z = s·E(x)`` a direction has just computed."""
        if "image_forward" in self.costs:
            self._semantic_forward(state, latents)

    def input_gradient(self, adversarial: torch.Tensor, outputs: torch.Tensor,
                       grad_outputs: torch.Tensor | None) -> torch.Tensor:
        """``∂outputs/∂x``; with a trainable UNet through ``backward()``, as the reference does."""
        if "trainable_unet" in self.costs:
            outputs.backward(gradient=grad_outputs)
            return adversarial.grad.detach()
        (gradient,) = torch.autograd.grad(outputs, adversarial, grad_outputs=grad_outputs)
        return gradient

    def _semantic_forward(self, state: "PGDState", latents: torch.Tensor) -> None:
        """``L_S`` on ``latents`` with its own ``t``, ``ε``; the graph is kept until the step ends."""
        model = state.model
        timesteps = torch.randint(0, model.num_train_timesteps, (latents.shape[0],), generator=self.generator)
        noise = torch.randn(tuple(latents.shape), generator=self.generator)
        loss = losses.semantic_loss(model, latents, timesteps.to(model.device), noise.to(model.device, latents.dtype),
                                    state.prompt_embeds[:1].expand(latents.shape[0], -1, -1))
        self.keep_alive.append(loss)
