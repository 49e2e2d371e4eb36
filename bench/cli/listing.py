"""``bench list``: what can be run, one line each."""

from __future__ import annotations

from enum import Enum

import typer
from rich.table import Table

from cloakbench.cli.app import app


class Kind(str, Enum):
    protections = "protections"
    mimicry = "mimicry"
    metrics = "metrics"
    models = "models"
    all = "all"


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, description in rows:
        table.add_row(name, description)
    return table


@app.command("list")
def list_command(kind: Kind = typer.Argument(Kind.all, help="What to list.")) -> None:
    """List registered protections, mimicry attacks and purifications, metrics, or models."""
    from rich.console import Console

    out = Console()
    if kind in (Kind.protections, Kind.all):
        from cloakbench.protections import PROTECTIONS

        rows = [(n, ("(analysis only) " if c.analysis_only else "") + c.description()) for n, c in PROTECTIONS.items()]
        out.print(_table("protections", rows))
    if kind in (Kind.mimicry, Kind.all):
        from cloakbench.mimicry import MIMICRY

        rows = [(n, ("(purification) " if c.is_purification else "") + c.description()) for n, c in MIMICRY.items()]
        out.print(_table("mimicry attacks and purifications (compose as PURIFICATION+ATTACK)", rows))
    if kind in (Kind.metrics, Kind.all):
        from cloakbench.metrics import METRICS

        rows = [(n, c.description()) for n, c in METRICS.items()]
        out.print(_table("metrics", rows))
    if kind in (Kind.models, Kind.all):
        from cloakbench.core.models import MODELS

        rows = [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in MODELS.items()]
        rows.append(("PATH | owner/name", "a local diffusers folder, or a hub id already in the local cache"))
        out.print(_table("models", rows))
