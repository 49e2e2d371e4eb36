"""One image per model call: how a batched protection gives the bytes of one image at a time.

``bench compare --batch-size N`` protects the cells of one protection as one batch. Each image
already draws its randomness from its own generator (protections/engine.py,
``image_generators``), so the draws are those of the image alone; what remains is the
kernels. The CPU and GPU convolutions and GEMMs pick their algorithm, and so their rounding, by
the batch's shape (measured on toy, one encode and denoise: 32 of 70 Conv2d and 13 of 87 Linear calls give
a batch of four other values than four batches of one, in ~85 % of their outputs, by ~1e-6 relative), and PGD's ``sign()`` turns a
last-bit difference into a pixel step that the next steps carry on (docs/PERFORMANCE.md,
"Batching").

So inside :func:`one_image_per_call` the model bundle runs its networks (the VAE encoder and
decoder, the denoiser: ``core.ldm.LDM.posterior``, ``decode``, ``predict``) on one image at a
time, each image's slice in the layout it has alone, and concatenates the outputs. Everything
around those calls (the noise path, losses, the update, projection, rounding) is elementwise
or a per-image reduction and stays batched. Each image's network calls are then the calls it
makes alone, kernel for kernel, which is what makes a batch identical by construction; the price
is that the networks gain nothing from the batch (docs/PERFORMANCE.md gives the figures).

Outside the context a batch goes through each network in one call (bench perf's throughput
rows, bench protect's tiles): faster where kernels fill up with a batch, equal only to rounding.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import torch

_ONE_IMAGE_PER_CALL = contextvars.ContextVar("one_image_per_call", default=False)


@contextlib.contextmanager
def one_image_per_call() -> Iterator[None]:
    """Within the block, the model bundle's network calls take one image at a time (see the module)."""
    token = _ONE_IMAGE_PER_CALL.set(True)
    try:
        yield
    finally:
        _ONE_IMAGE_PER_CALL.reset(token)


def splits(batch: int) -> bool:
    """Whether a call on ``batch`` images runs image by image here: inside :func:`one_image_per_call`, from 2."""
    return batch > 1 and _ONE_IMAGE_PER_CALL.get()


def row_of(value: Any, index: int, batch: int) -> Any:
    """Row ``index`` of ``value`` as a batch of one (``value[index : index + 1]``), when ``value`` has
    ``batch`` rows (a tensor, or anything sliced like one: ``core.ldm.TextConditioning``); anything
    else (a shared prompt of one row, a number, None) as it is, as the image would receive it alone.

    The slice keeps the batch's strides, so a row of a channels-last batch is a channels-last
    image with batch stride C·H·W: what one image alone is when it enters a protection in the
    canonical layout (core.images.protection_batch) and what every operation on one image
    allocates. The kernels choose their memory layout, and so their rounding, by these strides.
    """
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) < 1 or shape[0] != batch:
        return value
    return value[index : index + 1]


def per_image(call: Callable[..., torch.Tensor], batch: int, *args: Any) -> torch.Tensor:
    """``call(*args)``; image by image inside :func:`one_image_per_call` (each argument with ``batch``
    rows sliced to the image's row), the outputs concatenated along the batch."""
    if not splits(batch):
        return call(*args)
    return torch.cat([call(*(row_of(a, i, batch) for a in args)) for i in range(batch)])
