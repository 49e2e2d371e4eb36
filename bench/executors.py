"""Executors: who runs the cells of a plan (docs/ARCHITECTURE.md, "Plan and execute"; docs/SCALING.md).

An executor receives the cells of one stage as :class:`~cloakbench.bench.execute.CellTask`
values (plain data) and yields one :class:`~cloakbench.bench.execute.Outcome` per task, in any
order. It never writes the journal: the driver (:func:`cloakbench.bench.compare.run_compare`)
is its only writer, so resume, ``--force``, the plan check and the lock behave the same
whatever runs the cells. Each worker loads the model once (:meth:`Workspace.open`) and
runs many cells with it; workers write artifacts straight into the run folder's
content-addressed ``artifacts/`` and the driver checks every hash on receipt.

- :class:`SerialExecutor`: this process, one cell after another (the default).
- :class:`LocalPoolExecutor` (``--executor local --workers N``): N worker processes on
  this machine, started with the ``spawn`` context (torch and ``fork`` do not mix).
- :class:`RayExecutor` (``--executor ray``): Ray actors, one per GPU or CPU slot of a Ray
  cluster started with Ray's own tooling (the optional extra ``cloakbench[ray]``).

Both pool executors hand a worker one cell at a time, preferring a cell of the group
(model, protection) it ran last, so a worker keeps its attack model and a dead worker
loses one cell. A worker that dies mid-cell (killed, out of memory) has its cell run
again on a fresh worker, at most :data:`MAX_CELL_ATTEMPTS` times in all; a cell that
fails for its own reasons is a failed outcome from :func:`run_cell` and is never retried
here (the driver records it; the next resume retries failed cells, as with the serial
executor).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from typing import Any, Protocol

from cloakbench.bench.batching import BatchSizer, cell_group, take_batch
from cloakbench.bench.execute import CellTask, Outcome, Workspace, failure_outcome, run_cells
from cloakbench.bench.plan import Components
from cloakbench.bench.spec import CompareSpec
from cloakbench.core.images import IntakeResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """The task was handed to the worker of that name (the driver marks the cell running)."""

    task: CellTask
    worker: str


@dataclass(frozen=True)
class WorkerNote:
    """What a pool says of one of its workers: ``{"worker", "state": ready|running|idle|died, ...}``."""

    info: dict


#: What :meth:`Executor.run` yields, in order: the driver records each (runtime flow runs one way:
#: executor -> driver -> store, and the driver alone tells the CLI; docs/ARCHITECTURE.md).
ExecutorEvent = Started | WorkerNote | Outcome

#: How many times a cell is started when the worker running it dies each time (a
#: segfault, the kernel's OOM killer, SIGKILL): the cell is then recorded as failed.
MAX_CELL_ATTEMPTS = 3

EXECUTORS = ("serial", "local", "ray")


class ExecutorError(RuntimeError):
    """The executor cannot run as asked (Ray missing, no worker could load the model)."""


class Executor(Protocol):
    """Runs the tasks of one stage; yields their outcomes as they finish."""

    name: str

    def run(self, tasks: list[CellTask]) -> Iterator[ExecutorEvent]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs every cell in this process, in plan order, except that a batch (``--batch-size``,
    bench/batching.py) gathers the later cells of its group. The model is loaded on the first
    cell that needs computing, so a run whose cells are all cached loads no model."""

    name = "serial"

    def __init__(self, spec: CompareSpec, components: Components, intake: IntakeResult):
        self.spec, self.components, self.intake = spec, components, intake
        self.workspace: Workspace | None = None
        self.sizer = BatchSizer(spec.batch_size, spec.device)

    def run(self, tasks: Iterable[CellTask]) -> Iterator[ExecutorEvent]:
        pending = collections.deque(tasks)
        while pending:
            batch = take_batch(pending, self.sizer)
            if self.workspace is None:
                self.workspace = Workspace.open(self.spec, components=self.components, intake=self.intake)
            for task in batch:
                yield Started(task, "main")
            for task, outcome in zip(batch, run_cells(self.workspace, batch)):
                outcome.worker = f"main ({worker_device(self.spec.device)})"
                self.sizer.observe(cell_group(task), outcome.rows)
                yield outcome

    def close(self) -> None:
        self.workspace = None


def worker_device(device: str) -> str:
    """Where a worker computes, as a row's note names it: ``host cpu`` or ``host cuda:0``."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return f"{socket.gethostname()} cuda:{index} {torch.cuda.get_device_name(index)}"
    return f"{socket.gethostname()} cpu, {torch.get_num_threads()} thread(s)"


class _Queue:
    """Pending tasks by group, plan order kept inside each group."""

    def __init__(self, tasks: Iterable[CellTask]):
        self.groups: dict[tuple[str, str], collections.deque[CellTask]] = {}
        for task in tasks:
            self.groups.setdefault(cell_group(task), collections.deque()).append(task)

    def __bool__(self) -> bool:
        return any(self.groups.values())

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def put_back(self, task: CellTask) -> None:
        self.groups.setdefault(cell_group(task), collections.deque()).appendleft(task)

    def next_for(self, last_group: tuple[str, str] | None, sizer: BatchSizer) -> list[CellTask]:
        """The next batch of the worker's last group, else of the largest group left."""
        group = self.groups.get(last_group) if last_group else None
        if not group:
            group = max(self.groups.values(), key=len)
        return take_batch(group, sizer)


def _worker_setup(spec: CompareSpec, threads: int) -> None:
    """What a fresh worker process does before loading anything: threads, determinism, logs."""
    import torch

    torch.set_num_threads(max(1, threads))
    if spec.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(processName)s %(levelname)s %(name)s: %(message)s")


# -- one machine: a pool of processes ---------------------------------------------------
def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a job's share), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Seconds between a local worker's checks that its driver is still alive.
PARENT_CHECK_S = 1.0
#: What a worker's pipe raises once the driver's end is gone (the driver was killed).
DRIVER_GONE = (EOFError, BrokenPipeError, ConnectionResetError)


def _exit_when_orphaned(parent: int) -> None:
    """A daemon thread of a local worker: exit quietly once the driver ``parent`` is gone.

    A SIGKILLed driver cannot stop its workers (``daemon=True`` acts only on a normal exit), and a
    worker in a long cell would finish it for nobody; its parent id changes when it is orphaned.
    ``parent`` is the pid the driver gave at spawn: read here it could already be the reaper's.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def _pool_worker_main(connection, spec_data: dict, threads: int, name: str, driver_pid: int | None = None) -> None:
    """A local worker process: load the workspace once, then run the cells it is sent.

    When the driver is gone (its pipe closed or broken, or the worker orphaned: ``driver_pid``, the
    driver's pid taken when it started the worker, is no longer the parent), the worker exits
    quietly: no BrokenPipeError traceback from a process nobody waits for.
    """
    # Ctrl-C reaches the whole process group: the driver stops the workers (close), so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if driver_pid is not None:
        _exit_when_orphaned(driver_pid)
    try:
        _serve(connection, CompareSpec.from_dict(spec_data), threads, name)
    except DRIVER_GONE:
        return


def _serve(connection, spec: CompareSpec, threads: int, name: str) -> None:
    _worker_setup(spec, threads)
    try:
        workspace = Workspace.open(spec)
    except Exception as error:
        connection.send(("broken", f"{type(error).__name__}: {error}"))
        return
    device = worker_device(spec.device)
    connection.send(("ready", os.getpid(), device))
    while True:
        batch = connection.recv()
        if batch is None:
            return
        connection.send(("started", [task.cell.key for task in batch], os.getpid()))
        for outcome in run_cells(workspace, batch):
            outcome.worker = f"{name} ({device})"
            connection.send(("outcome", outcome))


class _PoolWorker:
    def __init__(self, context, spec: CompareSpec, threads: int, name: str):
        self.name = name
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_pool_worker_main,
            args=(child, spec.to_dict(), threads, name, os.getpid()),
            name=name,
            daemon=True,
        )
        self.process.start()
        child.close()
        self.ready = False
        self.gone = False
        self.tasks: list[CellTask] = []  # the batch it runs (empty: idle)
        self.last_group: tuple[str, str] | None = None
        self.pid = self.process.pid

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()


class _NoteTaker:
    """A pool's helpers note what happens to workers; :meth:`said` hands the notes to ``run``'s caller."""

    notes: list[WorkerNote]

    def note(self, info: dict) -> None:
        self.notes.append(WorkerNote(info))

    def said(self) -> Iterator[WorkerNote]:
        """The notes taken since the last call, in order."""
        while self.notes:
            yield self.notes.pop(0)


class LocalPoolExecutor(_NoteTaker):
    """``--executor local --workers N``: N processes on this machine, each with ``threads``
    torch threads, each loading the model once (docs/SCALING.md, "One machine").

    Workers start on the first stage that has work (a run whose cells are all cached
    starts none) and live until :meth:`close`, across stages. :meth:`run` yields a
    :class:`WorkerNote` when a worker is ready, starts a cell, goes idle or dies.
    """

    name = "local"

    def __init__(
        self,
        spec: CompareSpec,
        components: Components,
        intake: IntakeResult,
        *,
        workers: int = 2,
        threads: int = 1,
    ):
        if workers < 1:
            raise ExecutorError(f"--workers {workers}: give at least 1 worker")
        self.spec, self.workers_wanted, self.threads = spec, workers, threads
        self.sizer = BatchSizer(spec.batch_size, spec.device, workers=workers)
        self.notes: list[WorkerNote] = []  # said by the helpers below, yielded by run()
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_PoolWorker] = []
        self.started = 0
        self.broken_reason = ""
        self.deaths = 0
        self.startup_failures = 0
        self.capped_said = False

    def _spawn(self) -> _PoolWorker:
        worker = _PoolWorker(self.context, self.spec, self.threads, f"local-{self.started}")
        self.started += 1
        self.workers.append(worker)
        return worker

    def pool_size(self, cells: int) -> int:
        """The workers worth starting: ``--workers``, but no more than the cells to run (each worker
        loads torch and the model) nor than the machine's cores can give ``threads`` threads each."""
        cores = available_cores()
        return max(1, min(self.workers_wanted, cells, max(1, cores // self.threads)))

    def run(self, tasks: Iterable[CellTask]) -> Iterator[ExecutorEvent]:
        queue = _Queue(tasks)
        if not queue:
            return
        size = self.pool_size(len(queue))
        if size < self.workers_wanted and not self.capped_said:
            self.capped_said = True
            yield WorkerNote(
                {
                    "worker": "local",
                    "state": "capped",
                    "message": f"--workers {self.workers_wanted}: starting {size} worker(s), for "
                    f"{len(queue)} cell(s) to run on {available_cores()} core(s) at --threads {self.threads}",
                }
            )
        while len(self.workers) < size:
            self._spawn()
        attempts: collections.Counter[str] = collections.Counter()
        run_name = self.spec.out.name
        while queue or any(w.tasks for w in self.workers):
            for worker in self.workers:
                if worker.ready and not worker.tasks and queue:
                    batch = queue.next_for(worker.last_group, self.sizer)
                    worker.tasks, worker.last_group = batch, cell_group(batch[0])
                    for task in batch:
                        attempts[task.cell.key] += 1
                        yield Started(task, worker.name)
                    worker.connection.send(batch)
            if not self.workers:
                raise ExecutorError(f"no worker process could open the run: {self.broken_reason}")
            waitables = [w.connection for w in self.workers] + [w.process.sentinel for w in self.workers]
            wait_for(waitables, timeout=1.0)
            for worker in list(self.workers):
                outcomes = self._drain(worker)
                yield from self.said()
                yield from outcomes
                if worker.gone or (not worker.process.is_alive() and not worker.connection.poll()):
                    buried = list(self._bury(worker, queue, attempts, run_name))
                    yield from self.said()
                    yield from buried

    def _drain(self, worker: _PoolWorker) -> list[Outcome]:
        outcomes = []
        try:
            while worker.connection.poll():
                message = worker.connection.recv()
                kind = message[0]
                if kind == "ready":
                    worker.ready, worker.pid = True, message[1]
                    self.note({"worker": worker.name, "state": "ready", "device": message[2]})
                elif kind == "started":
                    self.note(
                        {
                            "worker": worker.name,
                            "state": "running",
                            "pid": message[2],
                            "cell": worker.tasks[0].cell.label if worker.tasks else {},
                        },
                    )
                elif kind == "outcome":
                    outcome = message[1]
                    for task in worker.tasks:
                        if task.cell.key == outcome.key:
                            self.sizer.observe(cell_group(task), outcome.rows)
                    worker.tasks = [task for task in worker.tasks if task.cell.key != outcome.key]
                    if not worker.tasks:
                        self.note({"worker": worker.name, "state": "idle"})
                    outcomes.append(outcome)
                elif kind == "broken":
                    self.broken_reason = message[1]
        except (EOFError, OSError):
            worker.gone = True  # the process ended (its pipe stays readable at EOF): run() buries it
        return outcomes

    def _bury(self, worker: _PoolWorker, queue: _Queue, attempts, run_name: str) -> Iterator[Outcome]:
        """A worker process ended: put its cell back (or fail it), start a replacement."""
        self.workers.remove(worker)
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        worker.connection.close()
        if not worker.ready:
            # It died before loading the run (an import error, a model it cannot load): a
            # replacement would most likely fail the same way, so the run stops after a few.
            self.startup_failures += 1
            reason = self.broken_reason or f"the process ended ({how}) before loading the model; see the log above"
            if self.startup_failures >= MAX_CELL_ATTEMPTS or (self.broken_reason and not self.workers):
                raise ExecutorError(f"the worker processes could not open the run: {reason}")
            self._spawn()  # it held no cell: cells go only to workers that are ready
            return
        self.deaths += 1
        log.warning("worker %s (pid %s) died (%s)", worker.name, worker.pid, how)
        self.note({"worker": worker.name, "state": "died", "how": how})
        for task in reversed(worker.tasks):  # the batch it held: each cell back in the queue (order kept), or failed
            if attempts[task.cell.key] >= MAX_CELL_ATTEMPTS:
                yield failure_outcome(
                    task.cell,
                    run_name,
                    f"error: the worker process running this cell died {attempts[task.cell.key]} "
                    f"times (last: {how}); see the log for the cause",
                    protect_model=self.spec.model,
                )
            else:
                queue.put_back(task)
        if queue or any(w.tasks for w in self.workers) or len(self.workers) == 0:
            self._spawn()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []


# -- a cluster: Ray actors ---------------------------------------------------------------
class _RayWorker:
    """A Ray actor holding one workspace. Ray restarts it (and retries its current call) if its
    process dies; a restart runs this constructor again, reloading the model."""

    def __init__(self, spec_data: dict, threads: int, name: str):
        self.spec = CompareSpec.from_dict(spec_data)
        _worker_setup(self.spec, threads)
        self.name = name
        self.workspace = Workspace.open(self.spec)
        self.device = worker_device(self.spec.device)

    def describe(self) -> tuple[int, str]:
        return os.getpid(), self.device

    def run(self, batch: list[CellTask]) -> list[Outcome]:
        outcomes = run_cells(self.workspace, batch)
        for outcome in outcomes:
            outcome.worker = f"{self.name} ({self.device})"
        return outcomes


def ray_module():
    """``ray``, or an :class:`ExecutorError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "--executor ray needs Ray: install the extra with `pip install 'cloakbench[ray]'` (or `pip install ray`)"
        ) from None
    return ray


class RayExecutor(_NoteTaker):
    """``--executor ray [--ray-address ADDR] [--workers N]``: Ray actors as workers
    (docs/SCALING.md, "A cluster").

    Connects to the cluster at ``address`` (``auto``: the one ``ray start`` made on this
    node; ``None``: a private local Ray, stopped on :meth:`close`). One actor per GPU
    (``num_gpus=gpus_per_worker``, 1 by default on ``--device cuda``: a fraction packs
    several workers on a GPU when a method's peak memory, as ``bench perf`` measures it,
    allows) or per ``threads`` CPUs. Ray restarts an actor whose process dies
    (``max_restarts``) and retries the call it was running (``max_task_retries``); a cell
    whose worker keeps dying is recorded as failed once the retries are spent, and a new
    actor takes the slot.
    """

    name = "ray"

    def __init__(
        self,
        spec: CompareSpec,
        components: Components,
        intake: IntakeResult,
        *,
        workers: int | None = None,
        threads: int = 1,
        address: str | None = None,
        gpus_per_worker: float | None = None,
        max_restarts: int = MAX_CELL_ATTEMPTS - 1,
    ):
        self.ray = ray_module()
        self.spec, self.threads, self.address = spec, max(1, threads), address
        self.workers_wanted = workers
        cuda = str(spec.device).startswith("cuda")
        self.gpus_per_worker = (1.0 if cuda else 0.0) if gpus_per_worker is None else gpus_per_worker
        if not 0 <= self.gpus_per_worker <= 64:
            raise ExecutorError(f"--gpus-per-worker {gpus_per_worker}: give a number of GPUs in [0, 64], e.g. 0.5")
        self.max_restarts = max_restarts
        self.sizer = BatchSizer(spec.batch_size, spec.device, workers=workers or 1)
        self.notes: list[WorkerNote] = []
        self.actors: list[tuple[str, Any]] = []
        self.owns_ray = False
        self.started = 0

    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=max(os.cpu_count() or 1, (self.workers_wanted or 1) * self.threads),
                    include_dashboard=False,
                    log_to_driver=False,
                )
                self.owns_ray = True
        if self.workers_wanted is None:
            resources = ray.cluster_resources()
            slots = (
                resources.get("GPU", 0) / self.gpus_per_worker
                if self.gpus_per_worker
                else resources.get("CPU", 1) / self.threads
            )
            self.workers_wanted = max(1, int(slots))
        self.actor_class = ray.remote(
            num_cpus=self.threads,
            num_gpus=self.gpus_per_worker,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
        )(_RayWorker)

    def _spawn(self) -> tuple[str, Any]:
        name = f"ray-{self.started}"
        self.started += 1
        actor = (name, self.actor_class.remote(self.spec.to_dict(), self.threads, name))
        self.actors.append(actor)
        return actor

    def worker_pids(self) -> dict[str, int]:
        """Each live actor's process id (tests kill one)."""
        found = self.ray.get([actor.describe.remote() for _, actor in self.actors])
        return {name: pid for (name, _), (pid, _) in zip(self.actors, found)}

    def run(self, tasks: Iterable[CellTask]) -> Iterator[ExecutorEvent]:
        queue = _Queue(tasks)
        if not queue:
            return
        if not self.actors:
            self._connect()
            while len(self.actors) < (self.workers_wanted or 1):
                self._spawn()
        ray, run_name = self.ray, self.spec.out.name
        running: dict[Any, tuple[tuple[str, Any], list[CellTask]]] = {}
        last_group: dict[str, tuple[str, str]] = {}
        idle = list(self.actors)
        attempts: collections.Counter[str] = collections.Counter()
        while queue or running:
            while idle and queue:
                name, actor = idle.pop(0)
                batch = queue.next_for(last_group.get(name), self.sizer)
                last_group[name] = cell_group(batch[0])
                for task in batch:
                    attempts[task.cell.key] += 1
                    yield Started(task, name)
                running[actor.run.remote(batch)] = ((name, actor), batch)
            finished, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            yield from self.said()
            for reference in finished:
                worker, batch = running.pop(reference)
                try:
                    outcomes = ray.get(reference)
                except ray.exceptions.RayActorError as error:
                    # Ray spent its restarts and retries on this batch: record it, replace the actor.
                    log.warning("worker %s died running a cell, retries spent: %s", worker[0], error)
                    self.note({"worker": worker[0], "state": "died", "how": "retries spent"})
                    self.actors.remove(worker)
                    worker = self._spawn()
                    outcomes = [
                        failure_outcome(
                            task.cell,
                            run_name,
                            f"error: the Ray worker running this cell died {self.max_restarts + 1} "
                            "times; see the Ray logs for the cause",
                            protect_model=self.spec.model,
                        )
                        for task in batch
                    ]
                except ray.exceptions.RayError as error:
                    reason = str(error).splitlines()[0]
                    # Ray's memory monitor killed the worker (the node ran low on memory, maybe
                    # because of other jobs): Ray restarts the actor but does not retry the call,
                    # so the cells go back in the queue, up to the same limit as a death.
                    if isinstance(error, ray.exceptions.OutOfMemoryError) and all(
                        attempts[task.cell.key] < MAX_CELL_ATTEMPTS for task in batch
                    ):
                        log.warning("worker %s was killed by Ray's memory monitor; cells rerun: %s", worker[0], reason)
                        self.note({"worker": worker[0], "state": "died", "how": "Ray's memory monitor"})
                        for task in reversed(batch):
                            queue.put_back(task)
                        idle.append(worker)
                        continue
                    status = "oom" if isinstance(error, ray.exceptions.OutOfMemoryError) else "error"
                    outcomes = [
                        failure_outcome(task.cell, run_name, f"{status}: Ray: {reason}", protect_model=self.spec.model)
                        for task in batch
                    ]
                idle.append(worker)
                yield from self.said()
                for task, outcome in zip(batch, outcomes):
                    self.sizer.observe(cell_group(task), outcome.rows)
                    yield outcome

    def close(self) -> None:
        for _, actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors = []
        if self.owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self.owns_ray = False


#: Seconds to wait for a TCP answer from ``--ray-address`` before refusing it.
RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``--ray-address HOST:PORT`` (or ``ray://HOST:PORT``) where nothing answers within ``timeout``.

    ``ray.init`` retries an address with no listener for minutes; one TCP connect, bounded, says
    the same in seconds. ``auto`` (the cluster ``ray start`` made on this node) is left to Ray.
    """
    if address == "auto":
        return
    target = address.removeprefix("ray://").rstrip("/")
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ExecutorError(
            f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT, e.g. ray://head-node:10001"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ExecutorError(
            f"--ray-address {address}: no Ray cluster answers there ({reason}, waited at most {timeout:g} s); "
            "start it with `ray start --head` or give the head node's address"
        ) from None


def executor_factory(
    kind: str,
    *,
    workers: int | None = None,
    threads: int = 1,
    ray_address: str | None = None,
    gpus_per_worker: float | None = None,
):
    """The factory ``run_compare`` calls for ``--executor KIND`` (``serial``, ``local``, ``ray``)."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"--executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ExecutorError(f"--workers {workers}: give at least 1 worker")
    if kind != "ray" and (ray_address or gpus_per_worker is not None):
        raise ExecutorError("--ray-address and --gpus-per-worker go with --executor ray")
    if kind == "serial":
        if workers not in (None, 1):
            raise ExecutorError(
                f"--workers {workers} needs --executor local or ray (the serial executor runs one cell at a time)"
            )
        return SerialExecutor
    if kind == "local":
        return lambda spec, components, intake: LocalPoolExecutor(
            spec, components, intake, workers=workers or 2, threads=threads
        )
    if ray_address:
        check_ray_address(ray_address)  # nothing listening there: one sentence now, not retries forever
    ray_module()  # say now, before any work, that Ray is missing
    return lambda spec, components, intake: RayExecutor(
        spec,
        components,
        intake,
        workers=workers,
        threads=threads,
        address=ray_address,
        gpus_per_worker=gpus_per_worker,
    )
