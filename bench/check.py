"""``bench check``: evaluate the very file an artist publishes, as platforms and copiers receive it.

``bench compare`` evaluates 128² crops in a grid; the artist's question is about *their*
full-size file after a platform re-encodes or downscales it. For a protected file ``P`` and
the original ``O`` it came from, and for each platform transform ``T`` (the file as
published; JPEG at quality 95/85/75 with Pillow's 4:2:0 default, as most sites re-encode;
downscaling to 2048 and 1080 px on the long side, Lanczos; lossy WebP at quality 80), it
measures, with the metric registry ``bench compare`` uses (never reimplemented here):

1. **budget and imperceptibility** at full size: every pair metric of ``T(P)`` against
   ``T(O)`` (L∞ and L2 in 8-bit levels, PSNR, SSIM, and LPIPS/CLIP where their weights are present);
2. **strength against mimicry** on the model: SDEdit and inpainting from the mimicry
   registry (their defaults, ``--quick``: their quick settings) run on what the model gets
   from ``T(P)`` and from ``T(O)`` with the same seed, and the attack outputs are compared
   with each other (compare's ``attack_vs_clean_attack`` pair: 1 = the protection changed
   nothing; lower SSIM = the attack's result moved further from what it makes of the
   clean picture). The model gets two views of the file: ``crop``, a centre crop of the
   model's working size at the file's resolution (what the tiles were optimised on), and
   ``resized``, the whole picture resized and centre-cropped to the working square (what
   ``bench compare``'s intake does, and a copier's pipeline);
3. a **baseline**: uniform noise at the measured L∞ of the published file (the ``noise``
   protection), through the same attacks: a protection that does no better than it does
   not protect.

The result is one table on the console, ``check.json`` and an HTML page (``check.html``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

JPEG_QUALITIES = (95, 85, 75)
LONG_SIDES = (2048, 1080)
WEBP_QUALITY = 80
ATTACKS = ("sdedit", "inpaint")
VIEWS = ("crop", "resized")
BASELINE = "noise, same L∞"


@dataclass(frozen=True)
class Transform:
    """A platform transform of a ``(H, W, 3)`` uint8 picture; ``None`` from :attr:`apply` = not needed."""

    label: str
    apply: Callable[[np.ndarray], np.ndarray | None]


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def apply(pixels: np.ndarray) -> np.ndarray:
        from cloakbench.mimicry import MIMICRY

        jpeg = MIMICRY.get("jpeg").from_overrides({"quality": quality})
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255.0
        out = jpeg(tensor)[0]
        return torch.round(out * 255).to(torch.uint8).permute(1, 2, 0).numpy()

    return apply


def _downscale(long_side: int) -> Callable[[np.ndarray], np.ndarray | None]:
    def apply(pixels: np.ndarray) -> np.ndarray | None:
        height, width = pixels.shape[:2]
        if max(height, width) <= long_side:
            return None  # already small enough: a platform leaves it as it is
        scale = long_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))

    return apply


def _webp(pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", quality=WEBP_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def platform_transforms() -> list[Transform]:
    """The file as published, then what platforms do to it (see the module docstring)."""
    return (
        [Transform("as published", lambda pixels: pixels)]
        + [Transform(f"JPEG q{q}", _jpeg(q)) for q in JPEG_QUALITIES]
        + [Transform(f"downscale {side} px", _downscale(side)) for side in LONG_SIDES]
        + [Transform(f"WebP q{WEBP_QUALITY}", _webp)]
    )


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0


def view(pixels: np.ndarray, kind: str, size: int) -> torch.Tensor:
    """What the model gets: a ``size`` centre crop at full resolution, or the picture resized to ``size``."""
    from cloakbench.core.images import to_working_size

    if kind == "resized":
        return to_tensor(np.asarray(to_working_size(Image.fromarray(pixels), size, [], "bench check")))
    height, width = pixels.shape[:2]
    if min(height, width) < size:  # smaller than the working size: resize it up, as compare does
        return view(pixels, "resized", size)
    top, left = (height - size) // 2, (width - size) // 2
    return to_tensor(pixels[top : top + size, left : left + size])


@dataclass
class CheckResult:
    """Everything ``bench check`` measured, JSON-ready (``rows``) plus the pictures for the page."""

    protected: str
    original: str
    size: tuple[int, int]
    model: dict
    target: object
    rows: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    attacks: dict[str, list[str]] = field(default_factory=dict)  # attack -> settings


def pair_rows(metrics, outputs: torch.Tensor, references: torch.Tensor, **base) -> list[dict]:
    """Every available pair metric of ``outputs`` against ``references``, one row each (``bench compare``'s rows).

    Full-size pairs go through :func:`cloakbench.bench.full_metrics.full_size` (SSIM in strips: bounded memory).
    """
    from cloakbench.bench.full_metrics import full_size
    from cloakbench.metrics import MetricUnavailable

    rows = []
    for metric in metrics:
        row = {**base, "metric": metric.name, "unit": metric.unit, "higher_is_better": bool(metric.higher_is_better)}
        available, reason = metric.availability()
        if not available:
            rows.append({**row, "value": None, "status": "unavailable", "note": reason})
            continue
        try:
            values = full_size(metric, outputs.float(), references.float()).reshape(-1).tolist()
        except (MetricUnavailable, ValueError, RuntimeError) as error:
            rows.append({**row, "value": None, "status": "unavailable", "note": str(error)})
            continue
        rows += [{**row, "value": float(v), "status": "ok", "note": "", "index": i} for i, v in enumerate(values)]
    return rows


def run_check(
    protected_pixels: np.ndarray,
    original_pixels: np.ndarray,
    model,
    *,
    metric_names: list[str],
    quick: bool,
    seed: int = 0,
    prompt: str = "a photo",
    on_stage: Callable[[str], None] | None = None,
) -> CheckResult:
    """Measure a protected file against its original (see the module docstring); ``(H, W, 3)`` uint8 each."""
    from cloakbench.bench.fullsize import protect_full_size
    from cloakbench.core.quick import quick_component
    from cloakbench.metrics import METRICS
    from cloakbench.mimicry import MIMICRY, AttackContext
    from cloakbench.mimicry.base import AttackUnavailable
    from cloakbench.protections import PROTECTIONS

    tell = on_stage or (lambda text: None)
    metrics = [METRICS.get(name)() for name in metric_names if METRICS.get(name).scope == "pair"]
    result = CheckResult("", "", tuple(protected_pixels.shape[:2]), model.identity(), None)
    transformed: list[tuple[str, np.ndarray, np.ndarray]] = []
    for transform in platform_transforms():
        tell(f"file: {transform.label}")
        published = transform.apply(protected_pixels)
        if published is None:
            result.skipped.append(f"{transform.label}: not needed, the picture is already smaller")
            continue
        clean = transform.apply(original_pixels)
        transformed.append((transform.label, published, clean))
        result.rows += pair_rows(
            metrics, to_tensor(published).unsqueeze(0), to_tensor(clean).unsqueeze(0), file=transform.label, view="full"
        )
    # The baseline: uniform noise at the published file's measured L∞, on the original.
    linf = int(np.abs(protected_pixels.astype(np.int16) - original_pixels.astype(np.int16)).max())
    noise = PROTECTIONS.get("noise").from_overrides({"eps": str(max(linf, 1))})
    # Through protect_full_size, as bench protect runs a method: any size (padded to the VAE's multiple).
    noisy = protect_full_size(noise, to_tensor(original_pixels), model, seed=seed, max_pixels=1 << 40).protected
    noisy_pixels = _uint8(noisy)
    transformed.append((BASELINE, noisy_pixels, original_pixels))
    result.rows += pair_rows(
        metrics,
        to_tensor(noisy_pixels).unsqueeze(0),
        to_tensor(original_pixels).unsqueeze(0),
        file=BASELINE,
        view="full",
    )
    result.images = {"protected": protected_pixels, "original": original_pixels}
    size = int(model.resolution)
    for kind in VIEWS:
        published = torch.stack([view(p, kind, size) for _, p, _ in transformed]).to(model.device)
        clean = torch.stack([view(c, kind, size) for _, _, c in transformed]).to(model.device)
        result.images[f"view {kind}: protected"] = _uint8(published[0])
        result.images[f"view {kind}: original"] = _uint8(clean[0])
        for name in ATTACKS:
            cls = MIMICRY.get(name)
            attack = cls.from_overrides(quick_component(cls) if quick else None)
            try:
                attack.check_available()
                if name == "inpaint" and not model.can_inpaint:
                    raise AttackUnavailable(f"the model {model.name} has no inpainting UNet")
            except AttackUnavailable as error:
                result.skipped.append(f"{name}: unavailable ({error})")
                continue
            result.attacks[name] = attack.settings()
            for setting in attack.settings():
                tell(f"{name} {setting} on the {kind} view".replace("  ", " "))
                outputs = []
                for images in (published, clean):
                    context = AttackContext(image_names=[label for label, _, _ in transformed], prompt=prompt)
                    context.setting = setting
                    generator = torch.Generator(device=model.device).manual_seed(seed)
                    with torch.no_grad():
                        out = attack(images.to(model.dtype), model, generator=generator, context=context)
                    outputs.append(torch.round(out.detach().float().clamp(0, 1).cpu() * 255) / 255)
                on_published, on_clean = outputs
                for index, (label, _, _) in enumerate(transformed):
                    base = {"file": label, "view": kind, "attack": name, "setting": setting}
                    one, twin = on_published[index : index + 1], on_clean[index : index + 1]
                    result.rows += [
                        {**row, "pair": "attack_vs_clean_attack"} for row in pair_rows(metrics, one, twin, **base)
                    ]
                    result.rows += [
                        {**row, "pair": "attack_vs_clean"}
                        for row in pair_rows(metrics, one, clean[index : index + 1].cpu().float(), **base)
                    ]
                result.images[f"{name} {setting} {kind}: on protected"] = _uint8(on_published[0])
                result.images[f"{name} {setting} {kind}: on original"] = _uint8(on_clean[0])
    return result


def _uint8(image: torch.Tensor) -> np.ndarray:
    return torch.round(image.detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def value(rows: list[dict], **match) -> float | None:
    """The mean of the ``ok`` rows matching every key (over settings, when ``setting`` is not given)."""
    found = [
        r["value"]
        for r in rows
        if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items()) and r["value"] is not None
    ]
    return float(np.mean(found)) if found else None


def table_rows(result: CheckResult, strength_metric: str = "ssim") -> list[dict]:
    """One row per file as published/transformed: budget, imperceptibility, strength per attack and view."""
    labels = list(dict.fromkeys(r["file"] for r in result.rows))
    table = []
    for label in labels:
        entry = {
            "file": label,
            "linf": value(result.rows, file=label, view="full", metric="linf"),
            "psnr": value(result.rows, file=label, view="full", metric="psnr"),
            "ssim": value(result.rows, file=label, view="full", metric="ssim"),
        }
        for name in result.attacks:
            for kind in VIEWS:
                entry[f"{name} {kind}"] = value(
                    result.rows,
                    file=label,
                    view=kind,
                    attack=name,
                    metric=strength_metric,
                    pair="attack_vs_clean_attack",
                )
        table.append(entry)
    return table
