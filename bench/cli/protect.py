"""``bench protect``: protect your own pictures before you publish them.

Each picture comes back at its own size and aspect ratio (``cloakbench.bench.fullsize``: whole
when its padded size is at most ``--max-pixels``, else in overlapping tiles of the model's
working size, the budget holding on every pixel). Writes ``OUT/<method>/<file>.<ext>`` (8-bit,
the file to publish; ``--format png|webp-lossless|jpeg``), named after the source file *with*
its extension (``a.jpg`` -> ``a.jpg.png``) so two sources with one stem never overwrite each
other; two inputs that would still map to one output are refused naming both paths. Beside
it, ``OUT/<method>/<file>.json`` (:mod:`cloakbench.bench.sidecar`): a ``summary`` a person
reads, then the method's config and version, the model, the seed, what intake did, the
metadata carried (:mod:`cloakbench.core.metadata`), full or the tile grid, the budget and
PSNR/SSIM measured on the saved file (re-read from disk), wall-clock and peak memory.

While it works it shows pictures x tiles x steps (:mod:`cloakbench.bench.cli.protect_progress`);
``--dry-run`` measures one step and prints the plan with the estimated time and memory. A
re-run skips every picture whose output and sidecar are complete and valid.

``--compare-seeds`` seeds each picture as ``bench compare`` and ``bench leaderboard run`` seed a
protect cell (:func:`picture_seed`), so ``bench protect`` elsewhere publishes the very pixels a
built-in leaderboard entry publishes (docs/LEADERBOARD.md, "Reproducing a built-in entry").
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from cloakbench.bench.cli.app import app, console, user_error

log = logging.getLogger(__name__)

DEFAULT_MODEL = "toy"
DEFAULT_EPS_STEPS = "[default: each method's own; sds-: eps 16, steps 100]"


class OutputFormat(str, Enum):
    png = "png"
    webp_lossless = "webp-lossless"
    jpeg = "jpeg"


def base_name(image) -> str:
    """A picture's relative name plus its source extension (``art/a.jpg`` -> ``art/a.jpg``)."""
    suffix = Path(image.source).suffix if not image.source.startswith("skimage.data.") else ""
    return f"{image.name}{suffix}"


def output_name(image, fmt: str = "png") -> str:
    """``OUT/<method>/`` relative name of the published file: ``a.jpg`` -> ``a.jpg.png`` (``.webp``, ``.jpg``)."""
    from cloakbench.core.metadata import FORMATS

    return base_name(image) + FORMATS[fmt][1]


def sidecar_name(image) -> str:
    """``a.jpg`` -> ``a.jpg.json``, whatever the output format."""
    return base_name(image) + ".json"


def no_images_sentence(sources: list[str], skipped: list) -> str:
    """Why nothing is left to protect: the folders named, with "holds no images" when nothing was skipped."""
    named = ", ".join(str(source) for source in sources)
    if not skipped:
        return f"{named} holds no images (PNG, JPEG or WebP files); give a folder or files that hold some"
    return f"none of the files in {named} could be used as an image (see the reasons above)"


def check_unique_outputs(images, fmt: str = "png") -> None:
    """Refuse two inputs that would write the same output file, naming both."""
    from cloakbench.core.config import ConfigError

    seen: dict[str, str] = {}
    for image in images:
        name = output_name(image, fmt)
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
    method: str,
    *,
    eps: float | None,
    steps: int | None,
    quick: bool,
    profile: str | None,
    set_items: list[str],
    reference_set: str | None = None,
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
    if reference_set:
        from cloakbench.bench.cli.options import REFERENCE_SET_PROTECTIONS, with_reference_set

        if not any(n in REFERENCE_SET_PROTECTIONS for n in names):
            raise ConfigError(
                f"--reference-set applies to {' and '.join(REFERENCE_SET_PROTECTIONS)} only, "
                f"not to {', '.join(names)}; add --method aspl or --method fsmg, or drop it"
            )
        for name, fields in with_reference_set({}, reference_set).items():
            if name in names:
                overrides.setdefault(name, {}).setdefault("reference_set", fields["reference_set"])
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


def picture_seed(seed: int, image, method: str, compare_seeds: bool) -> int:
    """The seed one picture is protected with: ``--seed`` itself, or with ``--compare-seeds`` the seed
    ``bench compare --seed SEED`` gives the protect cell of this picture and method
    (:func:`cloakbench.bench.plan.derive_seed` of the seed, the picture's pixel hash and the method's name).

    The pixel hash is of the picture as read here, at its own size: for a picture at the model's
    working size (``bench leaderboard images`` writes them so) it is the hash compare's cell uses.
    """
    if not compare_seeds:
        return seed
    from cloakbench.bench.plan import derive_seed

    return derive_seed(seed, image.pixel_hash, method)


@dataclasses.dataclass
class Work:
    """One picture under one method: where it goes, its seed and settings key, and whether it is already done."""

    plan: PlannedMethod
    image: Any
    output: Path
    sidecar: Path
    key: str
    size_plan: Any
    done: bool
    seed: int = 0


def plan_work(
    planned,
    images,
    facts,
    *,
    dtype: str,
    device: str,
    out: Path,
    fmt: str,
    quality: int,
    strip: bool,
    seed: int,
    max_pixels: int,
    compare_seeds: bool = False,
):
    """Every (method, picture) with its output paths, seed, settings key and size plan; done ones marked.

    From the model's :class:`~cloakbench.core.zoo.ModelFacts`, before it loads: a second run
    whose pictures are all done never loads the model, and the first ETA needs no model.
    """
    from cloakbench.bench import fullsize, sidecar
    from cloakbench.core.config import config_as_dict

    works = []
    for plan in planned:
        for image in images:
            used_seed = picture_seed(seed, image, plan.name, compare_seeds)
            key = sidecar.settings_key(
                schema=sidecar.SCHEMA,
                pixels=image.pixel_hash,
                metadata=image.metadata.record() if image.metadata is not None else None,
                method=plan.name,
                version=plan.protection.version,
                config=config_as_dict(plan.protection.config),
                model=facts.identity(dtype),
                device=device,
                seed=used_seed,
                format=fmt,
                quality=quality if fmt == "jpeg" else None,
                strip_metadata=strip,
                max_pixels=max_pixels,
            )
            output = out / plan.name / output_name(image, fmt)
            side = out / plan.name / sidecar_name(image)
            size_plan = fullsize.plan_for(plan.protection, *image.pixels.shape[-2:], facts, max_pixels)
            done = sidecar.is_complete(side, output, key)
            works.append(Work(plan, image, output, side, key, size_plan, done, used_seed))
    return works


def job_of(work: Work, batch_size: int):
    from cloakbench.bench.cli.protect_progress import Job
    from cloakbench.bench.fullsize import progress_units, steps_of

    plan = work.size_plan
    steps = steps_of(work.plan.protection)
    if plan.mode == "full":
        tiles, pixels = 1, plan.padded_height * plan.padded_width
    else:
        tiles, pixels = len(plan.origins), min(batch_size, len(plan.origins)) * plan.tile_height * plan.tile_width
    label = f"{work.plan.name} {output_name(work.image, 'png')[: -len('.png')]}"
    return Job(label, progress_units(plan, steps, batch_size), tiles, steps, pixels)


def rate_key_of(work: Work, facts, device: str) -> str:
    """The key of this picture's rate (:mod:`cloakbench.bench.protect_rates`)."""
    import torch

    from cloakbench.bench import protect_rates

    protection = work.plan.protection
    return protect_rates.rate_key(
        facts.weights_hash, work.plan.name, protection.version, device, torch.get_num_threads(), work.size_plan.mode
    )


def early_estimate(pending: list[Work], jobs, facts, device: str):
    """The run's time from earlier rates of each method (an ``EarlyEstimate``), or ``None`` if one has none.

    All or nothing: an estimate that silently left out a method would read as the whole run's.
    """
    from cloakbench.bench import protect_rates
    from cloakbench.bench.cli.protect_progress import EarlyEstimate

    total, sources = 0.0, set()
    for work, job in zip(pending, jobs):
        rate = protect_rates.lookup(rate_key_of(work, facts, device))
        if rate is None:
            return None
        total += job.units * job.pixels_per_unit * rate.seconds_per_pixel
        sources.add(rate.source)
    return EarlyEstimate(total, "; ".join(sorted(sources)))


def print_dry_run(works, jobs, probe: dict, bundle, target) -> None:
    """The plan: pictures, tiles, steps, estimated time and memory (from one measured step)."""
    from rich.table import Table

    from cloakbench.bench.cli.protect_progress import duration, estimate_seconds
    from cloakbench.reports.format import nbytes

    table = Table(title="bench protect --dry-run: the plan (nothing is written)", title_justify="left")
    for column in ("method", "picture", "size", "as", "steps", "units", "estimate"):
        table.add_column(column, overflow="fold")
    total = 0.0
    for work, job in zip(works, jobs):
        seconds = estimate_seconds([job], probe["seconds"], probe["pixels"])
        if not work.done:
            total += seconds
        plan = work.size_plan
        table.add_row(
            work.plan.name,
            output_name(work.image, "png")[: -len(".png")],
            f"{plan.width}x{plan.height}",
            "whole" if plan.mode == "full" else f"{len(plan.origins)} tiles",
            str(job.steps or "-"),
            str(job.units),
            "done (skipped)" if work.done else f"≈ {duration(seconds)}",
        )
    console.print(table)
    shape = "x".join(str(v) for v in probe["shape"])
    console.print(
        f"estimated time: about {duration(total)} (one measured step on a batch of {shape} took "
        f"{probe['seconds']:.2f} s, setup included; time taken as proportional to pixels)",
        highlight=False,
    )
    memory = nbytes(probe["peak_cuda_bytes"]) + " of GPU memory" if probe["peak_cuda_bytes"] else ""
    console.print(
        f"estimated peak memory: {nbytes(probe['peak_rss_bytes'])} (this process, measured during that step)"
        + (f"; {memory}" if memory else ""),
        highlight=False,
    )
    console.print(f"model: {target.sentence}", highlight=False, markup=False)


@app.command("protect")
def protect(
    paths: list[str] | None = typer.Argument(None, metavar="IMAGES", help="Image files or folders (same as --images)."),
    images: list[str] | None = typer.Option(
        None,
        "--images",
        "-i",
        help="Your pictures: folders or files (PNG, JPEG, WebP), or 'samples' "
        "for the test photos shipped with scikit-image. Repeatable. [default: none; required unless given as IMAGES]",
        show_default=False,
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder, created before work starts: OUT/<method>/<file> plus a .json sidecar "
        "(a readable summary, the settings and the measured change).",
    ),
    method: str = typer.Option(
        "sds-",
        "--method",
        "-m",
        help="Protection: a name, a comma list, or 'all' (every publishable method). "
        "`bench list protections` describes each. [default: sds-, the paper's method]",
        show_default=False,
    ),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        help=f"Diffusion model to protect against: {DEFAULT_MODEL} (a small model shipped for trying things "
        "out; not a model copiers use), a local diffusers folder (e.g. Stable Diffusion 1.5), a cached hub id, "
        f"or tiny-random (tests only). `bench models` lists what is here. [default: {DEFAULT_MODEL}]",
        show_default=False,
    ),
    eps: float | None = typer.Option(
        None,
        "--eps",
        help="Budget: the largest change of any pixel, in 8-bit steps (16 means 16/255). Smaller is less "
        f"visible and weaker. {DEFAULT_EPS_STEPS}",
        show_default=False,
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="PGD steps: more is stronger and slower (time grows in proportion). " + DEFAULT_EPS_STEPS,
        show_default=False,
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Seed: the same seed, images and settings give the same output."
    ),
    compare_seeds: bool = typer.Option(
        False,
        "--compare-seeds",
        help="Seed each picture as `bench compare --seed SEED` (and `bench leaderboard run`) seeds its protect "
        "cell, from --seed, the picture's pixels and the method: the output is then the image a built-in "
        "leaderboard entry publishes (docs/LEADERBOARD.md). [default: off: every picture uses --seed itself]",
    ),
    reference_set: str | None = typer.Option(
        None,
        "--reference-set",
        help="Clean photos of the same subject, not to be published, on which aspl and fsmg train their "
        "surrogate (Anti-DreamBooth's set A). [default: none: they train on the images they protect]",
    ),
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="A method's published settings, e.g. 'paper' for photoguard (its own eps, steps, step size "
        "and zero target). [default: none, the method's defaults]",
        show_default=False,
    ),
    set_items: list[str] | None = typer.Option(
        None,
        "--set",
        help="Any setting: NAME.FIELD=VALUE, e.g. sds-.steps=50 or mist.target=my.png. Repeatable. [default: none]",
        show_default=False,
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Only a few steps: checks the setup in minutes; the result is NOT a real protection."
    ),
    protector: Path | None = typer.Option(
        None,
        "--protector",
        help="For --method amortized: the protector folder (bench train-protector's --out); the same as "
        "--set amortized.protector=PATH. [default: models/protector-<model>, shipped for toy]",
        show_default=False,
    ),
    fmt: OutputFormat = typer.Option(
        OutputFormat.png,
        "--format",
        help="Output file: png (lossless), webp-lossless (lossless, smaller) or jpeg (--quality; re-encoding "
        "changes pixels and weakens the perturbation: `bench check` measures how much).",
    ),
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG quality for --format jpeg."),
    strip_metadata: bool = typer.Option(
        False,
        "--strip-metadata",
        help="Drop EXIF, ICC profile, XMP and IPTC (kept by default; an RGB ICC profile's colours are then "
        "converted to sRGB).",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Measure one step, print the plan (pictures, tiles, steps, estimated time and memory), write nothing.",
    ),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16."),
    batch_size: int = typer.Option(
        4,
        "--batch-size",
        min=1,
        help="Tiles per PGD step when a picture is tiled (same results for any value; larger is faster "
        "if memory allows).",
    ),
    max_pixels: int = typer.Option(
        1024 * 1024,
        "--max-pixels",
        min=4096,
        help="Memory cap: a picture whose (padded) size is at most this many pixels is protected whole; a "
        "larger one in overlapping tiles of the model's working size (so memory never drops below one "
        "tile). Lower it if memory runs out.",
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
        show_default=False,
    ),
) -> None:
    """Protect your pictures against diffusion-based mimicry before you publish them.

    Adds a small adversarial perturbation (at most --eps/255 per pixel) that makes the
    model given by --model edit or imitate the picture badly. Each picture comes back at
    its own size with its EXIF, ICC profile and XMP/IPTC copyright: publish
    OUT/<method>/<file>.png (a.jpg -> a.jpg.png); the .json beside it starts with a
    summary (method, model, budget, PSNR/SSIM, what was not evaluated).

    Duration: a progress bar counts pictures x tiles x steps and gives the time left;
    --dry-run measures one step first and prints the estimate. Rerunning the same command
    skips pictures already done. Check the result with `bench check OUTPUT ORIGINAL`.

    Exit status: 0 done; 2 a usage error or no usable picture.

    Example: bench protect --images ./my_art --out ./protected
    """
    from cloakbench.bench import fullsize, protect_rates, sidecar
    from cloakbench.bench.cli.protect_progress import ProtectProgress, duration
    from cloakbench.bench.profiling import profile_phase, reset_peak_rss
    from cloakbench.bench.target import describe_target
    from cloakbench.core import provenance
    from cloakbench.core.budget import budget_spent
    from cloakbench.core.config import ConfigError
    from cloakbench.core.devices import check_device
    from cloakbench.core.images import ImageError, from_uint8_array, load_images, to_uint8_array
    from cloakbench.core.io import write_atomic
    from cloakbench.core.ldm import ModelError
    from cloakbench.core.metadata import encode
    from cloakbench.core.registry import RegistryError
    from cloakbench.core.zoo import load_model, model_facts
    from cloakbench.protections import ProtectionUnavailable

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    sources = list(paths or []) + list(images or [])
    fmt_name = fmt.value
    if not sources:
        raise user_error("no images given: pass --images FOLDER (or files), e.g. --images ./my_art")
    if out.exists() and not out.is_dir():
        raise user_error(f"--out {out} is a file, not a folder; give a folder (it is created if missing)")
    try:
        planned = plan_methods(
            method,
            eps=eps,
            steps=steps,
            quick=quick,
            profile=profile,
            set_items=list(set_items or []) + ([f"amortized.protector={protector}"] if protector else []),
            reference_set=reference_set,
        )
        notes = {plan.name: plan.protection.row_note() for plan in planned}
        device_name = str(check_device(device))
    except (ConfigError, ModelError, RegistryError, ValueError) as error:
        raise user_error(str(error)) from None
    target = describe_target(model)
    with ProtectProgress(console) as progress:
        progress.status("reading your pictures")
        try:
            # The model's facts, not the model: its loading takes longer than anything before the
            # first step, and a run whose pictures are all done never needs it.
            facts = model_facts(model, allow_pickle=allow_pickle)
            # At its own size: bench protect publishes the whole picture, never a crop.
            intake = load_images(
                sources,
                facts.resolution,
                keep_size=True,
                metadata=not strip_metadata,
                colour="srgb" if strip_metadata else "keep",
                exclude=[out],  # an --out inside --images: its outputs are never protected again
            )
            check_unique_outputs(intake.images, fmt_name)
        except (ConfigError, ImageError, ModelError, RegistryError, ValueError, ProtectionUnavailable) as error:
            raise user_error(str(error)) from None
        for skipped in intake.skipped:
            progress.print(f"[yellow]skipped[/] {skipped.path}: {skipped.reason}", highlight=False)
        if not intake.images:
            raise user_error(no_images_sentence(sources, intake.skipped))
        progress.print(
            f"[{'green' if target.real else 'yellow'}]model:[/] {target.sentence}", highlight=False, markup=True
        )
        if quick:
            progress.print("[yellow]--quick: a few steps only; these outputs are not real protections[/]")
        if fmt_name == "jpeg":
            progress.print(
                f"[yellow]--format jpeg: re-encoding at quality {quality} changes pixels beyond the perturbation "
                "and weakens it; the sidecar records how much, and `bench check` measures what survives[/]"
            )
        works = plan_work(
            planned,
            intake.images,
            facts,
            dtype=dtype,
            device=device_name,
            out=out,
            fmt=fmt_name,
            quality=quality,
            strip=strip_metadata,
            seed=seed,
            max_pixels=max_pixels,
            compare_seeds=compare_seeds,
        )
        pending = [work for work in works if not work.done]
        jobs = [job_of(work, batch_size) for work in (works if dry_run else pending)]
        early = None
        if pending and not dry_run:
            early = early_estimate(pending, jobs, facts, device_name)
            progress.expect(jobs, early)
            if early is not None:
                progress.print(
                    f"estimate before the model has loaded: about {duration(early.seconds)} ({progress.total} units "
                    f"at {early.source}; measured again after the first step)",
                    highlight=False,
                    markup=False,
                )
        if pending or dry_run:
            progress.status(f"loading the model '{model}'")
            try:
                bundle = load_model(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
                for plan in planned:  # a missing amortized protector: its file and how to train one, before any work
                    getattr(plan.protection, "check_available", lambda model: None)(bundle)
            except (ConfigError, ModelError, RegistryError, ValueError, ProtectionUnavailable) as error:
                raise user_error(str(error)) from None
        if dry_run:
            progress.status("measuring one step for the estimate")
            largest = max(range(len(works)), key=lambda i: jobs[i].pixels_per_unit)
            probe = fullsize.measure_first_step(
                works[largest].plan.protection,
                works[largest].image.pixels,
                bundle,
                seed=works[largest].seed,
                max_pixels=max_pixels,
                tile_batch=batch_size,
            )
    if dry_run:
        print_dry_run(works, jobs, probe, bundle, target)
        return

    for plan in planned:  # the output folder exists before the first picture is protected
        (out / plan.name).mkdir(parents=True, exist_ok=True)
    versions = provenance.versions()
    commit, dirty = provenance.git_state()
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    warned_analysis: set[str] = set()
    with ProtectProgress(console) as progress:
        for work in works:
            if work.done:
                progress.skipped(f"skipped {work.output}: already protected with these settings (sidecar valid)")
        progress.expect(jobs, early)
        for work, job in zip(pending, progress.jobs):
            plan, image, protection = work.plan, work.image, work.plan.protection
            if protection.analysis_only and plan.name not in warned_analysis:
                warned_analysis.add(plan.name)
                progress.print(f"[yellow]{plan.name} is for analysis only: its output has no pixel budget[/]")
            eps_255 = fullsize.budget_of(protection)
            progress.begin(job)
            rss_reset = reset_peak_rss()
            with profile_phase("protect", bundle.device) as record:
                result = fullsize.protect_full_size(
                    protection,
                    image.pixels,
                    bundle,
                    seed=work.seed,
                    max_pixels=max_pixels,
                    tile_batch=batch_size,
                    on_progress=progress.hook,
                )
            # This machine's rate, for the next run's first ETA (per unit of progress and pixel).
            protect_rates.record(
                rate_key_of(work, facts, device_name), record.wall_s / (job.units * job.pixels_per_unit)
            )
            data, encode_notes = encode(
                to_uint8_array(result.protected), fmt_name, quality=quality, metadata=image.metadata
            )
            write_atomic(work.output, data)
            saved = read_saved(work.output, from_uint8_array)
            measured = budget_spent(saved, image.pixels)
            fidelity = sidecar.fidelity(saved, image.pixels)
            reencoding = None
            if fmt_name == "jpeg":
                reencoding = jpeg_effect(saved, result.protected, image.pixels, quality, budget_spent)
            carried = [] if image.metadata is None else image.metadata.present()
            not_measured = sidecar.not_evaluated(
                model, image.source, str(work.output), quick, getattr(protection.config, "steps", None)
            )
            if reencoding is not None and reencoding["perturbation_kept"] is not None:
                not_measured.append(
                    f"JPEG re-encoding changed pixels by up to {reencoding['change_255']:.0f}/255 and kept "
                    f"{reencoding['perturbation_kept']:.0%} of the perturbation; `bench check` measures the effect"
                )
            record_json = {
                "summary": sidecar.summary(
                    method=plan.name,
                    plain=type(protection).plain_description(),
                    target=target,
                    eps_255=eps_255,
                    measured=measured,
                    quality=fidelity,
                    wall_s=record.wall_s,
                    fmt=fmt_name if fmt_name != "jpeg" else f"jpeg (quality {quality})",
                    carried=carried,
                    stripped=strip_metadata,
                    not_measured=not_measured,
                    plan_description=result.plan.describe(),
                ),
                "complete": True,
                "schema": sidecar.SCHEMA,
                "settings_key": work.key,
                "output": work.output.name,
                "output_sha256": sidecar.file_sha256(work.output),
                "format": fmt_name,
                "jpeg_quality": quality if fmt_name == "jpeg" else None,
                "reencoding": reencoding,
                "image": image.name,
                "source": image.source,
                "pixel_hash": image.pixel_hash,
                "method": plan.name,
                "version": protection.version,
                "profile": plan.profile,
                "analysis_only": protection.analysis_only,
                # identity's config: a reference set appears by its content hash, never its path
                "config": protection.identity()["config"],
                "note": notes.get(plan.name, ""),
                "model": {**bundle.identity(), "kind": target.kind, "real": target.real},
                # The picture's own seed; with --compare-seeds derived from --seed (seed_option).
                "seed": work.seed,
                "seed_option": seed,
                "compare_seeds": compare_seeds,
                "device": str(bundle.device),
                "size": [int(image.pixels.shape[-1]), int(image.pixels.shape[-2])],
                "intake": image.intake_record(),
                "metadata": {
                    "carried": carried,
                    "stripped": strip_metadata,
                    "notes": (image.metadata.notes if image.metadata is not None else []) + encode_notes,
                },
                "protected_as": result.plan.record(),
                "eps_255": eps_255,
                **measured,
                "psnr_db": fidelity["psnr"],
                "ssim": fidelity["ssim"],
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
            sidecar.write(work.sidecar, record_json)
            psnr = fidelity["psnr"]
            progress.end(
                f"{plan.name:<10} {work.output.name:<24} {result.plan.mode:<5} "
                f"L∞ {measured['linf_255']:.0f}/255  L2 {measured['l2_255']:.1f}/255  "
                f"PSNR {'inf' if psnr is None or psnr == float('inf') else f'{psnr:.1f}'} dB  {record.wall_s:.1f} s"
            )
    skipped = len(works) - len(pending)
    console.print(
        f"[green]done[/] {len(planned)} method(s) x {len(intake.images)} image(s)"
        + (f" ({skipped} already done, skipped)" if skipped else "")
        + f": {out}/<method>/<file>{output_name(intake.images[0], fmt_name)[len(base_name(intake.images[0])) :]} "
        "(+ .json), each at its own size",
        highlight=False,
    )


def read_saved(path: Path, from_uint8_array):
    """The saved file as ``(3, H, W)`` in [0, 1], decoded from disk (what a viewer gets)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as opened:
        return from_uint8_array(np.asarray(opened.convert("RGB")))


def jpeg_effect(saved, lossless, clean, quality: int, budget_spent) -> dict:
    """What JPEG re-encoding did: its largest change, and the share of the perturbation kept.

    ``perturbation_kept`` is the projection ``<δ_saved, δ> / <δ, δ>`` of the saved change
    onto the intended one (1: all kept; 0: none of it left in its direction).
    """
    intended = (lossless.double() - clean.double()).reshape(-1)
    kept = (saved.double() - clean.double()).reshape(-1)
    energy = float(intended @ intended)
    return {
        "quality": quality,
        "change_255": budget_spent(saved, lossless)["linf_255"],
        "perturbation_kept": float(kept @ intended) / energy if energy > 0 else None,
    }
