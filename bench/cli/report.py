"""``bench report RUN [RUN2 …]``: re-render a run's self-contained HTML report, or merge several runs into one."""

from __future__ import annotations

from pathlib import Path

import typer

from cloakbench.bench.cli.app import app, console, user_error


def parse_pool(text: str | None) -> list[str] | None:
    """``--attacker-pool a,b`` -> ``["a", "b"]``; ``None`` (every attack in the run) when not given."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise user_error("--attacker-pool is empty: name attacks of the run, e.g. --attacker-pool sdedit,jpeg+sdedit")
    return names


ATTACKER_POOL_HELP = (
    "Attacks that count for the worst case, comma-separated: a label (sdedit, jpeg+sdedit) "
    "takes all its settings, label@setting one. [default: every attack in the run]"
)


@app.command("report")
def report_command(
    runs: list[Path] = typer.Argument(
        ..., help="Run folder(s) with rows.csv and manifest.json; several are merged into one report (needs --out)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for report.html. [default: the run folder]"),
    attacker_pool: str | None = typer.Option(None, "--attacker-pool", help=ATTACKER_POOL_HELP),
) -> None:
    """Write report.html from rows.csv, manifest.json and the artifacts alone."""
    from cloakbench.reports.html import write_report
    from cloakbench.reports.leaderboard import AttackerPoolError
    from cloakbench.reports.run import RunFolderError

    for run in runs:
        if not run.is_dir():
            raise user_error(f"{run} is not a folder: give a run folder written by `bench compare`")
    if len(runs) > 1 and out is None:
        raise user_error("merging several runs needs --out DIR for the merged report (it belongs to no single run)")
    if out is not None and out.exists() and not out.is_dir():
        raise user_error(f"{out} is a file: give --out a folder")
    try:
        path = write_report(runs[0], out_dir=out, pool=parse_pool(attacker_pool), merge=runs[1:])
    except (RunFolderError, AttackerPoolError) as error:
        raise user_error(str(error)) from None
    console.print(f"report: {path}", highlight=False)
