"""``bench protect``: protect your own pictures before you publish them.

Each picture comes back at its own size and aspect ratio (``cloakbench.bench.fullsize``: whole
when its padded size is at most ``--max-pixels``, else in overlapping tiles of the model's
working size, the budget holding on every pixel). Writes ``OUT/<method>/<file>.png``
(8-bit, the file to publish), named after the source file *with* its extension
(``a.jpg`` -> ``a.jpg.png``, ``a.png`` -> ``a.png.png``) so two sources with one stem
never overwrite each other; two inputs that would still map to one output (the same
relative name under two folders) are refused naming both paths. Beside it,
``OUT/<method>/<file>.json``: the method's config and version, the model, the seed, what
intake did (rotation, alpha, bit depth, original size, no resize), full or tiles, the
budget measured on the saved full-size PNG (re-read from disk), wall-clock and peak
memory. The sidecar is strict JSON: a non-finite number is written as null.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cloakbench.bench.cli.app import app, console, user_error

if TYPE_CHECKING:  # torch is imported lazily so `bench --help` and `bench list` stay fast
    pass

log = logging.getLogger(__name__)

DEFAULT_MODEL = "toy"


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no such numbers), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def output_name(image) -> str:
    """``OUT/<method>/`` relative name of a picture: its relative name plus its source extension, ``.png``."""
    suffix = Path(image.source).suffix if not image.source.startswith("skimage.data.") else ""
    return f"{image.name}{suffix}.png"


def check_unique_outputs(images) -> None:
    """Refuse two inputs that would write the same output file, naming both."""
    from cloakbench.core.config import ConfigError

    seen: dict[str, str] = {}
    for image in images:
        name = output_name(image)
        if name in seen:
            raise ConfigError(
                f"{seen[name]} and {image.source} would both be written as <method>/{name}; "
                "rename one of them or protect them in separate runs"
            )
        seen[name] = image.source


@dataclasses.dataclass
class PlannedMethod:
    name: str
    protection: Any
    profile: str | None


def plan_methods(
    method: str, *, eps: float | None, steps: int | None, quick: bool, profile: str | None, set_items: list[str]
) -> list[PlannedMethod]:
    """Resolve names and build each protection: profile, then --quick, --eps/--steps, then --set."""
    from cloakbench.core.config import ConfigError, apply_overrides, parse_set_options, qualify_overrides
    from cloakbench.core.quick import quick_component
    from cloakbench.protections import PROTECTIONS, publishable_protections

    names = PROTECTIONS.resolve(method, all_names=publishable_protections())
    # Only protections run here, so a bare name means the protection (protection:noise = noise).
    overrides = {
        name: fields
        for (_, name), fields in qualify_overrides(parse_set_options(set_items), {"protection": PROTECTIONS}).items()
    }
    for name in overrides:
        if name not in names:
            raise ConfigError(f"--set names {name!r}, which is not among the methods to run ({', '.join(names)})")
    if profile is not None and not any(profile in getattr(PROTECTIONS.get(n), "PROFILES", {}) for n in names):
        raise ConfigError(f"no selected method has a profile {profile!r}")
    planned = []
    for name in names:
        cls = PROTECTIONS.get(name)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        config = cls.Config()
        used_profile = None
        if profile is not None and profile in getattr(cls, "PROFILES", {}):
            config = dataclasses.replace(config, **cls.PROFILES[profile])
            used_profile = profile
        # Later wins: --quick, then the explicit --eps/--steps, then --set.
        flags: dict[str, Any] = dict(quick_component(cls)) if quick else {}
        if eps is not None and "eps" in fields:
            flags["eps"] = eps
        if steps is not None and "steps" in fields:
            flags["steps"] = steps
        flags.update(overrides.get(name, {}))
        if flags:
            config = apply_overrides(config, flags, owner=name)
        planned.append(PlannedMethod(name, cls(config), used_profile))
    return planned


@app.command("protect")
def protect(
    paths: list[str] | None = typer.Argument(None, metavar="IMAGES", help="Image files or folders (same as --images)."),
    images: list[str] | None = typer.Option(
        None,
        "--images",
        "-i",
        help="Your pictures: folders or files (PNG, JPEG, WebP), or 'samples' "
        "for the test photos shipped with scikit-image. Repeatable.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder: OUT/<method>/<image>.png plus a .json sidecar with settings and the measured change.",
    ),
    method: str = typer.Option(
        "sds-",
        "--method",
        "-m",
        help="Protection: a name, a comma list, or 'all' (every publishable method). "
        "`bench list protections` describes each. [default: sds-, the paper's method]",
    ),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        help=f"Diffusion model to protect against: {DEFAULT_MODEL} (shipped), a local "
        "diffusers folder, a cached hub id, or tiny-random (tests only).",
    ),
    eps: float | None = typer.Option(
        None,
        "--eps",
        help="Budget: the largest change of any pixel, in 8-bit "
        "steps (16 means 16/255). Smaller is less visible and "
        "weaker. [default: each method's own, 16]",
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="PGD steps: more is stronger and slower. [default: each method's own, 100]"
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Seed: the same seed, images and settings give the same output."
    ),
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="A method's published settings, e.g. "
        "'paper' for photoguard (its own eps, steps, "
        "step size and zero target).",
    ),
    set_items: list[str] | None = typer.Option(
        None, "--set", help="Any setting: NAME.FIELD=VALUE, e.g. sds-.steps=50 or mist.target=my.png. Repeatable."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Only a few steps: checks the setup in seconds; the result is NOT a real protection."
    ),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16."),
    batch_size: int = typer.Option(
        4,
        "--batch-size",
        min=1,
        help="Tiles per PGD step when a picture is tiled "
        "(same results for any value; larger is faster "
        "if memory allows).",
    ),
    max_pixels: int = typer.Option(
        1024 * 1024,
        "--max-pixels",
        min=4096,
        help="Memory cap: a picture whose (padded) size is at most this many pixels is "
        "protected whole; a larger one in overlapping tiles of the model's working "
        "size (so memory never drops below one tile). Lower it if memory runs "
        "out.",
    ),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Allow pickle weights (.bin/.ckpt) in a model folder, loaded with torch.load(weights_only=True) only.",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads for torch (on a shared machine, fewer than the cores). [default: torch's own, all cores]",
    ),
) -> None:
    """Protect your pictures against diffusion-based mimicry before you publish them.

    Adds a small adversarial perturbation (at most --eps/255 per pixel) that makes
    diffusion models edit or imitate the picture badly. Each picture comes back at its
    own size: publish OUT/<method>/<file>.png (a.jpg -> a.jpg.png); the .json beside it
    records the settings, what intake did, full or tiled, and the measured change.

    Exit status: 0 done; 2 a usage error or no usable picture.

    Example: bench protect --images ./my_art --out ./protected
    """
    from cloakbench.bench.fullsize import protect_full_size
    from cloakbench.bench.profiling import profile_phase, reset_peak_rss
    from cloakbench.core import provenance
    from cloakbench.core.budget import budget_spent
    from cloakbench.core.config import ConfigError, config_as_dict
    from cloakbench.core.images import ImageError, load_images, read_png, save_png, write_atomic
    from cloakbench.core.models import ModelError, load_model
    from cloakbench.core.registry import RegistryError

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    sources = list(paths or []) + list(images or [])
    if not sources:
        raise user_error("no images given: pass --images FOLDER (or files), e.g. --images ./my_art")
    if out.exists() and not out.is_dir():
        raise user_error(f"--out {out} is a file, not a folder; give a folder (it is created if missing)")
    try:
        planned = plan_methods(
            method, eps=eps, steps=steps, quick=quick, profile=profile, set_items=list(set_items or [])
        )
        bundle = load_model(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
        # At its own size: bench protect publishes the whole picture, never a crop.
        intake = load_images(sources, bundle.resolution, keep_size=True)
        check_unique_outputs(intake.images)
    except (ConfigError, ImageError, ModelError, RegistryError, ValueError) as error:
        raise user_error(str(error)) from None
    for skipped in intake.skipped:
        console.print(f"[yellow]skipped[/] {skipped.path}: {skipped.reason}", highlight=False)
    if not intake.images:
        raise user_error("none of the given files could be used as an image (see the reasons above)")
    if quick:
        console.print("[yellow]--quick: a few steps only; these outputs are not real protections[/]")

    versions = provenance.versions()
    commit, dirty = provenance.git_state()
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for plan in planned:
        protection = plan.protection
        if protection.analysis_only:
            console.print(f"[yellow]{plan.name} is for analysis only: its output has no pixel budget[/]")
        eps_255 = getattr(protection.config, "eps", None)
        for image in intake.images:
            rss_reset = reset_peak_rss()
            with profile_phase("protect", bundle.device) as record:
                result = protect_full_size(
                    protection, image.pixels, bundle, seed=seed, max_pixels=max_pixels, tile_batch=batch_size
                )
            png = out / plan.name / output_name(image)
            save_png(result.protected, png)
            measured = budget_spent(read_png(png), image.pixels)
            sidecar = {
                "image": image.name,
                "source": image.source,
                "pixel_hash": image.pixel_hash,
                "method": plan.name,
                "version": protection.version,
                "profile": plan.profile,
                "analysis_only": protection.analysis_only,
                "config": config_as_dict(protection.config),
                "model": bundle.identity(),
                "seed": seed,
                "device": str(bundle.device),
                "size": [int(image.pixels.shape[-1]), int(image.pixels.shape[-2])],
                "intake": image.intake_record(),
                "protected_as": result.plan.record(),
                "eps_255": eps_255,
                **measured,
                "within_budget": None if eps_255 is None else measured["linf_255"] <= eps_255 + 1e-6,
                "loss_first": result.loss_first,
                "loss_last": result.loss_last,
                "tile_batch_size": batch_size,
                "wall_s": record.wall_s,
                "peak_rss_bytes": record.peak_rss_bytes,
                "peak_rss_since": "image" if rss_reset else "process",
                "peak_cuda_allocated_bytes": record.peak_cuda_allocated_bytes,
                "peak_cuda_reserved_bytes": record.peak_cuda_reserved_bytes,
                "quick": quick,
                "versions": versions,
                "git_commit": commit,
                "git_dirty": dirty,
                "created_utc": created,
            }
            text = json.dumps(finite_or_none(sidecar), indent=1, allow_nan=False)
            write_atomic(png.with_name(png.name[: -len(".png")] + ".json"), (text + "\n").encode())
            console.print(
                f"{plan.name:<10} {output_name(image):<24} {result.plan.mode:<5} "
                f"L∞ {measured['linf_255']:.0f}/255  L2 {measured['l2_255']:.1f}/255  "
                f"{record.wall_s:.1f} s",
                highlight=False,
                markup=False,
            )
    console.print(
        f"[green]done[/] {len(planned)} method(s) x {len(intake.images)} image(s): "
        f"{out}/<method>/<file>.png (+ .json), each at its own size",
        highlight=False,
    )
