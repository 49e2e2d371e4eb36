"""``bench plot RUN --out DIR --format pdf,svg,png``: the report's figures as files, its tables as CSV and LaTeX."""

from __future__ import annotations

from pathlib import Path

import typer

from cloakbench.bench.cli.app import app, console, user_error
from cloakbench.bench.cli.report import ATTACKER_POOL_HELP, parse_pool


@app.command("plot")
def plot_command(
    run: Path = typer.Argument(..., help="Run folder (with rows.csv and manifest.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the figure and table files (created)."),
    formats: str = typer.Option(
        "pdf,png", "--format", "-f", help="Figure formats, comma-separated: pdf, svg, png (pdf and svg are vector)."
    ),
    attacker_pool: str | None = typer.Option(None, "--attacker-pool", help=ATTACKER_POOL_HELP),
) -> None:
    """Write every figure of RUN's report in each format, and every table as CSV and LaTeX."""
    from cloakbench.reports.export import ExportError, export, parse_formats
    from cloakbench.reports.leaderboard import AttackerPoolError
    from cloakbench.reports.run import RunFolderError, load_run

    if not run.is_dir():
        raise user_error(f"{run} is not a folder: give a run folder written by `bench compare`")
    try:
        chosen = parse_formats(formats)
        written = export(load_run(run), out, chosen, parse_pool(attacker_pool))
    except (RunFolderError, AttackerPoolError, ExportError) as error:
        raise user_error(str(error)) from None
    console.print(
        f"{len(written.figures)} figure file(s), {len(written.tables)} table file(s) in {out}", highlight=False
    )
    for why in written.missing:
        console.print(f"  not drawn: {why}", highlight=False)
