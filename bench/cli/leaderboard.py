"""``bench leaderboard run | verify | render | images``: a protocol's entries, their check, the static site.

docs/LEADERBOARD.md says what each does and how to submit an entry. The run goes through the
one compare driver (:mod:`cloakbench.bench.leaderboard`); the site is :mod:`cloakbench.reports.site`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from cloakbench.bench.cli.app import app, console, user_error

leaderboard_app = typer.Typer(
    help="A versioned protocol's entries: run them, verify one, render the static site.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(leaderboard_app, name="leaderboard")

DEFAULT_PROTOCOL = "v1-toy"


def _errors():
    from cloakbench.bench.executors import ExecutorError
    from cloakbench.bench.leaderboard import EntryError
    from cloakbench.bench.protocol import ProtocolError
    from cloakbench.bench.store import StoreError
    from cloakbench.core.config import ConfigError
    from cloakbench.core.images import ImageError
    from cloakbench.core.ldm import ModelError
    from cloakbench.core.registry import RegistryError
    from cloakbench.reports.run import RunFolderError

    return (
        ConfigError,
        EntryError,
        ExecutorError,
        ImageError,
        ModelError,
        ProtocolError,
        RegistryError,
        RunFolderError,
        StoreError,
        ValueError,
    )


def _progress():
    """A one-line progress report of the driver's events (the compare CLI's bar is for one grid, this is plainer)."""
    counts = {"done": 0, "reused": 0, "failed": 0, "unavailable": 0, "total": 0}

    def on_event(kind: str, info: dict) -> None:
        if kind == "plan":
            counts["total"] = info["cells"]
            console.print(f"{info['cells']} cells on {info['images']} image(s)", highlight=False)
        elif kind in ("done", "reused", "failed", "unavailable"):
            counts[kind] += 1
            finished = sum(counts[k] for k in ("done", "reused", "failed", "unavailable"))
            if kind == "failed":
                console.print(f"[red]failed[/] {info['cell']}: {info['reason']}", highlight=False)
            if kind != "reused" and (finished % 10 == 0 or finished == counts["total"]):
                console.print(f"  {finished}/{counts['total']} cells", highlight=False)

    return on_event


def _executor(executor: str, workers: int | None, threads: int | None):
    from cloakbench.bench.executors import executor_factory

    return executor_factory(executor, workers=workers, threads=max(1, threads or 1))


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))


def _parse_reported(items: list[str] | None) -> dict[str, float]:
    """``--reported 8=0.41`` (budget=value) -> ``{"eps=8": 0.41}`` after the protocol is read."""
    found: dict[str, float] = {}
    for item in items or []:
        budget, _, value = item.partition("=")
        try:
            found[budget.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"--reported {item!r}: expected BUDGET=VALUE, e.g. 8=0.41") from None
    return found


EXECUTOR_HELP = "Who runs the cells: serial, local (--workers processes) or ray (docs/SCALING.md)."


@leaderboard_app.command("run")
def run(
    protocol: str = typer.Option(
        DEFAULT_PROTOCOL, "--protocol", "-p", help="Protocol id (protocols/ID.toml) or a TOML file."
    ),
    methods: str | None = typer.Option(
        None,
        "--methods",
        "-m",
        help="Protections, comma-separated, or 'all' (every publishable one). [default: make demo's list: every "
        "protection but the fine-tuning family]",
    ),
    protected: Path | None = typer.Option(
        None,
        "--protected",
        help="Score another tool's files instead: DIR holds one sub-folder per budget (DIR/4/, DIR/8/, DIR/16/) "
        "of the protocol images it protected (see `bench leaderboard images`).",
    ),
    tool: str = typer.Option("", "--tool", help="With --protected: the tool's name and version (names the entry)."),
    reported: list[str] | None = typer.Option(
        None, "--reported", help="The submitter's own headline figure at a budget, BUDGET=VALUE (repeatable)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Entries folder. [default: leaderboard/PROTOCOL]"),
    work: Path | None = typer.Option(
        None, "--work", help="The run folder (resumed if it exists). [default: runs/leaderboard/PROTOCOL]"
    ),
    draft: bool = typer.Option(False, "--draft", help="Run a draft (unreleased) protocol."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch. [default: torch's own]"),
    executor: str = typer.Option("serial", "--executor", help=EXECUTOR_HELP),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (local, ray)."),
) -> None:
    """Run a protocol for protections (or another tool's files); write one entry JSON per protection.

    Resumable: rerun the same command and finished cells are reused; a longer --methods list
    keeps every finished cell.
    """
    from cloakbench.bench.leaderboard import default_methods, run_protocol
    from cloakbench.bench.protocol import load_protocol
    from cloakbench.core.devices import check_device

    _set_threads(threads)
    try:
        check_device(device)
        loaded = load_protocol(protocol, allow_draft=draft)
        if protected is not None and methods is not None:
            raise typer.BadParameter("give --methods or --protected, not both")
        if protected is not None and not tool:
            raise typer.BadParameter("--protected needs --tool NAME (the entry is named after the tool)")
        if methods is None:
            names = default_methods()
        else:
            from cloakbench.protections import PROTECTIONS, publishable_protections

            names = PROTECTIONS.resolve(methods, all_names=publishable_protections())
        claimed = {loaded.budget_setting(float(b)): v for b, v in _parse_reported(reported).items()}
        summary, written = run_protocol(
            loaded,
            names,
            work or Path("runs/leaderboard") / loaded.id,
            out or Path("leaderboard") / loaded.id,
            protected=protected,
            tool=tool,
            reported=claimed,
            executor_factory=_executor(executor, workers, threads),
            on_event=_progress(),
            device=device,
            command=shlex.join(["bench"] + sys.argv[1:]),
        )
    except _errors() as error:
        raise user_error(str(error)) from None
    console.print(
        f"[green]done[/] {summary.cells} cells: {summary.computed} computed, {summary.reused} reused, "
        f"{summary.failed} failed; {summary.seconds:.1f} s",
        highlight=False,
    )
    for path in written:
        console.print(f"entry: {path}", highlight=False)
    if summary.failed:
        console.print(f"[red]{summary.failed} cell(s) failed[/]: rerun the same command to retry them", highlight=False)
        raise typer.Exit(code=1)


@leaderboard_app.command("verify")
def verify(
    entry: Path = typer.Argument(..., help="The entry JSON."),
    sample: int = typer.Option(1, "--sample", help="How many of the protocol's images to recompute (seeded)."),
    all_images: bool = typer.Option(False, "--all", help="Recompute every image's cells."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image sample."),
    work: Path | None = typer.Option(None, "--work", help="Scratch run folder. [default: runs/verify/ENTRY]"),
    draft: bool = typer.Option(False, "--draft", help="Verify an entry of a draft protocol."),
    device: str = typer.Option("cpu", "--device", help="torch device."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch. [default: torch's own, all cores]"
    ),
    executor: str = typer.Option("serial", "--executor", help=EXECUTOR_HELP),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (local, ray)."),
) -> None:
    """Check an entry: its images' hashes, its figures against its cells, and a seeded sample of recomputed cells.

    Exit status 0 when it agrees, 1 when anything disagrees (each difference is named), 2 when refused.
    """
    from cloakbench.bench.leaderboard import verify_entry

    _set_threads(threads)
    try:
        verdict = verify_entry(
            entry,
            work or Path("runs/verify") / entry.stem,
            sample=None if all_images else sample,
            seed=seed,
            executor_factory=_executor(executor, workers, threads),
            on_event=_progress(),
            device=device,
            allow_draft=draft,
        )
    except _errors() as error:
        raise user_error(str(error)) from None
    console.print(
        f"recomputed {verdict.cells_checked} cell(s), {verdict.values_checked} value(s) on "
        f"{', '.join(verdict.images_recomputed) or 'no image'}; published PNGs identical: "
        f"{verdict.png_matches}/{verdict.png_total}",
        highlight=False,
    )
    if verdict.agrees:
        console.print(f"[green]agrees[/] {entry}: figures match its cells and the recomputed cells", highlight=False)
        return
    for line in verdict.disagreements[:50]:
        console.print(f"  differs: {line}", highlight=False, markup=False)
    console.print(f"[red]disagrees[/] {entry}: {len(verdict.disagreements)} difference(s)", highlight=False)
    raise typer.Exit(code=1)


@leaderboard_app.command("render")
def render(
    entries: list[Path] = typer.Argument(..., help="Entry JSON files or folders of them (leaderboard/v1-toy)."),
    out: Path = typer.Option(Path("site"), "--out", "-o", help="The site's folder."),
) -> None:
    """Write the static site: one sortable, filterable table per protocol and a page per entry (works from file://)."""
    from cloakbench.reports.site import SiteError, render_site

    try:
        index = render_site(entries, out)
    except SiteError as error:
        raise user_error(str(error)) from None
    console.print(f"site: {index}", highlight=False)


@leaderboard_app.command("images")
def images(
    protocol: str = typer.Option(DEFAULT_PROTOCOL, "--protocol", "-p", help="Protocol id or TOML file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the protocol's images to."),
    draft: bool = typer.Option(False, "--draft", help="A draft protocol."),
) -> None:
    """Write the protocol's images at the working size (8-bit PNG), for another tool to protect."""
    from cloakbench.bench.leaderboard import write_sample_images
    from cloakbench.bench.protocol import load_protocol

    try:
        loaded = load_protocol(protocol, allow_draft=draft)
        folder = write_sample_images(loaded, sorted(loaded.image_hashes), out)
    except _errors() as error:
        raise user_error(str(error)) from None
    console.print(f"{len(loaded.image_hashes)} image(s) in {folder}", highlight=False)
    # How to make the images of a built-in entry with bench protect elsewhere (docs/LEADERBOARD.md).
    budgets = " ".join(f"{b:g}" for b in loaded.budgets)
    budget = "--eps B" if loaded.budget_field == "eps" else f"--set METHOD.{loaded.budget_field}=B"
    settings = " --set METHOD.FIELD=VALUE (the protocol's [protections.settings])" if loaded.protection_settings else ""
    console.print(
        f"a built-in entry's images: for B in {budgets}: bench protect {folder} --method METHOD --model "
        f"{loaded.model} {budget} --seed {loaded.seeds[0]} --compare-seeds{settings} --out DIR/B; then bench "
        f"leaderboard run --protocol {protocol}{' --draft' if draft else ''} --protected DIR --tool NAME",
        highlight=False,
        markup=False,
    )
