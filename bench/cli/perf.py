"""``bench perf``: cost per PGD step and per image of each protection, as ratios to AdvDM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloakbench.bench.cli.app import app, console, user_error

DEFAULT_ARCH = "tiny-random"


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value / 2**20:,.1f}"


def _ratio(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}"


def _seconds(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _columns(on_gpu: bool, several_opts: bool, has_reference: bool) -> list[str]:
    columns = ["method", "mode", "res", "batch"] + (["options"] if several_opts else [])
    columns += ["s/step", "steps", "s/image"]
    # On CPU the RSS growth over the post-load RSS is the attack memory (weights excluded).
    columns += ["peak alloc MiB", "reserved MiB", "attack MiB"] if on_gpu else ["RSS growth MiB"]
    columns += ["saved MiB", "GFLOP", "time /advdm", "cpu /advdm", "flops /advdm", "mem /advdm", "saved /advdm"]
    if has_reference:
        columns += ["ref/fair time", "ref/fair flops", "ref/fair mem"]
    if several_opts:
        columns += ["time /none", "mem /none", "saved /none"]
    return columns


def results_table(rows: list[dict[str, Any]]) -> Table:
    """One line per method and configuration; ratios against AdvDM of the same mode and size.

    ``steps``: the method's default PGD steps; ``s/image`` = s/step × steps / batch.
    """
    on_gpu = any(r.get("peak_cuda_allocated_bytes") is not None for r in rows)
    several_opts = len({r.get("optimisations") for r in rows}) > 1
    has_reference = any(r.get("reference_over_fair_time") is not None for r in rows)
    first_ok = next((r for r in rows if r.get("status") == "ok"), None)
    where = ""
    if first_ok:
        machine = first_ok["machine"]
        where = f" — {machine.get('gpu') or machine.get('cpu')} ({first_ok['arch']}, {first_ok['dtype']})"
    table = Table(title=escape(f"cost per PGD step{where}"), title_justify="left")
    for index, name in enumerate(_columns(on_gpu, several_opts, has_reference)):
        table.add_column(name, justify="left" if index < 2 or name == "options" else "right")
    for row in rows:
        cells = [
            row.get("method", "?"),
            row.get("mode", "?"),
            str(row.get("resolution") or "native"),
            str(row.get("batch", "?")),
        ]
        if several_opts:
            cells.append(row.get("optimisations", "?"))
        if row.get("status") != "ok":
            cells.append(f"[red]failed[/]: {escape(str(row.get('error', ''))[:90])}")
            table.add_row(*cells)
            continue
        flops = row.get("flops_per_step")
        cells += [_seconds(row["s_per_step"]), str(row.get("default_steps") or "—"), _seconds(row.get("s_per_image"))]
        if on_gpu:
            cells += [_mib(row["peak_bytes"]), _mib(row.get("peak_cuda_reserved_bytes"))]
        cells += [
            _mib(row["attack_bytes"]),
            _mib(row["saved_bytes"]),
            "—" if flops is None else f"{flops / 1e9:,.1f}",
            _ratio(row.get("time_ratio_to_advdm")),
            _ratio(row.get("cpu_time_ratio_to_advdm")),
            _ratio(row.get("flops_ratio_to_advdm")),
            _ratio(row.get("memory_ratio_to_advdm")),
            _ratio(row.get("saved_ratio_to_advdm")),
        ]
        if has_reference:
            cells += [
                _ratio(row.get("reference_over_fair_time")),
                _ratio(row.get("reference_over_fair_flops")),
                _ratio(row.get("reference_over_fair_memory")),
            ]
        if several_opts:
            cells += [
                _ratio(row.get("time_vs_none")),
                _ratio(row.get("memory_vs_none")),
                _ratio(row.get("saved_vs_none")),
            ]
        table.add_row(*cells)
    return table


def output_console() -> Console:
    """stdout; wide enough for the table when stdout is a log file or a pipe (CI)."""
    out = Console()
    return out if out.is_terminal else Console(width=250)


def _measure_with_progress(configs, timeout_s, isolation, json_out=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cloakbench.bench.perf.runner import measure, write_json

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("measuring", total=len(configs))

        done = []

        def advance(config, row):
            progress.advance(task)
            done.append(row)
            if json_out is not None:  # each row as it comes: an interrupted run keeps what it measured
                write_json(done, json_out)
            if row.get("status") != "ok":
                console.print(
                    f"[red]failed[/] {escape(config.label())}: {escape(str(row.get('error')))}",
                    highlight=False,
                    soft_wrap=True,
                )

        progress.update(task, description=f"measuring {configs[0].label()}")
        return measure(configs, timeout_s=timeout_s, isolation=isolation, on_result=advance)


@app.command()
def perf(
    arch: str = typer.Option(
        DEFAULT_ARCH,
        "--arch",
        help="tiny-random, toy, sd15-arch, sd21-arch, sdxl-arch, sd3-arch, flux-arch, or a "
        "model folder (random-weight archs need no download).",
    ),
    resolution: str = typer.Option(
        "", "--resolution", "-r", help="Comma list of square sizes, e.g. 256,512. [default: the model's working size]"
    ),
    batch: str = typer.Option("1", "--batch", "-b", help="Comma list of images per PGD step, e.g. 1,2,4."),
    methods: str = typer.Option(
        "all",
        "--methods",
        "-m",
        help="Protections: 'all' or a comma list; advdm is always measured (every ratio is taken against it).",
    ),
    mode: str = typer.Option(
        "fair",
        "--mode",
        help="fair (weights frozen, target encoded once), reference (as the "
        "reference implementation runs: trainable, checkpointed UNet, "
        "target re-encoded and re-forwarded), reference-2enc (also its "
        "SDS loop's second encoder pass of Sep 2023), or a comma list; "
        "both = fair,reference.",
    ),
    reference_mode: bool = typer.Option(
        False, "--reference-mode", help="Measure the reference's way of running (same as --mode reference)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Weights dtype: float32, float16, bfloat16."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    steps: int = typer.Option(3, "--steps", help="Measured PGD steps per repeat (after warm-up)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed steps first (allocator, caches, compilation)."),
    repeats: int = typer.Option(3, "--repeats", help="Repeats of the measured steps; s/step is their median."),
    opt: str = typer.Option(
        "none",
        "--opt",
        help="Optimisation variants, comma list; '+' joins flags in one "
        "variant: none, channels-last, sdpa, classic-attn, bf16, fp16, "
        "vae-ckpt, unet-ckpt, compile; 'default' = this device's "
        "fastest correct set (cpu: channels-last, cuda: "
        "channels-last+bf16).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights and images."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="torch threads in each child; 0: torch's default "
        "(all cores). [default: 1 on CPU — steady ratios "
        "on a shared CPU; 0 on CUDA]",
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the rows (one object per method and configuration) to this JSON file."
    ),
    check: Path | None = typer.Option(
        None,
        "--check",
        help="Re-measure with this baseline's settings and exit 1 if a ratio regresses past its tolerance.",
    ),
    write_baseline: Path | None = typer.Option(
        None, "--write-baseline", help="Write the measured ratios as a baseline for --check."
    ),
    tolerance: str | None = typer.Option(
        None, "--tolerance", help="Baseline tolerances, e.g. time=0.35,memory=0.3,saved=0.02."
    ),
    note: str = typer.Option("", "--note", help="A note stored with --write-baseline (e.g. 'shared 2-core CPU')."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Seconds before one configuration is marked failed. [default: no limit]"
    ),
    isolation: str = typer.Option(
        "auto",
        "--isolation",
        help="How each configuration gets its fresh process: "
        "forkserver (CPU default: forked from a server that "
        "has imported torch) or subprocess (CUDA default).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the configurations and child commands; run nothing."),
    verbose_check: bool = typer.Option(
        False, "--show-all", help="With --check, print every ratio, not only those that regressed or improved."
    ),
    inject_delay: list[str] | None = typer.Option(
        None,
        "--inject-delay",
        hidden=True,
        help="TESTING ONLY: METHOD=SECONDS sleeps after each step of "
        "METHOD, to prove that --check fails on a slowed method.",
    ),
) -> None:
    """Time and memory of one PGD step of each protection, with ratios to AdvDM, per configuration.

    Each configuration runs in a fresh child process. Use --check benchmarks/baseline.json in CI.
    """
    from cloakbench.bench.perf import check as perf_check
    from cloakbench.bench.perf.optimisations import OptimisationError, parse_variants
    from cloakbench.bench.perf.runner import (
        ISOLATIONS,
        PerfError,
        expand_configs,
        parse_inject_delay,
        parse_modes,
        parse_sizes,
        resolve_methods,
        worker_command,
        write_json,
    )
    from cloakbench.core.registry import RegistryError

    try:
        baseline = perf_check.load_baseline(check) if check else None
        if baseline is not None:
            settings = dict(baseline["settings"])
            console.print(
                escape(
                    f"checking against {check}: measuring with the baseline's settings "
                    f"({settings['arch']}, {settings['resolutions']}px, batch {settings['batches']}, "
                    f"methods {','.join(settings['methods'])}, modes {','.join(settings['modes'])})"
                ),
                highlight=False,
                soft_wrap=True,
            )
        else:
            # --reference-mode alone means the reference's way only; with --mode both, both.
            modes = parse_modes(mode if not reference_mode or mode != "fair" else "reference")
            if reference_mode and "reference" not in modes:
                modes = parse_modes(",".join(modes + ["reference"]))
            settings = {
                "arch": arch,
                "resolutions": parse_sizes(resolution, "resolution") if resolution else [0],
                "batches": parse_sizes(batch, "batch"),
                "methods": resolve_methods(methods),
                "modes": modes,
                "optimisations": [v.label for v in parse_variants(opt, device)],
                "steps": steps,
                "warmup": warmup,
                "repeats": repeats,
                "dtype": dtype,
                "device": device,
                "seed": seed,
                # Two threads on a 2-core CPU that other jobs share made a tiny-random step up to
                # 40x slower (each parallel region waits for a descheduled thread); one thread did not.
                "threads": threads if threads is not None else (1 if device == "cpu" else 0),
            }
        if isolation not in ISOLATIONS:
            raise PerfError(f"--isolation must be one of {', '.join(ISOLATIONS)}")
        tolerances = perf_check.parse_tolerances(tolerance)
        delays = parse_inject_delay(inject_delay or [])
        configs = expand_configs(
            arch=settings["arch"],
            methods=settings["methods"],
            resolutions=settings["resolutions"],
            batches=settings["batches"],
            modes=settings["modes"],
            optimisations=settings["optimisations"],
            dtype=settings["dtype"],
            device=settings["device"],
            steps=settings["steps"],
            warmup=settings["warmup"],
            repeats=settings["repeats"],
            seed=settings["seed"],
            threads=settings["threads"],
        )
        if delays:
            unknown = sorted(set(delays) - set(settings["methods"]))
            if unknown:
                raise PerfError(f"--inject-delay names {', '.join(unknown)}, which is not measured here")
            from dataclasses import replace

            configs = [replace(c, inject_delay_s=delays.get(c.method, 0.0)) for c in configs]
    except (PerfError, RegistryError, OptimisationError) as error:
        raise user_error(str(error)) from None

    if dry_run:
        out = output_console()
        for config in configs:
            command = " ".join(worker_command(config, Path("RESULT.json"))[1:3]) + f" --config '{config.to_json()}'"
            out.print(escape(config.label()), highlight=False)
            out.print("  " + escape(command), highlight=False, soft_wrap=True)
        out.print(f"{len(configs)} configurations, each in a fresh child process", highlight=False)
        return

    rows = _measure_with_progress(configs, timeout, isolation, json_out)
    output_console().print(results_table(rows))
    for row in rows:
        if row.get("status") == "ok" and row.get("reference_over_fair_time") is not None and row["method"] == "advdm":
            console.print(
                f"advdm, reference way over fair way ({row['resolution']}px x{row['batch']}): time "
                f"{row['reference_over_fair_time']:.2f}x (CPU time "
                f"{_ratio(row.get('reference_over_fair_cpu_time'))}x, FLOPs "
                f"{_ratio(row.get('reference_over_fair_flops'))}x), memory "
                f"{_ratio(row['reference_over_fair_memory'])}x, saved for backward "
                f"{_ratio(row.get('reference_over_fair_saved'))}x",
                highlight=False,
                soft_wrap=True,
            )
    if json_out is not None:
        write_json(rows, json_out)
        console.print(f"wrote {len(rows)} rows to {json_out}", highlight=False)
    failed_rows = [r for r in rows if r.get("status") != "ok"]
    if write_baseline is not None:
        try:
            written = perf_check.build_baseline(rows, settings, tolerances, note=note)
        except PerfError as error:
            raise user_error(str(error)) from None
        write_json(written, write_baseline)
        console.print(f"wrote {len(written['ratios'])} ratios to {write_baseline}", highlight=False)
    if baseline is not None:
        findings = perf_check.check(rows, baseline)
        for finding in findings:
            if finding.status == "ok" and not verbose_check:
                continue
            style = {"regressed": "bold red", "missing": "bold red", "improved": "yellow"}.get(finding.status, "green")
            console.print(f"[{style}]{escape(finding.message())}[/]", highlight=False, soft_wrap=True)
        bad = perf_check.failed(findings)
        if bad:
            console.print(f"[bold red]{len(bad)} of {len(findings)} ratios regressed past tolerance[/]")
            raise typer.Exit(code=1)
        console.print(f"[green]all {len(findings)} ratios within tolerance of {escape(str(check))}[/]", soft_wrap=True)
        return
    if failed_rows:
        raise typer.Exit(code=1)
