"""Registry metrics on full-size pictures, with bounded memory.

The registry's SSIM (``metrics/fidelity.py``) builds its whole SSIM map in float64 through
torchmetrics: on a 2400x1600 picture that peaked at about 11 GB of RSS on this machine.
SSIM's map is local (each value depends on an 11x11 window) and the metric is the mean of
the map where the window fits, so it is computed here on horizontal strips that overlap
by the window's border: each strip's interior rows are disjoint, and the mean of the strip
means weighted by their interior rows is the full picture's value (exact up to float
rounding; ``tests/test_protect_artist.py`` checks it against the whole-picture call). The
metric itself is the registry's, never reimplemented. Other metrics are called on the whole
pair; ``ms-ssim`` (multi-scale, not local) is not computed above ``MS_SSIM_MAX_PIXELS``
and is reported as not run, with that reason.
"""

from __future__ import annotations

import torch

from cloakbench.metrics.fidelity import SSIM_WINDOW

#: Rows of a strip (before the overlap); memory grows with strip rows x width.
STRIP_ROWS = 256
MS_SSIM_MAX_PIXELS = 1024 * 1024


class TooLarge(ValueError):
    """A metric not computed at this size (the message says why)."""


def full_size(metric, outputs: torch.Tensor, references: torch.Tensor, strip_rows: int = STRIP_ROWS) -> torch.Tensor:
    """``metric(outputs, references)`` for ``(N, 3, H, W)`` pairs, SSIM in strips (see the module docstring)."""
    height, width = outputs.shape[-2:]
    if metric.name == "ms-ssim" and height * width > MS_SSIM_MAX_PIXELS:
        raise TooLarge(
            f"ms-ssim is not computed on {width}x{height} (its multi-scale map does not split into strips and "
            f"needs too much memory above {MS_SSIM_MAX_PIXELS:,} pixels)"
        )
    if metric.name != "ssim" or height <= strip_rows + SSIM_WINDOW:
        return metric(outputs, references)
    border = (SSIM_WINDOW - 1) // 2
    total = torch.zeros(outputs.shape[0], dtype=torch.float64)
    rows = 0
    start, last = border, height - border  # the rows the whole-picture call averages over: [border, last)
    while start < last:
        stop = min(start + strip_rows, last)
        top, bottom = start - border, stop + border
        value = metric(outputs[..., top:bottom, :], references[..., top:bottom, :]).double()
        total += value * (stop - start)
        rows += stop - start
        start = stop
    return (total / rows).float()
