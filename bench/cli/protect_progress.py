"""What ``bench protect`` shows while it works: pictures x tiles x steps, an estimate, the ETA.

On a terminal, a rich progress bar over every PGD step of every tile batch of every picture,
with the current picture, its tiles done, the elapsed time and the time remaining (rich's
estimate from the recent speed). Elsewhere (a log file, CI) one line per picture, so a log
stays readable. Either way, once the first step has been measured, one line gives the
estimated total: each picture's units (batches x steps, :func:`cloakbench.bench.fullsize.progress_units`)
times the first step's time, scaled by the pixels a step of that picture processes.

Before that — while the model loads, which takes longer than a step — the bar already shows
an ETA marked ``≈``, from a rate measured earlier (:mod:`cloakbench.bench.protect_rates`):
an :class:`EarlyEstimate` counting down until the measured speed takes over.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


@dataclass
class Job:
    """One picture under one method: its label, units of progress and pixels per unit (for the estimate)."""

    label: str
    units: int
    tiles: int
    steps: int | None
    pixels_per_unit: int


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def estimate_seconds(jobs: list[Job], seconds_per_unit: float, pixels_per_unit: int) -> float:
    """Total time of ``jobs`` from one measured unit of ``pixels_per_unit`` pixels (time ∝ pixels)."""
    return sum(job.units * seconds_per_unit * job.pixels_per_unit / max(1, pixels_per_unit) for job in jobs)


@dataclass
class EarlyEstimate:
    """The work's total time from an earlier rate, and since when it counts down (``time.perf_counter``)."""

    seconds: float
    source: str
    since: float = field(default_factory=time.perf_counter)

    def remaining(self) -> float:
        return max(0.0, self.seconds - (time.perf_counter() - self.since))


def clock(seconds: float) -> str:
    """``0:01:08``: rich's time-remaining format."""
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


class TimeLeftColumn(ProgressColumn):
    """Rich's time remaining once it has a speed; before, the early estimate marked ``≈`` (or ``-:--:--``)."""

    # A second is the display's resolution; rich redraws the column at most this often.
    max_refresh = 0.5

    def __init__(self, progress: ProtectProgress):
        super().__init__()
        self.owner = progress

    def render(self, task) -> Text:
        if task.time_remaining is not None and task.completed:
            return Text(clock(task.time_remaining), style="progress.remaining")
        early = self.owner.early
        if early is None:
            return Text("-:--:--", style="progress.remaining")
        return Text("≈" + clock(early.remaining()), style="progress.remaining")


class ProtectProgress:
    """The progress display of one ``bench protect`` run (a context manager)."""

    def __init__(self, console: Console, *, terminal: bool | None = None):
        self.console = console
        self.jobs: list[Job] = []
        self.terminal = console.is_terminal if terminal is None else terminal
        self.total = 0
        self.progress: Progress | None = None
        self.task = None
        self.current: Job | None = None
        self.index = 0
        self.started = 0.0
        self.unit_started = 0.0
        self.estimated = False
        self.tiles_done = 0
        self.early: EarlyEstimate | None = None

    def __enter__(self) -> ProtectProgress:
        if self.terminal:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("steps {task.fields[tiles]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeLeftColumn(self),
                console=self.console,
                # The lines printed above the bar stay; the bar itself goes when done (the
                # loading phase's bar would otherwise stay on screen above the work's).
                transient=True,
            )
            self.progress.__enter__()
            # No total yet (the model is loading): a pulsing bar until set_jobs.
            self.task = self.progress.add_task("starting", total=None, tiles="")
        return self

    def set_jobs(self, jobs: list[Job]) -> None:
        """The pictures to protect, once planned: the bar's total is their units."""
        self.jobs = jobs
        self.total = sum(job.units for job in jobs)
        if self.progress is not None:
            self.progress.update(self.task, total=max(1, self.total), completed=0)

    def expect(self, jobs: list[Job], early: EarlyEstimate | None) -> None:
        """The pictures to protect, known before the model loads, and the early ETA (``None``: no rate yet).

        The next display of the same run is given the same estimate, so its countdown continues.
        """
        self.set_jobs(jobs)
        self.early = early

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def print(self, *args, **kwargs) -> None:
        """A line above the bar (or plain, without one)."""
        (self.progress.console if self.progress is not None else self.console).print(*args, **kwargs)

    def status(self, text: str) -> None:
        """What is happening before the first picture (loading the model)."""
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        else:
            self.console.print(text, highlight=False, markup=False)

    def begin(self, job: Job) -> None:
        self.index += 1
        self.current, self.tiles_done = job, 0
        self.started = self.unit_started = time.perf_counter()
        label = f"[{self.index}/{len(self.jobs)}] {job.label}"
        if self.progress is not None:
            self.progress.update(self.task, description=label, tiles=self._tiles_text())
        else:
            steps = f" x {job.steps} steps" if job.steps else ""
            self.console.print(
                f"{label}: {job.tiles} tile(s){steps} ({job.units} units) ...", highlight=False, markup=False
            )

    def _tiles_text(self) -> str:
        job = self.current
        return f"(tiles {self.tiles_done}/{job.tiles})" if job else ""

    def hook(self, event: str, info: dict) -> None:
        """The ``on_progress`` of :func:`cloakbench.bench.fullsize.protect_full_size`."""
        job = self.current
        if job is None:
            return
        if event == "batch":
            self.tiles_done = int(info["tiles_done"])
            if job.steps is None:
                self._advance()
        elif event == "step":
            self._advance()
        if self.progress is not None:
            self.progress.update(self.task, tiles=self._tiles_text())

    def _advance(self) -> None:
        now = time.perf_counter()
        if not self.estimated:
            self.estimated = True
            first = now - self.unit_started
            remaining = self.jobs[self.index - 1 :]
            total = estimate_seconds(remaining, first, self.current.pixels_per_unit)
            self.print(
                f"estimate: about {duration(total)} in all ({self.total} units; the first took {first:.2f} s, "
                "setup included)",
                highlight=False,
                markup=False,
            )
        if self.progress is not None:
            self.progress.advance(self.task)

    def end(self, line: str) -> None:
        """The picture is done: its one line (saved file, budget, time)."""
        self.print(line, highlight=False, markup=False)
        self.current = None

    def skipped(self, line: str) -> None:
        self.print(line, highlight=False, markup=False)
