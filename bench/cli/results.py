"""The leaderboard as a terminal table: what ``bench compare`` prints when it finishes.

The same rows, ranking, marks and headline as the report's first screen
(:func:`cloakbench.reports.leaderboard.leaderboard`), so the terminal and ``report.html`` agree.
It keeps to the columns that decide (worst case, its interval and attacker, the mean over
attackers, the first imperceptibility metric, time and memory) so it reads on an 80-column
terminal; every other column is in the report.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table


def _mean(cell: dict[str, Any]) -> str:
    text = escape(str(cell.get("text", "—"))) + (" ≈" if cell.get("mark") else "")
    return f"[bold]{text}[/]" if cell.get("best") else text


def _with_interval(cell: dict[str, Any], below: str = "") -> str:
    """The mean, and under it (dim) its interval with n and, for the worst case, the attacker."""
    lines = [_mean(cell)]
    detail = [escape(cell["ci"]), f"n={cell.get('n')}"] if cell.get("ci") else []
    lines += [f"[dim]{text}[/]" for text in (*detail, escape(below)) if text]
    return "\n".join(lines)


def leaderboard_table(board: dict[str, Any], *, quick: bool = False) -> Table:
    """A rich table of the ranked leaderboard, the headline as its caption."""
    title = "Leaderboard" + (" [yellow](--quick: a smoke test, not a measurement)[/]" if quick else "")
    table = Table(
        title=title,
        caption=escape(board.get("headline") or ""),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
    )
    table.add_column("# protection", no_wrap=True)
    table.add_column("budget", no_wrap=True)
    strength = board.get("strength_metric")
    if strength:
        arrow = board["strength_direction"][:1]
        table.add_column(f"worst {escape(board['strength_label'])} {arrow}", no_wrap=True)
        table.add_column("mean", no_wrap=True)
    impercept = board["impercept_columns"][:1]
    for column in impercept:
        table.add_column(escape(f"{column['label'].split(' (')[0]} {column['direction'][:1]}"), no_wrap=True)
    table.add_column("time/img", justify="right", no_wrap=True)
    memory = board["memory_labels"][-1:]
    for label in memory:
        table.add_column(escape(label.replace("working memory", "work. mem.")), justify="right", no_wrap=True)
    for row in board["rows"]:
        rank = f"{row['rank']}. " if row.get("rank") != "" else ""
        cells = [rank + escape(row["protection"]), escape(row["setting"] or "—")]
        if strength:
            cells += [_with_interval(row["worst"], row["worst"].get("attacker", "")), _with_interval(row["mean"])]
        cells += [_with_interval(cell) for cell in row["impercept"][: len(impercept)]]
        cells.append(escape(row["time"]["text"]))
        cells += [escape(cell["text"]) for cell in row["memory"][-len(memory) :]] if memory else []
        table.add_row(*cells, end_section=True)
    return table
