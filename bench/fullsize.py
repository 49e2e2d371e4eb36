"""Protect a picture at its own size: whole when it fits, else in overlapping tiles.

``bench protect`` returns the artist's picture at its own size and aspect ratio
(docs/RELIABILITY.md, "Full-size protection"). Protections run on ``(N, 3, H, W)`` images
whose sides are multiples of the VAE's downsampling factor (8 for every SD-shaped model), so:

- **full**: when the padded picture has at most ``max_pixels`` pixels, its sides are
  rounded up to the multiple by reflect padding on the right and bottom, the protection
  runs on the whole padded picture, and the padding is cut off again. Memory grows with
  the pixel count (activations of the VAE encoder and the UNet scale with ``H·W``), which
  is why ``max_pixels`` caps it.
- **tiles**: otherwise the padded picture is cut into overlapping tiles of the model's
  working size (``model.resolution``; overlap a quarter of a tile, rounded to the
  multiple), each tile is protected as an image of its own, and the tiles are blended
  with weights that ramp linearly across each overlap. Every protected tile lies in the
  ``eps/255`` L∞ ball around its clean tile, and the blend is a convex combination of
  them, so it lies in the ball around the full clean picture; it is nevertheless
  projected onto that ball again (and into [0, 1]) and rounded to 8-bit values inside it
  (:func:`cloakbench.protections.engine.round_within_budget`), so the published PNG keeps
  ``|δ|∞ ≤ eps/255`` on every pixel whatever the blend did in floating point.

A protection that can only run at the model's working size (``working_size_only = True``
on its class) is always tiled. Each tile's randomness comes from the run's seed mixed with the tile's own pixels (the
engine's per-image generators), so tiles do not repeat one pattern. Tiles run in batches of
``tile_batch``, each tile in its own network calls (core/per_image.py), so a picture's pixels do
not depend on ``--batch-size``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from cloakbench.core.images import protection_batch
from cloakbench.core.per_image import one_image_per_call
from cloakbench.protections.engine import project, round_within_budget

log = logging.getLogger(__name__)

#: Default memory cap: a picture whose padded size exceeds this many pixels is tiled.
DEFAULT_MAX_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class SizePlan:
    """How one picture of ``height x width`` is protected (recorded in the sidecar)."""

    mode: Literal["full", "tiles"]
    height: int
    width: int
    padded_height: int
    padded_width: int
    max_pixels: int
    tile_height: int | None = None
    tile_width: int | None = None
    overlap: int | None = None
    origins: tuple[tuple[int, int], ...] = ()

    @property
    def row_starts(self) -> list[int]:
        return sorted({top for top, _ in self.origins})

    @property
    def column_starts(self) -> list[int]:
        return sorted({left for _, left in self.origins})

    def describe(self) -> str:
        """One sentence: ``whole (2400x1600)`` or ``425 tiles of 128x128 in 17 rows x 25 columns, ...``."""
        if self.mode == "full":
            return f"whole ({self.width}x{self.height}, padded to {self.padded_width}x{self.padded_height})"
        return (
            f"{len(self.origins)} tiles of {self.tile_width}x{self.tile_height} in {len(self.row_starts)} rows x "
            f"{len(self.column_starts)} columns, overlapping by {self.overlap} px, blended linearly"
        )

    def record(self) -> dict[str, Any]:
        """JSON-ready; the tile grid as its row and column starts (every origin is a (row, column) pair)."""
        record = dataclasses.asdict(self)
        del record["origins"]
        record["tiles"] = len(self.origins)
        record["grid"] = (
            {"rows": self.row_starts, "columns": self.column_starts, "origins": "every (row, column) pair"}
            if self.mode == "tiles"
            else None
        )
        record["description"] = self.describe()
        return record


def pixel_multiple(model) -> int:
    """The multiple image sides must have: the VAE's downsampling factor, and at least 8.

    ``model`` is a loaded bundle or its :class:`~cloakbench.core.zoo.ModelFacts` (which carry the
    factor), so a picture can be planned before the model has loaded.
    """
    factor = getattr(model, "vae_downsampling", None)  # the facts carry it
    if factor is None:
        factor = model.vae_scale_factor if getattr(model, "vae", None) is not None else 1  # pixel models have none
    return math.lcm(8, factor)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _origins(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering ``[0, length)``: every ``stride``, the last one flush with the end."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def plan_size(
    height: int, width: int, *, multiple: int, tile_size: int, max_pixels: int, working_size_only: bool = False
) -> SizePlan:
    """Full when the padded picture has at most ``max_pixels`` pixels, else tiles of ``tile_size``.

    ``working_size_only``: the protection runs on ``tile_size`` squares only (it trains a
    surrogate on them, say), so the picture is always tiled, padded up to a tile if smaller.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    padded_height, padded_width = _round_up(height, multiple), _round_up(width, multiple)
    if working_size_only:
        padded_height, padded_width = max(padded_height, tile_size), max(padded_width, tile_size)
    elif padded_height * padded_width <= max_pixels:
        return SizePlan("full", height, width, padded_height, padded_width, max_pixels)
    tile_height, tile_width = min(tile_size, padded_height), min(tile_size, padded_width)
    # A quarter of a tile overlaps its neighbour: enough for the linear blend to hide the seams.
    overlap = max(multiple, (tile_size // 4) // multiple * multiple)
    rows = _origins(padded_height, tile_height, tile_height - overlap)
    cols = _origins(padded_width, tile_width, tile_width - overlap)
    return SizePlan(
        "tiles",
        height,
        width,
        padded_height,
        padded_width,
        max_pixels,
        tile_height,
        tile_width,
        overlap,
        tuple((top, left) for top in rows for left in cols),
    )


def _pad(image: torch.Tensor, padded_height: int, padded_width: int) -> torch.Tensor:
    """Pad ``(3, H, W)`` on the bottom and right: reflect (the usual pad, < 8 px), or replicate
    where the pad is not smaller than the side (a small picture padded up to one tile)."""
    pad_bottom, pad_right = padded_height - image.shape[-2], padded_width - image.shape[-1]
    if not pad_bottom and not pad_right:
        return image
    mode = "reflect" if pad_bottom < image.shape[-2] and pad_right < image.shape[-1] else "replicate"
    return F.pad(image.unsqueeze(0), (0, pad_right, 0, pad_bottom), mode=mode).squeeze(0)


def _ramp(length: int, overlap: int) -> torch.Tensor:
    """Blend weights along one side: rising over the first ``overlap`` pixels, falling over the last; > 0."""
    position = torch.arange(length, dtype=torch.float32)
    rising = (position + 1) / (overlap + 1)
    falling = (length - position) / (overlap + 1)
    return torch.minimum(torch.minimum(rising, falling), torch.ones(length))


#: ``on_progress(event, info)``: ``"step"`` after each PGD step of a batch (``batch``, ``step``,
#: ``steps``), ``"batch"`` after each batch of tiles (``tiles_done``, ``tiles``).
ProgressHook = Callable[[str, dict], None]


def steps_of(protection) -> int | None:
    """PGD steps per batch when the protection reports each step (the engine's ``on_step``), else ``None``."""
    run = getattr(protection, "run", None)
    if run is None or "on_step" not in inspect.signature(run).parameters:
        return None
    return int(getattr(protection.config, "steps", 0)) or None


def progress_units(plan: SizePlan, steps: int | None, tile_batch: int) -> int:
    """Units of progress of one picture: PGD steps x batches (one unit per batch without steps)."""
    batches = 1 if plan.mode == "full" else -(-len(plan.origins) // tile_batch)
    return batches * (steps or 1)


def _run(
    protection, images: torch.Tensor, model, seed: int, on_step: Callable[[int, int], None] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(protected, loss trace or None)`` for a batch ``(N, 3, H, W)`` on the model's device."""
    # A fresh generator per call: with the engine's per-image generators each image's
    # randomness derives from the seed and its own pixels, not from the batch it ran in.
    generator = torch.Generator(device=model.device).manual_seed(seed)
    if hasattr(protection, "run"):
        if on_step is not None and steps_of(protection) is not None:
            return protection.run(images, model, generator=generator, on_step=on_step)
        protected, trace = protection.run(images, model, generator=generator)
        return protected, trace
    return protection(images, model, generator=generator), None


def budget_of(protection) -> float | None:
    """The protection's L∞ budget in 8-bit units, or ``None`` when it has none (analysis-only)."""
    if getattr(protection, "analysis_only", False):
        return None
    eps = getattr(getattr(protection, "config", None), "eps", None)
    return None if eps is None else float(eps)


def enforce_budget(protected: torch.Tensor, clean: torch.Tensor, eps_255: float | None) -> torch.Tensor:
    """Project onto the ``eps/255`` ball around ``clean`` and round to 8-bit values inside it."""
    if eps_255 is None:
        return torch.round(protected.clamp(0.0, 1.0) * 255.0) / 255.0
    return round_within_budget(project(protected, clean, eps_255 / 255.0), clean, eps_255)


@dataclass
class FullSizeResult:
    """The protected picture, how it was protected, and its loss at the first and last step
    (for tiles, the mean over the tiles; ``None`` for a protection without a loss trace)."""

    protected: torch.Tensor  # (3, H, W) in [0, 1], 8-bit values
    plan: SizePlan
    loss_first: float | None
    loss_last: float | None


def plan_for(protection, height: int, width: int, model, max_pixels: int = DEFAULT_MAX_PIXELS) -> SizePlan:
    """How :func:`protect_full_size` will protect a ``height x width`` picture with this model."""
    return plan_size(
        height,
        width,
        multiple=pixel_multiple(model),
        tile_size=int(model.resolution),
        max_pixels=max_pixels,
        working_size_only=getattr(protection, "working_size_only", False),
    )


def protect_full_size(
    protection,
    image: torch.Tensor,
    model,
    *,
    seed: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile_batch: int = 4,
    on_progress: ProgressHook | None = None,
) -> FullSizeResult:
    """Protect one ``(3, H, W)`` picture in [0, 1] at its own size (see the module docstring).

    ``on_progress`` hears each PGD step and each batch of tiles (:data:`ProgressHook`).
    """
    height, width = image.shape[-2:]
    plan = plan_for(protection, height, width, model, max_pixels)
    tell = on_progress or (lambda event, info: None)

    def stepper(batch: int):
        return lambda step, steps: tell("step", {"batch": batch, "step": step, "steps": steps})

    clean = image.to(device=model.device, dtype=torch.float32)
    padded = _pad(clean, plan.padded_height, plan.padded_width)
    eps_255 = budget_of(protection)
    if plan.mode == "full":
        protected, trace = _run(protection, protection_batch([padded]), model, seed, stepper(0))
        tell("batch", {"tiles_done": 1, "tiles": 1})
        result = protected[0, :, :height, :width].float()
        first = last = None
        if trace is not None and len(trace):
            first, last = float(trace[0, 0]), float(trace[-1, 0])
    else:
        weights = torch.outer(_ramp(plan.tile_height, plan.overlap), _ramp(plan.tile_width, plan.overlap))
        weights = weights.to(clean.device)
        total = torch.zeros_like(padded)
        norm = torch.zeros(padded.shape[-2:], device=clean.device)
        firsts, lasts = [], []
        for start in range(0, len(plan.origins), tile_batch):
            origins = plan.origins[start : start + tile_batch]
            tiles = protection_batch(
                [padded[:, top : top + plan.tile_height, left : left + plan.tile_width] for top, left in origins]
            )
            # One tile per network call (core/per_image.py): the picture is the same whatever --batch-size.
            with one_image_per_call():
                protected, trace = _run(protection, tiles, model, seed, stepper(start // tile_batch))
            if trace is not None and len(trace):
                firsts += trace[0].tolist()
                lasts += trace[-1].tolist()
            for (top, left), tile in zip(origins, protected.float()):
                total[:, top : top + plan.tile_height, left : left + plan.tile_width] += tile * weights
                norm[top : top + plan.tile_height, left : left + plan.tile_width] += weights
            log.debug("protected tiles %d-%d of %d", start + 1, start + len(origins), len(plan.origins))
            tell("batch", {"tiles_done": start + len(origins), "tiles": len(plan.origins)})
        result = (total / norm)[:, :height, :width]
        first = sum(firsts) / len(firsts) if firsts else None
        last = sum(lasts) / len(lasts) if lasts else None
    return FullSizeResult(enforce_budget(result, clean, eps_255).cpu(), plan, first, last)


def measure_first_step(protection, image, model, *, seed: int, max_pixels: int, tile_batch: int) -> dict:
    """Run one PGD step on the first batch of ``image`` (tiles or the whole picture); time and memory.

    What ``--dry-run`` reports: the measured step, its batch's pixels, and the process's
    peak memory during it (CUDA's peak on a GPU), before any picture is protected.
    """
    from cloakbench.bench.profiling import profile_phase

    plan = plan_for(protection, *image.shape[-2:], model, max_pixels)
    clean = image.to(device=model.device, dtype=torch.float32)
    padded = _pad(clean, plan.padded_height, plan.padded_width)
    if plan.mode == "full":
        batch = protection_batch([padded])
    else:
        origins = plan.origins[:tile_batch]
        batch = protection_batch(
            [padded[:, top : top + plan.tile_height, left : left + plan.tile_width] for top, left in origins]
        )
    single = protection
    if steps_of(protection) is not None:
        single = type(protection)(dataclasses.replace(protection.config, steps=1))
    with profile_phase("probe", model.device) as record, one_image_per_call():  # as protect_full_size runs it
        _run(single, batch, model, seed)
    return {
        "seconds": record.wall_s,
        "pixels": int(batch.shape[0] * batch.shape[-1] * batch.shape[-2]),
        "shape": tuple(int(v) for v in batch.shape),
        "peak_rss_bytes": record.peak_rss_bytes,
        "peak_cuda_bytes": record.peak_cuda_reserved_bytes,
    }
