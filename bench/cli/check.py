"""``bench check PROTECTED ORIGINAL``: the published full-size file, as platforms and copiers get it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from cloakbench.bench.cli.app import app, console, user_error

DEFAULT_METRICS = "all"


def strength_columns(attacks: list[str]) -> list[tuple[str, str]]:
    from cloakbench.bench.check import VIEWS

    labels = {"sdedit": "SDEdit", "inpaint": "inpaint", "crop": "crop", "resized": "resize"}
    return [(f"{name} {kind}", f"{labels.get(name, name)}\n{labels[kind]}") for name in attacks for kind in VIEWS]


@app.command("check")
def check(
    protected: Path = typer.Argument(..., help="The protected file you publish (bench protect's output)."),
    original: Path = typer.Argument(..., help="Your original picture it was made from."),
    model: str = typer.Option(
        "toy",
        "--model",
        help="Model the attacks run on: toy (shipped; not a model copiers use), a local diffusers folder, "
        "or a cached hub id; use the model the file was protected against.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for check.html and check.json. [default: PROTECTED.check beside the file]",
        show_default=False,
    ),
    metrics: str = typer.Option(
        DEFAULT_METRICS, "--metrics", help="Pair metrics, 'all' or a comma list (as bench compare)."
    ),
    quick: bool = typer.Option(False, "--quick", help="The attacks' quick settings (fewer steps): a smoke check."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the attacks and the noise baseline."),
    prompt: str = typer.Option("a photo", "--prompt", help="Prompt of SDEdit and inpainting."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Allow pickle weights, loaded with torch.load(weights_only=True) only."
    ),
) -> None:
    """Measure a protected file against its original, also after platform transforms.

    For the file as published and after JPEG re-encoding (quality 95, 85, 75),
    downscaling to 2048 and 1080 px on the long side and WebP: the change
    (L∞, PSNR, SSIM at full size) and the strength against SDEdit and inpainting
    on --model (the attack's output on the protected file against its output on
    the original; lower SSIM = stronger), next to uniform noise of the same L∞.
    One table here; every number and the pictures in OUT/check.html.

    Exit status: 0 done; 2 a usage error or a bad file.

    Example: bench check out/sds-/x.jpg.png x.jpg --model toy --quick
    """
    from rich import box
    from rich.table import Table

    from cloakbench.bench.check import ATTACKS, run_check, table_rows
    from cloakbench.bench.target import describe_target
    from cloakbench.core.config import ConfigError
    from cloakbench.core.images import ImageError, load_image_file, to_uint8_array
    from cloakbench.core.io import write_atomic
    from cloakbench.core.ldm import ModelError
    from cloakbench.core.registry import RegistryError
    from cloakbench.core.zoo import load_model
    from cloakbench.metrics import METRICS
    from cloakbench.reports.check_page import render_check_page
    from cloakbench.reports.format import number

    target = describe_target(model)
    try:
        names = METRICS.resolve(metrics) if metrics != "all" else [n for n, c in METRICS.items() if c.scope == "pair"]
        published = load_image_file(protected, 8, keep_size=True, metadata=True)
        carries = published.metadata.icc_profile if published.metadata else None
        # As bench protect saw it: in the profile's space when the file carries the original's
        # profile, converted to sRGB when it does not (--strip-metadata converts).
        source = load_image_file(original, 8, keep_size=True, colour="keep" if carries else "srgb")
        if published.pixels.shape != source.pixels.shape:
            p, o = published.pixels.shape, source.pixels.shape
            raise ImageError(
                f"{protected} is {p[2]}x{p[1]} but {original} is {o[2]}x{o[1]}: give the original the protected "
                "file was made from, at its own size"
            )
        bundle = load_model(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    except (ConfigError, ImageError, ModelError, RegistryError, ValueError) as error:
        raise user_error(str(error)) from None
    console.print(f"[{'green' if target.real else 'yellow'}]model:[/] {target.sentence}", highlight=False)
    with console.status("checking") as status:
        result = run_check(
            to_uint8_array(published.pixels),
            to_uint8_array(source.pixels),
            bundle,
            metric_names=list(names),
            quick=quick,
            seed=seed,
            prompt=prompt,
            # On a terminal a spinner; in a log one line per stage, so a long check is never silent.
            on_stage=(lambda text: status.update(f"checking: {text}"))
            if console.is_terminal
            else (lambda text: console.print(f"checking: {text}", highlight=False, markup=False)),
        )
    result.protected, result.original, result.target = str(protected), str(original), target
    rows = table_rows(result)
    columns = [("file", "file as"), ("linf", "L∞/255"), ("psnr", "PSNR\ndB"), ("ssim", "SSIM")]
    columns += strength_columns([a for a in ATTACKS if a in result.attacks])
    table = Table(
        title="bench check: the change, and SSIM of each attack's output on the protected file vs on the "
        "original (lower = stronger; 1 = no effect)",
        title_justify="left",
        # No vertical rules, one space before each column (none after): eight columns fit 80 characters.
        box=box.SIMPLE_HEAD,
        padding=(0, 0, 0, 1),
        pad_edge=False,
    )
    for key, header in columns:
        if key == "file":
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, overflow="fold", justify="right", min_width=max(map(len, header.split())))
    for row in rows:
        table.add_row(*[row["file"] if key == "file" else number(row.get(key), key) for key, _ in columns])
    console.print(table)
    for skipped in result.skipped:
        console.print(f"  not run: {skipped}", highlight=False, markup=False)
    folder = out or protected.with_name(protected.name + ".check")
    command = shlex.join(["bench"] + sys.argv[1:])
    page = folder / "check.html"
    write_atomic(page, render_check_page(result, rows, columns, command).encode())
    record = {
        "protected": str(protected),
        "original": str(original),
        "model": {**result.model, "kind": target.kind, "real": target.real, "note": target.sentence},
        "quick": quick,
        "table": rows,
        "rows": result.rows,
        "not_run": result.skipped,
        "command": command,
    }
    from cloakbench.bench.sidecar import finite_or_none

    write_atomic(folder / "check.json", (json.dumps(finite_or_none(record), indent=1) + "\n").encode())
    console.print(f"page: {page}", highlight=False)
