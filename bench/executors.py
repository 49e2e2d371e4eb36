"""Executors: who runs the cells of a plan (docs/ARCHITECTURE.md, "Plan and execute").

An executor receives the cells of one stage as :class:`~cloakbench.execute.CellTask`
values (plain data) and yields one :class:`~cloakbench.execute.Outcome` per task, in any
order. It never writes the journal: the driver (:func:`cloakbench.compare.run_compare`)
is its only writer, so resume, ``--force``, the plan check and the lock behave the same
whatever runs the cells. Each worker loads the model once (:meth:`Workspace.open`) and
runs many cells with it.

- :class:`SerialExecutor`: this process, one cell after another (the default).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol

from cloakbench.core.images import IntakeResult
from cloakbench.execute import CellTask, Outcome, Workspace, run_cell
from cloakbench.plan import Components
from cloakbench.spec import CompareSpec

OnStart = Callable[[CellTask], None]


class Executor(Protocol):
    """Runs the tasks of one stage; yields their outcomes as they finish."""

    name: str

    def run(self, tasks: list[CellTask], on_start: OnStart) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs every cell in this process, in plan order. The model is loaded on the first cell
    that needs computing, so a run whose cells are all cached loads no model."""

    name = "serial"

    def __init__(self, spec: CompareSpec, components: Components, intake: IntakeResult):
        self.spec, self.components, self.intake = spec, components, intake
        self.workspace: Workspace | None = None

    def run(self, tasks: Iterable[CellTask], on_start: OnStart) -> Iterator[Outcome]:
        for task in tasks:
            if self.workspace is None:
                self.workspace = Workspace.open(self.spec, components=self.components, intake=self.intake)
            on_start(task)
            outcome = run_cell(self.workspace, task)
            outcome.worker = "main"
            yield outcome

    def close(self) -> None:
        self.workspace = None
