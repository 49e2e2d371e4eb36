"""``bench compare``: the grid of protections x attacks x images, resumable, with a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cloakbench.bench.cli.app import app, console, user_error
from cloakbench.bench.cli.options import (
    merged_overrides,
    merged_sweeps,
    parse_name_list,
    parse_shard,
    pick,
    read_config,
    with_reference_set,
)
from cloakbench.core.config import SEED_RANGE, check_seed, parse_int_list

DEFAULT_MODEL = "toy"


def _print_leaderboard(run_dir: Path, attacker_pool: str | None) -> None:
    """The run's leaderboard as a terminal table (the report's first screen, bench/cli/results.py)."""
    from cloakbench.bench.cli.report import parse_pool
    from cloakbench.bench.cli.results import leaderboard_table
    from cloakbench.reports.leaderboard import leaderboard
    from cloakbench.reports.run import RunFolderError, load_run

    try:
        run = load_run(run_dir)
        board = leaderboard(run, parse_pool(attacker_pool))
    except (RunFolderError, ValueError) as error:  # no rows yet (every cell failed): say so, do not crash
        console.print(f"no leaderboard: {error}", highlight=False, markup=False)
        return
    if board["rows"]:
        console.print(leaderboard_table(board, quick=run.quick))


@app.command()
def compare(
    methods: str | None = typer.Option(
        None,
        "--methods",
        "-m",
        help="Protections: 'all' or a comma list (see `bench list protections`). "
        "'none' (the clean reference) is always added. [default: all]",
    ),
    attacks: str | None = typer.Option(
        None,
        "--attacks",
        "-a",
        help="Mimicry attacks: 'all' (every attack, plus every purification "
        "followed by sdedit) or a comma list; PURIFICATION+ATTACK composes, "
        "e.g. jpeg+sdedit. [default: sdedit]",
    ),
    metrics: str | None = typer.Option(None, "--metrics", help="Metrics: 'all' or a comma list. [default: all]"),
    images: list[str] | None = typer.Option(
        None,
        "--images",
        "-i",
        help="Image folders, folders of category subfolders "
        "(DIR/<category>/*.png), manifest CSVs (path,prompt,category,"
        "mask), files, or 'samples' (photos shipped with scikit-image). "
        "A prompts.toml beside them maps categories to prompts. "
        "Repeatable. [default: samples]",
    ),
    reference_set: str | None = typer.Option(
        None,
        "--reference-set",
        help="Clean photos of the same subject, not protected, on which ASPL and FSMG train their "
        "surrogate (Anti-DreamBooth's set A). [default: none: they train on the images they protect]",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help=f"Model: {DEFAULT_MODEL} (shipped), tiny-random, a diffusers folder, "
        f"or a cached hub id. [default: {DEFAULT_MODEL}]",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run folder (resumed if it exists). [default: runs/compare]"
    ),
    device: str | None = typer.Option(None, "--device", help="torch device, e.g. cpu or cuda:0. [default: cpu]"),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, float16 or bfloat16. [default: float32]"),
    seed: int | None = typer.Option(None, "--seed", help="Run seed; every cell's seed derives from it. [default: 0]"),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Prompt for protections and attacks. [default: 'a photo']"
    ),
    set_items: list[str] | None = typer.Option(
        None,
        "--set",
        help="Override a setting: NAME.FIELD=VALUE, e.g. "
        "sdedit.strengths=0.3 or sds-.steps=50. A name that two "
        "kinds share needs its kind: protection:noise.eps=8, "
        "mimicry:noise.sigma=0.1 (see `bench list`). Repeatable.",
    ),
    sweep_items: list[str] | None = typer.Option(
        None,
        "--sweep",
        help="Make a setting an axis: NAME.FIELD=V1,V2,..., e.g. "
        "sds-.eps=4,8,16 (each value is its own configured "
        "instance; kind-qualified names as --set; a list-valued "
        "setting separates values by ';'). Repeatable.",
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Repeat every cell per run seed, e.g. 0,1,2 [default: --seed]"
    ),
    attack_model: list[str] | None = typer.Option(
        None,
        "--attack-model",
        help="Model(s) the attacks run on (transfer), repeatable or a comma list. [default: --model]",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML experiment file ([compare] options and [set.NAME] tables); flags override it."
    ),
    quick: bool = typer.Option(False, "--quick", help="Shrink every step count: a smoke run in seconds."),
    force: bool = typer.Option(False, "--force", help="Accept a changed plan for an existing run folder."),
    yes: bool = typer.Option(
        False, "--yes", help="Run a plan of 100,000 cells or more (refused without it: a sweep may explode the grid)."
    ),
    cell_timeout: float | None = typer.Option(
        None, "--cell-timeout", help="Seconds before a cell is marked failed(timeout). [default: no limit]"
    ),
    mask_dir: Path | None = typer.Option(
        None,
        "--mask-dir",
        help="Inpainting masks, matched by image name. [default: the dataset's own masks, else the inpaint attack's mask setting]",
    ),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Allow pickle weights (.bin/.ckpt), loaded with torch.load(weights_only=True) only.",
    ),
    deterministic: bool = typer.Option(False, "--deterministic", help="torch.use_deterministic_algorithms(True)."),
    batch_size: str | None = typer.Option(
        None,
        "--batch-size",
        help="Protect cells of one protection and model in batches: N images, or auto (as many as half "
        "the free memory holds, from the first cell's measured working set; docs/PERFORMANCE.md, "
        '"Batching"). Cell keys do not change. [default: 1, one image at a time]',
    ),
    shard: str = typer.Option("0/1", "--shard", help="Run only shard I of N (by image hash), for job arrays."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
    attacker_pool: str | None = typer.Option(
        None,
        "--attacker-pool",
        help="Attacks that count for the report's worst case, comma-separated (label or label@setting). [default: every attack]",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch (on a shared machine, fewer threads than cores avoids oversubscription). "
        "[default: torch's own (all cores) in this process; 1 per worker]",
    ),
    executor: str = typer.Option(
        "serial",
        "--executor",
        help="Who runs the cells: serial (this process), local "
        "(--workers processes here) or ray (a Ray cluster; "
        "pip install 'cloakbench[ray]'). See docs/SCALING.md.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Worker processes (local: default 2; ray: "
        "default one per GPU or --threads CPUs), each "
        "with --threads torch threads.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster to join (auto, or ray://HOST:10001); default: a private Ray on this machine.",
    ),
    gpus_per_worker: float | None = typer.Option(
        None, "--gpus-per-worker", help="Ray: GPUs per worker, e.g. 0.5 packs two per GPU [default: 1 on cuda]."
    ),
) -> None:
    """Run protections x mimicry attacks on images; record quality, time and memory; write a report.

    Resumable: rerun the same command and finished cells are reused.

    Exit status: 0 every cell done or unavailable by design (missing weights); 1 a cell
    failed (its rows are kept and the summary names it); 2 a usage error or bad input.
    """
    from cloakbench.bench.batching import parse_batch_size
    from cloakbench.bench.cli.options import parse_cell_timeout
    from cloakbench.bench.compare import run_compare
    from cloakbench.bench.executors import ExecutorError, executor_factory
    from cloakbench.bench.plan import PLAN_CELL_LIMIT
    from cloakbench.bench.spec import CompareSpec
    from cloakbench.bench.store import StoreError
    from cloakbench.core.config import ConfigError
    from cloakbench.core.devices import check_device
    from cloakbench.core.images import ImageError
    from cloakbench.core.ldm import ModelError
    from cloakbench.core.registry import RegistryError

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    try:
        file = read_config(config, "compare", flags=compare)
        parse_cell_timeout(pick(cell_timeout, file, "cell_timeout", None))  # refused before any work
        check_device(pick(device, file, "device", "cpu"))  # a GPU that is not there: one sentence, no cell run
        spec = CompareSpec(
            images=list(images) if images else list(file.get("images", ["samples"])),
            methods=pick(methods, file, "methods", "all"),
            attacks=pick(attacks, file, "attacks", "sdedit"),
            metrics=pick(metrics, file, "metrics", "all"),
            model=pick(model, file, "model", DEFAULT_MODEL),
            out=Path(pick(out, file, "out", "runs/compare")),
            device=pick(device, file, "device", "cpu"),
            dtype=pick(dtype, file, "dtype", "float32"),
            seed=check_seed(pick(seed, file, "seed", 0), "--seed"),
            prompt=pick(prompt, file, "prompt", "a photo"),
            quick=quick or bool(file.get("quick", False)),
            force=force,
            overrides=with_reference_set(
                merged_overrides(file, set_items or [], config), reference_set or file.get("reference_set")
            ),
            sweeps=merged_sweeps(file, sweep_items or []),
            seeds=parse_int_list(
                pick(seeds, file, "seeds", None), "--seeds", minimum=SEED_RANGE[0], maximum=SEED_RANGE[1]
            ),
            attack_models=parse_name_list(attack_model or file.get("attack_models", file.get("attack_model"))),
            cell_timeout_s=pick(cell_timeout, file, "cell_timeout", None),
            mask_dir=str(mask_dir) if mask_dir else file.get("mask_dir"),
            allow_pickle=allow_pickle,
            deterministic=deterministic,
            batch_size=parse_batch_size(pick(batch_size, file, "batch_size", 1)),
            shard=parse_shard(shard),
            write_report=report and attacker_pool is None,  # with a pool, the report is written below
            command=shlex.join(["bench"] + sys.argv[1:]),
        )
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
            transient=False,
        ) as progress:
            task = None
            warned: set = set()
            running: dict[str, str] = {}  # worker -> the cell it runs
            failed = 0

            def show_running() -> str:
                shown = " | ".join(f"{w}: {c}" for w, c in sorted(running.items()))
                return (f"[red]{failed} failed[/] " if failed else "") + shown

            def on_event(kind: str, info: dict) -> None:
                nonlocal task, failed
                if kind == "plan":
                    task = progress.add_task("cells", total=info["cells"], current="")
                    if info["skipped"]:
                        console.print(f"[yellow]{info['skipped']} input file(s) skipped (see the report)[/]")
                elif kind == "start" and task is not None:
                    running[info.get("worker", "main")] = " ".join(f"{v}" for v in info["cell"].values())
                    progress.update(task, current=show_running())
                elif kind == "worker" and info.get("state") == "capped":
                    console.print(f"[yellow]{info['message']}[/]", highlight=False)
                elif kind == "worker" and info.get("state") == "died":
                    running.pop(info["worker"], None)
                    console.print(
                        f"[yellow]worker {info['worker']} died ({info.get('how', '')}); a fresh worker "
                        "takes its place[/]",
                        highlight=False,
                    )
                elif kind in ("done", "reused", "failed", "unavailable") and task is not None:
                    failed += kind == "failed"
                    running.pop(str(info.get("worker", "")).split(" (")[0], None)
                    progress.update(task, current=show_running())
                    progress.advance(task)
                    if kind == "failed":
                        console.print(f"[red]failed[/] {info['cell']}: {info['reason']}", highlight=False)
                    elif kind == "unavailable" and info["cell"].get("attack") not in warned:
                        warned.add(info["cell"].get("attack"))
                        console.print(
                            f"[yellow]unavailable[/] {info['cell'].get('attack')}: {info['reason']}", highlight=False
                        )

            summary = run_compare(
                spec,
                on_event,
                executor_factory(
                    executor,
                    workers=workers,
                    threads=max(1, threads or 1),
                    ray_address=ray_address,
                    gpus_per_worker=gpus_per_worker,
                ),
                max_cells=None if yes else PLAN_CELL_LIMIT,
            )
        if report and attacker_pool is not None:  # the report's worst case over the chosen attackers
            from cloakbench.bench.cli.report import parse_pool
            from cloakbench.reports.html import write_report as write_html_report

            summary.report = write_html_report(spec.out, pool=parse_pool(attacker_pool))
    except (ConfigError, ImageError, ModelError, RegistryError, StoreError, ExecutorError, ValueError) as error:
        raise user_error(str(error)) from None
    console.print(
        f"[green]done[/] {summary.cells} cells: {summary.computed} computed, {summary.reused} reused from "
        f"earlier runs, {summary.failed} failed, {summary.unavailable} unavailable here; {len(summary.skipped)} input(s) skipped; "
        f"{summary.seconds:.1f} s",
        highlight=False,
    )
    for skipped in summary.skipped:
        console.print(f"  skipped {skipped.reason}", highlight=False, markup=False)
    console.print(f"rows: {summary.rows_csv}", highlight=False)
    _print_leaderboard(spec.out, attacker_pool)
    if summary.report:
        console.print(f"report: {summary.report}", highlight=False)
    if summary.failed:  # exit status 1: the rows are kept, the failed cells named
        for label, reason in summary.failed_cells:
            console.print(f"  failed {label}: {reason}", highlight=False, markup=False)
        console.print(
            f"[red]{summary.failed} cell(s) failed[/] (rows kept in {summary.rows_csv}); rerun the same "
            "command to retry them",
            highlight=False,
        )
        raise typer.Exit(code=1)
