"""The ``bench`` / ``cloakbench`` entry point: one Typer app, one module per verb.

Exit status (docs/RELIABILITY.md, "Errors and exit codes"): 0 when every cell is done or
unavailable by design; 1 when any cell failed (the rows are kept and the summary names
the cells) or on an internal error; 2 for a usage error or a bad input file. A user's
mistake or a broken file is one sentence naming the file or setting and what to do; the
traceback only with ``bench --debug``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import sys

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import TyperException

EXIT_HELP = (
    "Exit status: 0 every cell done (or unavailable by design); 1 a cell failed (rows kept) or an "
    "internal error; 2 a usage error or a bad input. --debug shows tracebacks."
)

console = Console(stderr=True)
_state = {"debug": False}


def describe_failure(error: BaseException) -> str | None:
    """One sentence for an exception a user can act on, or ``None`` for a bug."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" while writing {error.filename}" if error.filename else ""
        return (
            f"the disk is full{where}; free some space (or choose another --out) and rerun the same "
            "command: finished work is kept"
        )
    if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
        return (
            "the disk is full (the run journal could not be written); free some space and rerun the same "
            "command: finished work is kept"
        )
    if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
        return "the run journal is locked by another process; wait for it to finish or use another --out"
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
        return (
            f"a run journal is damaged ({error}); move RUN/journal.sqlite aside and rerun the same command "
            "to recompute into a fresh journal"
        )
    if isinstance(error, (NotADirectoryError, FileExistsError)):
        return f"{error.filename} is a file where a folder is needed; give --out a folder path"
    if isinstance(error, PermissionError):
        return f"permission denied on {error.filename}; choose a folder you can write to, or fix its permissions"
    if isinstance(error, IsADirectoryError):
        return f"{error.filename} is a folder where a file is needed"
    if isinstance(error, OSError) and error.filename:  # read-only disk, I/O error, a path gone mid-run
        return f"{error.filename}: {error.strerror or error}; check the path and the disk, then rerun the same command"
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":  # torch's CUDA OOM too
        return (
            "out of memory; lower --max-pixels (bench protect: tiles take over sooner) or --batch-size, "
            "or close other programs"
        )
    return None


class ClearErrorsGroup(TyperGroup):
    """Turns a user's mistake or a broken file into one sentence; ``--debug`` keeps the traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # usage errors and exits: Typer reports them
            raise
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: rerun the same command to resume", highlight=False)
            raise typer.Exit(code=130) from None
        except Exception as error:
            if _state["debug"]:
                raise
            sentence = describe_failure(error)
            if sentence is not None:
                raise user_error(sentence) from None
            console.print(
                f"[bold red]internal error:[/] {error.__class__.__name__}: {error} (a bug in cloakbench; "
                "rerun with `bench --debug ...` for the traceback and report it)",
                markup=True,
                highlight=False,
            )
            raise typer.Exit(code=1) from None


app = typer.Typer(
    name="bench",
    cls=ClearErrorsGroup,
    help="cloakbench: which image protection really stops diffusion-based mimicry, and at what cost. " + EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help text is plain text: with rich markup, "[compare]", "cloakbench[ray]" and "[default: all]"
    # in a help string were read as style tags and vanished (#27). Errors still use markup (console.print).
    rich_markup_mode=None,
)


def user_error(message: str) -> typer.Exit:
    """Print a one-line error (no traceback) and return the exit to raise."""
    from rich.markup import escape

    # The message is plain text: "[set.sdedit]" or "[compare]" must print as written, not as markup.
    # soft_wrap: the terminal wraps the sentence; rich would break a long path mid-word.
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error instead of its one-sentence summary."
    ),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # Never reach a model hub: all weights come from local folders and caches.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


from cloakbench.bench.cli import (  # noqa: E402,F401  (bench models, bench report)
    check,
    compare,
    leaderboard,
    listing,
    models,
    perf,
    plot,
    protect,
    report,
    train_protector,
)


def main() -> None:
    app()


if __name__ == "__main__":
    # ``python -m cloakbench.bench.cli.app``: this file runs as ``__main__``, but the commands
    # registered themselves on the imported module's ``app``; run that one.
    from cloakbench.bench.cli.app import main as registered_main

    sys.exit(registered_main())
