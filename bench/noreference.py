"""No-reference and face-identity rows of one cell (docs/METRICS.md, "No-reference and face metrics").

:func:`noreference_rows` is the one call ``bench/execute.py`` makes for them: a protect cell
scores its published image (``pair = protected``), a set attack (``lora``, ``dreambooth``,
textual inversion) scores its generations (``pair = generations``: BRISQUE per generation,
FDFR for the set) and, for a subject whose dataset category marks it as a face, the identity
of the generations against the subject's clean photos (``generations_vs_concept``: ISM).
Metrics of the other kinds are not touched here (``metric_rows`` in ``bench/execute.py`` does them).

A metric that cannot run here gives a row marked unavailable with its reason; one that raises
gives a failed row; a value that is not finite (BRISQUE of a flat image) is unavailable with
the reason, never a number. Each row's note names what computed it (the face backend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from cloakbench.core.schema import Pair, Row
from cloakbench.metrics import MetricUnavailable, is_face_category
from cloakbench.metrics.base import NO_REFERENCE_SCOPES


def _row(base: dict, pair: Pair, metric, **extra: Any) -> Row:
    return {
        **base,
        "pair": pair.value,
        "metric": metric.name,
        "unit": metric.unit,
        "higher_is_better": int(metric.higher_is_better),
        **extra,
    }


def _note(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _values(metric, compute, base: dict, pair: Pair, availability: dict, settings: list[str]) -> list[Row]:
    """Rows of ``compute()`` (one value per entry of ``settings``), or one row saying why there is none."""
    available, reason = availability.get(metric.name, (True, ""))
    if not available:
        return [_row(base, pair, metric, value=None, status="unavailable", note=reason)]
    try:
        values = compute().reshape(-1).tolist()
        note = metric.row_note()
    except MetricUnavailable as error:
        return [_row(base, pair, metric, value=None, status="unavailable", note=str(error))]
    except Exception as error:
        return [_row(base, pair, metric, value=None, status="failed", note=f"error: {type(error).__name__}: {error}")]
    rows = []
    for setting, value in zip(settings, values, strict=True):
        extra = {"setting": setting} if setting is not None else {}
        if math.isfinite(value):
            rows.append(
                _row(
                    base, pair, metric, value=float(value), status="ok", note=_note(base.get("note", ""), note), **extra
                )
            )
        else:
            why = (
                f"{metric.name} is undefined for this image (value {value}: e.g. a flat image has no texture to score)"
            )
            rows.append(_row(base, pair, metric, value=None, status="unavailable", note=why, **extra))
    return rows


def noreference_rows(
    metrics: list,
    availability: dict[str, tuple[bool, str]],
    base: dict,
    images: torch.Tensor,
    *,
    subject: torch.Tensor | None = None,
    categories: Sequence[str] = (),
    generations: bool = False,
) -> list[Row]:
    """No-reference (and, for face subjects, identity) rows for ``images``.

    ``generations=False``: ``images`` are a protect cell's published image(s); rows ``pair =
    protected``, per-image metrics only. ``generations=True``: a set attack's generations;
    per-image metrics give one row per generation (``setting = generation i``), per-set metrics
    one row, and identity metrics compare with ``subject`` (the clean photos). Metrics with
    ``subjects = "face"`` run only when every one of ``categories`` (the subject's images'
    dataset categories) marks a face.
    """
    images = images.detach().cpu().float()
    face = bool(categories) and all(is_face_category(category) for category in categories)
    rows: list[Row] = []
    for metric in metrics:
        if metric.scope not in (*NO_REFERENCE_SCOPES, "subject"):
            continue
        if metric.subjects == "face" and not face:
            continue
        if not generations and metric.scope != "image":
            continue
        if metric.scope == "image":
            pair = Pair.GENERATIONS if generations else Pair.PROTECTED
            settings = [f"generation {i}" for i in range(images.shape[0])] if generations else [None] * images.shape[0]
            rows += _values(metric, lambda m=metric: m.score(images), base, pair, availability, settings)
        elif metric.scope == "generations":
            rows += _values(metric, lambda m=metric: m.score(images), base, Pair.GENERATIONS, availability, [None])
        elif subject is not None:
            reference = subject.detach().cpu().float()
            rows += _values(
                metric,
                lambda m=metric, r=reference: m(images, r),
                base,
                Pair.GENERATIONS_VS_CONCEPT,
                availability,
                [None],
            )
    return rows
