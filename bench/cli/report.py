"""``bench report RUN``: re-render a run folder's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from cloakbench.cli.app import app, console, user_error


@app.command("report")
def report_command(run: Path = typer.Argument(..., help="Run folder (with rows.csv and manifest.json).")) -> None:
    """Write RUN/report.html from rows.csv, manifest.json and the artifacts alone."""
    from cloakbench.reports.html import write_report
    from cloakbench.reports.run import RunFolderError

    if not run.is_dir():
        raise user_error(f"{run} is not a folder")
    try:
        path = write_report(run)
    except RunFolderError as error:
        raise user_error(str(error)) from None
    console.print(f"report: {path}", highlight=False)
