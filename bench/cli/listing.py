"""``bench list``: what can be run, one line each."""

from __future__ import annotations

from enum import Enum

import typer
from rich.table import Table

from cloakbench.bench.cli.app import app


class Kind(str, Enum):
    protections = "protections"
    mimicry = "mimicry"
    metrics = "metrics"
    models = "models"
    all = "all"


def _table(title: str, rows: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("kind")
    table.add_column("description")
    for name, kind, description in rows:
        table.add_row(name, kind, description)
    return table


def _kinds() -> dict[str, list[str]]:
    """Every name a user can type -> the kinds that register it (``noise``: protection and purification)."""
    from cloakbench.metrics import METRICS
    from cloakbench.mimicry import MIMICRY
    from cloakbench.protections import PROTECTIONS

    kinds: dict[str, list[str]] = {}
    for registry, kind in ((PROTECTIONS, "protection"), (MIMICRY, "mimicry"), (METRICS, "metric")):
        for name in registry.names():
            kinds.setdefault(name, []).append(kind)
    return kinds


def _shared(name: str, kind: str, kinds: dict[str, list[str]]) -> str:
    """A hint for names several kinds share: ``--set`` needs the qualified form."""
    others = [k for k in kinds.get(name, []) if k != kind]
    return f" (also a {others[0]} name: --set {kind}:{name}.FIELD=...)" if others else ""


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph as one line: a description is never cut mid-sentence."""
    lines = []
    for line in (doc or "").strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def protection_description(cls, verbose: bool) -> str:
    """The plain sentence first; with ``--verbose`` the update rule (the docstring's first line) after it."""
    plain = cls.plain_description()
    maths = cls.description()
    return f"{plain} {maths}" if verbose and maths != plain else plain


@app.command("list")
def list_command(
    kind: Kind = typer.Argument(Kind.all, help="What to list."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Add each protection's update rule (the maths)."),
) -> None:
    """List registered protections, mimicry attacks and purifications, metrics, or models, with their kind.

    Each protection gets one plain sentence; --verbose adds its update rule. A name that
    two kinds share (noise is a protection and a purification) must be qualified in
    --set: protection:noise.eps=8 or mimicry:noise.sigma=0.1.
    """
    from rich.console import Console

    out = Console()
    kinds = _kinds()
    if kind in (Kind.protections, Kind.all):
        from cloakbench.protections import PROTECTIONS

        rows = [
            (
                n,
                "protection (analysis only)" if c.analysis_only else "protection",
                protection_description(c, verbose) + _shared(n, "protection", kinds),
            )
            for n, c in PROTECTIONS.items()
        ]
        out.print(_table("protections", rows))
    if kind in (Kind.mimicry, Kind.all):
        from cloakbench.mimicry import MIMICRY

        rows = [
            (
                n,
                "purification" if c.is_purification else f"attack (per {c.scope})",
                c.description() + _shared(n, "mimicry", kinds),
            )
            for n, c in MIMICRY.items()
        ]
        out.print(_table("mimicry attacks and purifications (compose as PURIFICATION+ATTACK)", rows))
    if kind in (Kind.metrics, Kind.all):
        from cloakbench.metrics import METRICS

        rows = [
            (n, f"metric: {c.describe_kind()}", c.description() + _shared(n, "metric", kinds))
            for n, c in METRICS.items()
        ]
        out.print(_table("metrics (full-reference, distribution, no-reference, identity)", rows))
    if kind in (Kind.models, Kind.all):
        from cloakbench.core.zoo import ZOO

        rows = [(n, "model", entry.description) for n, entry in ZOO.items()]
        rows.append(("PATH | owner/name", "model", "a local diffusers folder, or a hub id already in the local cache"))
        out.print(_table("models", rows))
