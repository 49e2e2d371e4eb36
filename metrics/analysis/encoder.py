"""How much the VAE encoder amplifies a protection's pixel perturbation.

Xue et al., "Toward effective protection against diffusion based mimicry through score
distillation" (ICLR 2024, arXiv:2311.12832) find that the latent diffusion model is weak at
its VAE encoder, not its denoiser: a small pixel change moves the latent far. For a clean
image ``x`` and its protected version ``x_adv`` this measures

- ``δx = x_adv − x``: L∞ and L2 (in /255 units) and ‖δx‖₂ / ‖x‖₂;
- ``δz = E_mean(x_adv) − E_mean(x)`` with the encoder's *posterior means* (so sampling noise
  does not count): L∞, L2 (scaled-latent units) and ‖δz‖₂ / ‖E_mean(x)‖₂;
- the amplification ``(‖δz‖/‖z‖) / (‖δx‖/‖x‖)``.

The baseline is the ``noise`` protection at the same budget, run as a method by the runner;
the report draws it as the reference line. Encoder-driven protections should amplify far
more than noise if the paper's claim holds for the model under test.
"""

from __future__ import annotations

from typing import Any

import torch

# metric -> (unit, what it measures). Order is the order of the rows.
ANALYSIS_METRICS: dict[str, tuple[str, str]] = {
    "delta_x_linf": ("/255", "max |x_adv − x|"),
    "delta_x_l2": ("/255", "‖x_adv − x‖₂"),
    "delta_x_l2_rel": ("ratio", "‖δx‖₂ / ‖x‖₂"),
    "delta_z_linf": ("latent", "max |E(x_adv) − E(x)| (posterior means, scaled latent)"),
    "delta_z_l2": ("latent", "‖E(x_adv) − E(x)‖₂"),
    "delta_z_l2_rel": ("ratio", "‖δz‖₂ / ‖E(x)‖₂"),
    "amplification": ("ratio", "(‖δz‖/‖z‖) / (‖δx‖/‖x‖)"),
}


def _row(metric: str, value: float | None, note: str = "") -> dict[str, Any]:
    return {
        "metric": metric,
        "value": value,
        "unit": ANALYSIS_METRICS[metric][0],
        "higher_is_better": None,
        "note": note,
    }


def encoder_analysis_batch(model, clean: torch.Tensor, protected: torch.Tensor) -> list[list[dict[str, Any]]]:
    """Rows for each image of a batch: ``clean`` and ``protected`` are ``(N, 3, H, W)`` in [0, 1].

    Returns one list of ``{metric, value, unit, higher_is_better, note}`` per image, in the
    order of :data:`ANALYSIS_METRICS`. Norms are per image over all channels and pixels,
    computed in float64. Where ``δx = 0`` the amplification is undefined: its value is
    ``None`` with a note, never a number.
    """
    if clean.shape != protected.shape or clean.ndim != 4 or clean.shape[1] != 3:
        raise ValueError(
            f"encoder_analysis: clean {tuple(clean.shape)} and protected "
            f"{tuple(protected.shape)} must both be (N, 3, H, W)"
        )
    with torch.no_grad():
        latent_clean = model.encode(clean, mode="mean").double().flatten(1)
        latent_protected = model.encode(protected, mode="mean").double().flatten(1)
    pixels_clean = clean.double().flatten(1)
    delta_x = protected.double().flatten(1) - pixels_clean
    delta_z = latent_protected - latent_clean

    dx_linf = delta_x.abs().amax(dim=1)
    dx_l2 = torch.linalg.vector_norm(delta_x, dim=1)
    dx_rel = dx_l2 / torch.linalg.vector_norm(pixels_clean, dim=1)
    dz_linf = delta_z.abs().amax(dim=1)
    dz_l2 = torch.linalg.vector_norm(delta_z, dim=1)
    dz_rel = dz_l2 / torch.linalg.vector_norm(latent_clean, dim=1)

    results = []
    for i in range(len(clean)):
        rows = [
            _row("delta_x_linf", float(dx_linf[i] * 255)),
            _row("delta_x_l2", float(dx_l2[i] * 255)),
            _row("delta_x_l2_rel", float(dx_rel[i])),
            _row("delta_z_linf", float(dz_linf[i])),
            _row("delta_z_l2", float(dz_l2[i])),
            _row("delta_z_l2_rel", float(dz_rel[i])),
        ]
        if dx_l2[i] == 0:
            rows.append(_row("amplification", None, "δx = 0: the image is unchanged, amplification undefined"))
        else:
            rows.append(_row("amplification", float(dz_rel[i] / dx_rel[i])))
        results.append(rows)
    return results


def encoder_analysis(model, clean: torch.Tensor, protected: torch.Tensor) -> list[dict[str, Any]]:
    """Rows for one image: ``clean`` and ``protected`` are ``(3, H, W)`` or ``(1, 3, H, W)`` in [0, 1].

    Each row is ``{metric, value, unit, higher_is_better (None), note}``; the runner writes
    them with ``pair="analysis"``. See :func:`encoder_analysis_batch` for batches.
    """
    if clean.ndim == 3:
        clean, protected = clean.unsqueeze(0), protected.unsqueeze(0)
    if clean.shape[0] != 1:
        raise ValueError(
            f"encoder_analysis takes one image; got a batch of {clean.shape[0]} (use encoder_analysis_batch)"
        )
    return encoder_analysis_batch(model, clean, protected)[0]
