"""One sign-gradient PGD engine for every L∞ protection.

Each protection is mostly its :meth:`PGDProtection.direction`: the vector whose sign
moves the image one step, written in the method's own module (``advdm.py``,
``mist.py``, ``photoguard.py``, ``texture.py``, ``encoder.py``, ``sds.py``, ``sdst.py``).
The engine owns everything else, once (docs/PROTECTIONS.md, "Common setting"):

- the budget in 8-bit units of ``[0, 1]`` images: ``eps`` (default 16, i.e. 16/255),
  step ``alpha`` (default 1/255), ``steps`` (default 100), optionally PhotoGuard's
  linearly decaying step (``alpha_schedule="linear"``: from ``alpha`` down to ``alpha/100``);
- the update ``x ← clip_[0,1](Π_eps(x + alpha · sign(direction)))`` with an optional
  uniform random start in ``[−eps, eps]``;
- what a method declares it ``needs`` (``protections/base.py``): the prompt and the
  target encoded once in ``prepare``, ``t`` and ``ε`` drawn every step;
- a batch of images per step (each image draws its own randomness, see below);
- a per-step loss trace (``(N,)`` per step);
- the final 8-bit rounding (:func:`cloakbench.core.images.quantize_8bit`), followed by a clamp
  to the 8-bit values inside the ball, so the saved PNG keeps ``|δ|∞ ≤ eps/255`` even
  when the clean image is not itself 8-bit (the reference truncates and reaches
  ``(eps+1)/255``).

Step-level API (what ``bench perf`` times; ``__call__`` is exactly this)::

    protection = PROTECTIONS.get("sds-").from_overrides({"steps": "2"})
    state = protection.prepare(images, model, generator=generator)  # encode target, prompt, random start
    loss = protection.step(state)        # one PGD step, in place; returns the (N,) losses
    protected = protection.finalize(state)  # 8-bit rounded, inside the budget
    # protection(images, model, generator=g) == prepare + config.steps × step + finalize

``state.trace`` holds every step's losses; ``state.adversarial`` the current float image.

Randomness and batching. Every image gets its own ``torch.Generator`` (on the CPU, so
a GPU run draws the very same numbers): from a single ``generator``, one 62-bit draw
is taken and mixed with the SHA-256 of each image's pixels; a list of N generators
(the diffusers convention) is used as given. All per-step draws (posterior sample,
``t``, ``ε``, target sample) come from the image's own generator in a fixed order, so
protecting a batch gives each image what protecting it alone with the same seed
gives (up to the floating-point differences of batched kernels), and an image's
perturbation does not depend on its neighbours or its position in the batch.

Fair cost and reference mode (docs/PROTECTIONS.md, "Fair cost"). By default every
weight is frozen, gradients are taken w.r.t. the image only and the target latent is
computed once. ``reference_mode=True`` adds what the reference implementation pays
(a trainable, gradient-checkpointed UNet, the target re-encoded and re-forwarded each
step), as each method
declares in ``reference_costs``; that lives in ``protections/reference_costs.py``,
reached through one hook, ``state.reference`` (``None`` at fair cost), at the points
marked "reference mode" below. It never changes the update.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import inspect
import logging
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from cloakbench.core.config import bounded, check_ranges
from cloakbench.core.images import check_images, quantize_8bit
from cloakbench.protections import losses
from cloakbench.protections.base import Protection
from cloakbench.protections.reference_costs import ReferenceCosts
from cloakbench.protections.targets import target_image

log = logging.getLogger(__name__)

GeneratorArg = torch.Generator | Sequence[torch.Generator]


@dataclass(frozen=True)
class PGDConfig:
    """Settings shared by every L∞ PGD protection (budgets in 8-bit units of [0, 1] images).

    eps: L∞ budget, ``eps/255`` (default 16). A budget stated on [−1, 1] converts as
        ``eps_[−1,1] · 255 / 2`` (PhotoGuard's 0.06 → 7.65). After the final 8-bit
        rounding the effective budget is ``floor(eps)/255`` for 8-bit clean images.
    alpha: step size, ``alpha/255`` per step (default 1).
    steps: PGD steps (default 100).
    random_start: start from a uniform draw in ``[−eps, eps]`` (clamped to [0, 1]).
    alpha_schedule: ``constant``, or ``linear`` (PhotoGuard's decay from ``alpha`` to ``alpha/100``).
    latent: ``sample`` (the reference: ``E(x)`` is a posterior sample) or ``mean``.
    reference_mode: reproduce the reference implementation's cost
        (``protections/reference_costs.py``); the update is unchanged.
    reference_double_encode: in reference mode, also pay the second (``no_grad``) encoder
        pass per step that the reference's SDS loop ran at the paper's submission
        (``protections/reference_costs.py``); the update is unchanged.
    """

    eps: float = bounded(16.0, 0, 255, low_open=True)
    alpha: float = bounded(1.0, 0, 255, low_open=True)
    steps: int = bounded(100, 1, 100_000)
    random_start: bool = True
    alpha_schedule: Literal["constant", "linear"] = "constant"
    latent: Literal["sample", "mean"] = "sample"
    reference_mode: bool = False
    reference_double_encode: bool = False

    def __post_init__(self):
        # The declared ranges hold for a config built in code too, not only for overrides.
        check_ranges(self)
        if self.alpha_schedule not in ("constant", "linear"):
            raise ValueError(f"alpha_schedule must be 'constant' or 'linear', got {self.alpha_schedule!r}")
        if self.latent not in ("sample", "mean"):
            raise ValueError(f"latent must be 'sample' or 'mean', got {self.latent!r}")


# -- randomness ------------------------------------------------------------------------
def _pixel_digest(image: torch.Tensor) -> bytes:
    return hashlib.sha256(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).digest()


def image_generators(images: torch.Tensor, generator: GeneratorArg | None) -> list[torch.Generator]:
    """One generator per image: ``generator`` mixed with each image's pixels, or a given list."""
    count = images.shape[0]
    if generator is None:
        raise ValueError("this protection is random: pass generator=torch.Generator().manual_seed(SEED)")
    if isinstance(generator, (list, tuple)):
        if len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images; pass one per image")
        return list(generator)
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    derived = []
    for image in images:
        digest = hashlib.sha256(base.to_bytes(8, "little") + _pixel_digest(image)).digest()
        derived.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1))
    return derived


def draw_uniform(
    generators: list[torch.Generator], shape: Sequence[int], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """``(N, *shape)`` uniform in ``[low, high)``, row ``i`` from ``generators[i]``."""
    rows = [torch.rand(tuple(shape), generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device) * (high - low) + low


def draw_normal(
    generators: list[torch.Generator], shape: Sequence[int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    rows = [torch.randn(tuple(shape), generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)


def draw_timesteps(generators: list[torch.Generator], num_train_timesteps: int, device: torch.device) -> torch.Tensor:
    rows = [torch.randint(0, num_train_timesteps, (1,), generator=g, device=g.device) for g in generators]
    return torch.cat(rows).to(device=device, dtype=torch.long)


# -- budget --------------------------------------------------------------------------
def project(images: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """Onto the L∞ ball of radius ``eps`` (in [0, 1] units) around ``clean``, then into [0, 1]."""
    return torch.minimum(torch.maximum(images, clean - eps), clean + eps).clamp(0.0, 1.0)


def round_within_budget(images: torch.Tensor, clean: torch.Tensor, eps_8bit: float) -> torch.Tensor:
    """Round to 8-bit, then keep to the 8-bit values inside the ``eps/255`` ball around ``clean``.

    For an 8-bit clean image and integer ``eps`` rounding alone suffices; the clamp
    makes the guarantee hold for any clean image and any ``eps >= 1``.
    """
    rounded = quantize_8bit(images)
    # A tolerance absorbs float error in ``k/255``: 239.99998 must count as 240.
    low = torch.ceil((clean - eps_8bit / 255.0) * 255.0 - 1e-4).clamp(0, 255) / 255.0
    high = torch.floor((clean + eps_8bit / 255.0) * 255.0 + 1e-4).clamp(0, 255) / 255.0
    if bool((low > high).any()):
        raise ValueError(
            f"eps={eps_8bit} leaves no 8-bit value within the budget of a non-8-bit clean image; "
            "use eps >= 1 or 8-bit clean images"
        )
    return torch.minimum(torch.maximum(rounded, low), high)


# -- the state of one run ----------------------------------------------------------------
@dataclass
class StepDraws:
    """The randomness of one step, ``(N, …)`` each; ``None`` where the method needs none.

    ``timesteps`` and ``noise`` are ``t`` and ``ε`` of ``L_S``; ``latent_noise`` gives the
    posterior sample ``E(x) = mean + std · latent_noise``; ``target_noise`` the target's.
    Tests build these by hand to fix ``t`` and ``ε``.
    """

    timesteps: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    latent_noise: torch.Tensor | None = None
    target_noise: torch.Tensor | None = None


@dataclass
class PGDState:
    """Everything a run carries between steps (``adversarial`` is updated in place)."""

    model: object
    clean: torch.Tensor
    adversarial: torch.Tensor
    generators: list[torch.Generator]
    latent_shape: tuple[int, int, int]
    prompt_embeds: torch.Tensor | None = None
    target: losses.PosteriorStats | None = None
    target_images: torch.Tensor | None = None
    target_is_zero: bool = False
    reference: ReferenceCosts | None = None  # reference mode's hook; None at fair cost
    step_index: int = 0
    trace: list[torch.Tensor] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return self.clean.shape[0]

    def set_target(self, target: str | torch.Tensor) -> None:
        """Encode the target once (posterior mean and std; a sample is drawn per step from them).

        ``target`` is a spec of ``protections/targets.py`` (``"zero"``: the zero latent,
        nothing to encode) or the ``(N, 3, H, W)`` images themselves.
        """
        if isinstance(target, str):
            picture = target_image(target, *self.clean.shape[-2:])
            target = None if picture is None else picture.unsqueeze(0).to(self.model.device)
        self.target_is_zero = target is None
        self.target_images = target
        if target is not None:
            with torch.no_grad():
                self.target = losses.posterior_stats(self.model, target)

    def loss_trace(self) -> torch.Tensor:
        """``(steps, N)`` losses, one row per step taken."""
        return torch.stack(self.trace) if self.trace else torch.empty(0, self.batch)


def latent_shape(model, height: int, width: int) -> tuple[int, int, int]:
    """``(C, h, w)`` of one image's latent: the VAE's width (4 for SD 1.x, 16 for SD 3) and downsampling."""
    config = model.vae.config
    factor = 2 ** (len(config.block_out_channels) - 1)
    return int(config.latent_channels), height // factor, width // factor


#: Calls a :meth:`PGDProtection.direction` may not make: the engine's hooks stand for them, and
#: reference mode (the reference implementation's extra costs, protections/reference_costs.py)
#: works only through the hooks. Name in the source -> the hook to call instead.
BYPASSES = {
    "autograd.grad": "self.input_gradient",
    "backward": "self.input_gradient",
    "losses.image_latent": "self.image_latent",
}


def _called_names(function) -> set[str]:
    """``a.b.c`` for each call in ``function``'s source (empty when the source cannot be read)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return set()  # no source (built at run time): nothing to read
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, target = [], node.func
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name):
                parts.append(target.id)
            names.add(".".join(reversed(parts)))
    return names


def check_direction_uses_the_hooks(cls: type) -> None:
    """Refuse, at class definition, a ``direction`` that bypasses the engine's hooks."""
    direction = cls.__dict__.get("direction")
    if direction is None:
        return
    for called in _called_names(direction):
        for bypass, hook in BYPASSES.items():
            if called == bypass or called.endswith("." + bypass):
                raise TypeError(
                    f"{cls.__name__}.direction calls {called}(): call {hook}(...) instead, so reference mode "
                    "can reproduce the reference implementation's costs (docs/CONTRIBUTING.md)"
                )


class PGDProtection(Protection):
    """Base of the L∞ PGD protections; a subclass declares ``needs`` and writes :meth:`direction`.

    A ``direction`` goes through :meth:`image_latent` and :meth:`input_gradient` (checked when the
    class is defined: :func:`check_direction_uses_the_hooks`).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_direction_uses_the_hooks(cls)

    Config: ClassVar[type] = PGDConfig
    # Named published settings, applied with ``with_profile`` / ``--profile``.
    PROFILES: ClassVar[dict[str, dict]] = {}

    # -- what a protection defines ----------------------------------------------------
    def direction(
        self, state: PGDState, adversarial: torch.Tensor, draws: StepDraws
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(direction, loss)``: the step is ``+alpha · sign(direction)``; ``loss`` is ``(N,)``."""
        raise NotImplementedError

    # -- helpers for directions -------------------------------------------------------
    def input_gradient(
        self,
        state: PGDState,
        adversarial: torch.Tensor,
        outputs: torch.Tensor,
        grad_outputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``∂outputs/∂x`` (a VJP with ``grad_outputs``), w.r.t. the image only."""
        if state.reference is not None:  # reference mode: maybe through backward()
            return state.reference.input_gradient(adversarial, outputs, grad_outputs)
        (gradient,) = torch.autograd.grad(outputs, adversarial, grad_outputs=grad_outputs)
        return gradient

    def image_latent(self, state: PGDState, adversarial: torch.Tensor, draws: StepDraws) -> torch.Tensor:
        """``z = s · E(x)``: the posterior sample of ``draws.latent_noise``, or the mean."""
        latents = losses.image_latent(state.model, adversarial, draws.latent_noise)
        if state.reference is not None:  # reference mode: maybe an unused L_S on z
            state.reference.image_latent(state, latents)
        return latents

    def target_latent(self, state: PGDState, draws: StepDraws, like: torch.Tensor) -> torch.Tensor:
        """``z_target``: zero, or the target's posterior sample of ``draws.target_noise`` (mean if None)."""
        if state.target_is_zero:
            return torch.zeros_like(like)
        model = state.model
        target = state.target.expand(state.batch)
        return target.latent(draws.target_noise, model.scaling_factor, model.shift_factor).to(like.dtype)

    # -- the engine ---------------------------------------------------------------------
    def step_size(self, state: PGDState) -> float:
        """This step's ``alpha`` in 8-bit units."""
        alpha = self.config.alpha
        if self.config.alpha_schedule == "linear":
            steps = max(1, self.config.steps)
            return alpha - (alpha - alpha / 100.0) * state.step_index / steps
        return alpha

    def prepare(self, images: torch.Tensor, model, *, generator: GeneratorArg | None) -> PGDState:
        """Check inputs, derive per-image generators, encode prompt and target once, random start."""
        check_images(images, self.name, multiple_of=8)  # the VAE downsamples by 8
        clean = images.detach().to(device=model.device, dtype=torch.float32)
        generators = image_generators(clean, generator)
        count, _, height, width = clean.shape
        state = PGDState(
            model=model,
            clean=clean,
            adversarial=clean.clone(),
            generators=generators,
            latent_shape=latent_shape(model, height, width),
        )
        if "prompt" in self.needs:
            state.prompt_embeds = model.encode_prompt(self.config.prompt, count)
        if "clean_target" in self.needs:
            state.set_target(clean)
        elif "target" in self.needs:
            state.set_target(self.config.target)
        if self.config.reference_mode:
            state.reference = ReferenceCosts.start(self, state)
        if self.config.random_start and self.config.eps > 0:
            eps = self.config.eps / 255.0
            start = draw_uniform(generators, clean.shape[1:], -eps, eps, clean.device)
            state.adversarial = (clean + start).clamp(0.0, 1.0)
        return state

    def draw(self, state: PGDState) -> StepDraws:
        """This step's randomness, per image from the image's generator, in a fixed order."""
        model, generators, device = state.model, state.generators, state.model.device
        draws = StepDraws()
        if self.config.latent == "sample":
            draws.latent_noise = draw_normal(generators, state.latent_shape, device, model.dtype)
        if "diffusion_noise" in self.needs:
            draws.timesteps = draw_timesteps(generators, model.num_train_timesteps, device)
            draws.noise = draw_normal(generators, state.latent_shape, device, model.dtype)
        # Only the method's own target draws noise: reference mode's extra target uses
        # the posterior mean, so it does not shift the images' random streams.
        if self.needs & {"target", "clean_target"} and not state.target_is_zero and self.config.latent == "sample":
            draws.target_noise = draw_normal(generators, state.latent_shape, device, model.dtype)
        return draws

    def step(self, state: PGDState) -> torch.Tensor:
        """One PGD step on ``state.adversarial``, in place; returns the ``(N,)`` losses."""
        draws = self.draw(state)
        adversarial = state.adversarial.detach().requires_grad_(True)
        # reference mode: the UNet made trainable, the target re-encoded and re-forwarded
        with state.reference.step(state) if state.reference is not None else contextlib.nullcontext():
            direction, loss = self.direction(state, adversarial, draws)
        alpha = self.step_size(state) / 255.0
        with torch.no_grad():
            moved = adversarial.detach() + alpha * direction.detach().float().sign()
            state.adversarial = project(moved, state.clean, self.config.eps / 255.0)
        state.step_index += 1
        loss = loss.detach().float().cpu()
        state.trace.append(loss)
        return loss

    def finalize(self, state: PGDState) -> torch.Tensor:
        """The protected images: 8-bit rounded, inside the budget, on the model's device."""
        return round_within_budget(state.adversarial.detach(), state.clean, self.config.eps)

    def run(
        self,
        images: torch.Tensor,
        model,
        *,
        generator: GeneratorArg | None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(protected, loss trace (steps, N))``; ``on_step(done, total)`` after each step (progress bars)."""
        state = self.prepare(images, model, generator=generator)
        for index in range(self.config.steps):
            loss = self.step(state)
            if on_step is not None:
                on_step(index + 1, self.config.steps)
            if log.isEnabledFor(logging.DEBUG) and (index % 10 == 0 or index == self.config.steps - 1):
                log.debug("%s step %d/%d loss %s", self.name, index + 1, self.config.steps, loss.tolist())
        return self.finalize(state), state.loss_trace()

    def __call__(self, images: torch.Tensor, model, *, generator: GeneratorArg | None) -> torch.Tensor:
        return self.run(images, model, generator=generator)[0]


def with_profile(cls: type[Protection], name: str, overrides: dict | None = None) -> Protection:
    """``cls`` configured with its published profile ``name`` (``cls.PROFILES``), then ``overrides``."""
    profiles = getattr(cls, "PROFILES", {}) or {}
    if name not in profiles:
        known = ", ".join(profiles) or "none"
        raise ValueError(f"{cls.registry_name or cls.__name__} has no profile {name!r} (profiles: {known})")
    from cloakbench.core.config import apply_overrides

    config = dataclasses.replace(cls.Config(), **profiles[name])
    if overrides:
        config = apply_overrides(config, overrides, owner=cls.registry_name or cls.__name__)
    return cls(config)
