"""The ``bench`` / ``cloakbench`` entry point: one Typer app, one module per verb."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="bench",
    help="cloakbench: which image protection really stops diffusion-based mimicry, and at what cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def user_error(message: str) -> typer.Exit:
    """Print a one-line error (no traceback) and return the exit to raise."""
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code=2)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Never reach a model hub: all weights come from local folders and caches.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


from cloakbench.cli import compare  # noqa: E402,F401  (registers the verb)
from cloakbench.cli import listing  # noqa: E402,F401
from cloakbench.cli import perf  # noqa: E402,F401
from cloakbench.cli import protect  # noqa: E402,F401  (bench protect)
from cloakbench.cli import models, report  # noqa: E402,F401  (bench models, bench report)
from cloakbench.cli import plot  # noqa: E402,F401  (bench plot)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
