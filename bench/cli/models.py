"""``bench models``: which weights are here, which are missing, and where each missing file goes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cloakbench.bench.cli.app import app


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
    files = Table(title="pretrained files (never downloaded; put them here)", title_justify="left", show_lines=True)
    for column in ("weights", "status", "used by", "file and place", "how to get it"):
        files.add_column(column, overflow="fold")
    for status in weights.status():
        spec = status.spec
        state = "[green]ready[/]" if status.ready else "[red]missing[/]"
        where = str(status.path) if status.ready else status.expected
        override = f"\n(override: {spec.env_var})" if spec.env_var else ""
        files.add_row(
            spec.name, state, ", ".join(spec.used_by), where + override, "" if status.ready else spec.how_to_get
        )
    out.print(files)

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
