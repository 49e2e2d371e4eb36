"""The ``bench protect`` sidecar: a ``summary`` a person reads, the full record, and the resume check.

Beside each published file ``OUT/<method>/<file>.<ext>`` lies ``OUT/<method>/<file>.json``.
Its first block, ``summary``, is written for the artist: the method in plain words, the
model and whether it is a real one (:mod:`cloakbench.bench.target`), the budget and what
was measured on the saved file (L∞, PSNR and SSIM against the input, through the same
metric registry ``bench compare`` uses), the time, the metadata carried, and what was
*not* evaluated. The rest is the record a reproduction needs (config, versions, intake,
how the picture was cut into tiles as a grid of row and column starts).

A re-run skips a picture whose output and sidecar are complete and valid
(:func:`is_complete`): the sidecar parses, says ``complete``, carries the same
``settings_key`` (everything that changes the output), and the output file's SHA-256 is
the one recorded. Anything else is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

SCHEMA = 2


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no such numbers), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def settings_key(**settings: Any) -> str:
    """SHA-256 of everything that changes the published bytes (never the tile batch size: same result)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(sidecar: Path, output: Path, key: str) -> bool:
    """The output and its sidecar are complete and valid for these settings (see the module docstring)."""
    if not (sidecar.is_file() and output.is_file()):
        return False
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("complete") is not True or record.get("settings_key") != key:
        return False
    try:
        return record.get("output_sha256") == file_sha256(output)
    except OSError:
        return False


def fidelity(saved, clean) -> dict[str, float | None]:
    """PSNR (dB) and SSIM of the saved file against the input, by the registry's metrics (as ``bench compare``)."""
    from cloakbench.bench.full_metrics import full_size
    from cloakbench.metrics import METRICS

    found: dict[str, float | None] = {}
    for name in ("psnr", "ssim"):
        metric = METRICS.get(name)()
        found[name] = float(full_size(metric, saved.unsqueeze(0).float(), clean.unsqueeze(0).float()).reshape(-1)[0])
    return found


def not_evaluated(model: str, source: str, output: str, quick: bool, steps: int | None) -> list[str]:
    """What this run did not measure, each a sentence."""
    items = [
        f"how strongly the file resists mimicry: run `bench check {output} {source} --model {model}` "
        "(SDEdit and inpainting, also after JPEG re-encoding and downscaling)",
        f"any model other than '{model}'",
        "fine-tuning on your pictures (textual inversion, LoRA, DreamBooth) and purifications "
        "(DiffPure, IMPRESS, noisy upscaling); `bench compare` runs them on crops",
    ]
    if quick:
        items.insert(0, f"--quick ran only {steps} step(s): this file is NOT a real protection")
    return items


def summary(
    *,
    method: str,
    plain: str,
    target,
    eps_255: float | None,
    measured: dict[str, float],
    quality: dict[str, float | None],
    wall_s: float,
    fmt: str,
    carried: list[str],
    stripped: bool,
    not_measured: list[str],
    plan_description: str,
) -> dict[str, Any]:
    """The block a person reads first (see the module docstring)."""
    psnr, ssim = quality.get("psnr"), quality.get("ssim")
    budget = "none (analysis only)" if eps_255 is None else f"at most {eps_255:g}/255 per pixel value"
    if psnr is None or not math.isfinite(psnr):
        visible = "identical to the input (no change)"
    else:
        visible = f"PSNR {psnr:.1f} dB, SSIM {ssim:.4f} against your picture (higher PSNR, SSIM nearer 1: less visible)"
    if stripped:
        metadata = "removed (--strip-metadata)"
    else:
        metadata = ("kept: " + ", ".join(carried)) if carried else "none in the source"
    return {
        "method": f"{method}: {plain}",
        "model": target.name,
        "model_is_real": target.real,
        "model_note": target.sentence,
        "budget": budget,
        "measured_change": f"L∞ {measured['linf_255']:.0f}/255, L2 {measured['l2_255']:.1f}/255 on the saved file",
        "visibility": visible,
        "psnr_db": psnr,
        "ssim": ssim,
        "protected_as": plan_description,
        "format": fmt,
        "metadata": metadata,
        "time_s": round(wall_s, 2),
        "not_evaluated": not_measured,
    }


def write(path: Path, record: dict[str, Any]) -> None:
    """Strict JSON (a non-finite number is written as null), atomically."""
    from cloakbench.core import io

    text = json.dumps(finite_or_none(record), indent=1, allow_nan=False, ensure_ascii=False)
    io.write_atomic(path, (text + "\n").encode())
