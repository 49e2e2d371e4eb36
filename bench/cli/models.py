"""``bench models``: which weights are here, which are missing, and where each missing file goes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cloakbench.bench.cli.app import app

FILES_TITLE = "pretrained files (never downloaded; put them here)"
#: Below this many columns the files are stacked, one block each (their paths and how-tos are long).
WIDE = 120


def state_text(ready: bool) -> str:
    return "[green]ready[/]" if ready else "[red]missing[/]"


def stacked_weights(status):
    """One weights file as a block: name, status and users on a line; file and how-to below, wrapped."""
    from rich.console import Group

    spec = status.spec
    head = f"[bold]{spec.name}[/]  {state_text(status.ready)}  used by {', '.join(spec.used_by)}"
    body = Table.grid(padding=(0, 1))
    body.add_column(no_wrap=True, style="dim", min_width=8)
    body.add_column(overflow="fold")
    where = str(status.path) if status.ready else status.expected
    body.add_row("  file", where + (f" (override: {spec.env_var})" if spec.env_var else ""))
    if not status.ready:
        body.add_row("  get it", spec.how_to_get)
    return Group(head, body)


def metric_status() -> list[tuple[str, bool, str]]:
    """``(metric, ready, why)`` for every registered metric with its default config."""
    from cloakbench.metrics import METRICS

    return [(name, *cls().availability()) for name, cls in METRICS.items()]


def model_status() -> list[tuple[str, bool, str]]:
    """``(model, ready, detail)``: the zoo's models, then diffusers folders in the HF cache."""
    from cloakbench.core import weights
    from cloakbench.core.ldm import ModelError
    from cloakbench.core.zoo import ZOO

    rows = []
    for name, entry in ZOO.items():
        if entry.weights == "random" and entry.unavailable is not None and (reason := entry.unavailable()):
            rows.append((name, False, reason))
            continue
        if entry.weights == "random":
            rows.append((name, True, "built from its config with seeded random weights (no download)"))
            continue
        # A shipped folder (this project trains and ships it): a preflight, no load.
        try:
            entry.facts()
            kind = " (pixel-space DDPM)" if entry.family == "pixel-ddpm" else ""
            rows.append((name, True, f"{entry.folder}{kind}"))
        except ModelError as error:
            rows.append((name, False, str(error)))
    cache = weights.hf_hub_cache()
    if cache.is_dir():
        # Cheap scan: one glob per cached repo, no file is opened.
        for repo in sorted(cache.glob("models--*")):
            snapshots = sorted(repo.glob("snapshots/*/model_index.json"))
            if snapshots:
                repo_id = repo.name[len("models--") :].replace("--", "/")
                rows.append((repo_id, True, f"diffusers model in the Hugging Face cache ({snapshots[-1].parent})"))
    return rows


@app.command("models")
def models_command() -> None:
    """Show which metric weights and models are present, and where to put the missing ones."""
    from cloakbench.core import weights

    out = Console()
    statuses = weights.status()
    if out.width >= WIDE:
        files = Table(title=FILES_TITLE, title_justify="left", show_lines=True)
        for column in ("weights", "status", "used by", "file and place", "how to get it"):
            files.add_column(column, overflow="fold")
        for status in statuses:
            spec = status.spec
            where = str(status.path) if status.ready else status.expected
            override = f"\n(override: {spec.env_var})" if spec.env_var else ""
            files.add_row(
                spec.name,
                state_text(status.ready),
                ", ".join(spec.used_by),
                where + override,
                "" if status.ready else spec.how_to_get,
            )
        out.print(files)
    else:  # a narrow terminal: one block per file, each text on full width (never 15-character columns)
        out.print(FILES_TITLE)
        for status in statuses:
            out.print(stacked_weights(status))

    metric_table = Table(title="metrics", title_justify="left")
    for column in ("metric", "status", "reason"):
        metric_table.add_column(column, overflow="fold")
    metrics = metric_status()
    for name, ready, why in metrics:
        short = why.split(" This machine cannot download")[0]  # the how-to is in the table above
        metric_table.add_row(name, "[green]ready[/]" if ready else "[red]unavailable[/]", "" if ready else short)
    out.print(metric_table)

    model_table = Table(title="models", title_justify="left")
    for column in ("model", "status", "detail"):
        model_table.add_column(column, overflow="fold")
    for name, ready, detail in model_status():
        model_table.add_row(name, "[green]ready[/]" if ready else "[red]missing[/]", detail)
    out.print(model_table)
    if not all(ready for _, ready, _ in metrics):
        out.print("Metrics marked unavailable are recorded as such in runs (no number); the run goes on.")
