"""``bench perf``: the cost of one PGD step of each protection, as ratios to AdvDM.

The paper being measured: Xue et al., "Toward effective protection against diffusion
based mimicry through score distillation" (ICLR 2024, arXiv 2311.12832) claims that
SDS "doubles the speed of protection and reduces memory occupation by half" against
AdvDM (Liang et al., ICML 2023, arXiv 2302.04578). docs/PERFORMANCE.md says how it is
measured here:

- every configuration (method × architecture × resolution × batch × mode × options)
  runs in a **fresh child process** (forked from a server that has imported torch on
  CPU, ``python -m cloakbench.bench.perf.worker`` on CUDA) so that its peak RSS, CUDA peaks and
  allocator state are its own;
- wall-clock per step after warm-up, median over repeats (``cuda.synchronize`` first),
  and the process's CPU time per step (steadier than wall-clock on a shared CPU);
- FLOPs of one step (``torch.utils.flop_counter``: matmul, convolution, attention,
  forward and backward) — deterministic, so a regression in work shows on any machine;
- peak CUDA memory allocated and reserved; on CPU the peak RSS growth over the RSS
  right after loading (the kernel's high-water mark is reset there);
- the bytes autograd saves for backward during one step (parameters excluded), the
  device-independent measure of what a method keeps alive;
- ``mode``: ``fair`` (all weights frozen, target encoded once) or ``reference`` (the
  way the reference implementation runs: UNet weights trainable and gradient-checkpointed,
  target re-encoded and passed through the UNet every step, its graph freed at once) —
  the protection's ``reference_mode`` setting; ``reference-2enc`` adds the second encoder
  pass of the reference's SDS loop at the paper's time (``reference_double_encode``).
  Each row records ``settings.unet_gradient_checkpointing``.

Absolute times only mean something on one machine in one run; ratios are what the
regression check (:mod:`cloakbench.bench.perf.check`) keeps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: ``reference``: as the reference runs today; ``reference-2enc``: also its SDS loop's second
#: encoder pass of the paper's submission time (``reference_double_encode``,
#: protections/reference_costs.py). ``both`` means fair and reference.
MODES = ("fair", "reference", "reference-2enc")
REFERENCE_MODES = ("reference", "reference-2enc")
DENOMINATOR = "advdm"
#: Fields that identify the group inside which ratios to AdvDM are taken.
GROUP_FIELDS = ("arch", "resolution", "batch", "mode", "dtype", "device", "optimisations")
SCHEMA_VERSION = 1


class PerfError(RuntimeError):
    """A bad request to ``bench perf`` (the message is meant for the user)."""


@dataclass(frozen=True)
class PerfConfig:
    """One configuration, measured in one fresh child process.

    ``resolution`` 0 means the model's working size. ``steps`` steps are timed after
    ``warmup`` untimed ones, ``repeats`` times; ``inject_delay_s`` adds a sleep to every
    step (only to prove that the regression check can fail).
    """

    arch: str
    method: str
    resolution: int = 0
    batch: int = 1
    mode: str = "fair"
    dtype: str = "float32"
    device: str = "cpu"
    steps: int = 3
    warmup: int = 1
    repeats: int = 3
    optimisations: str = "none"
    seed: int = 0
    threads: int = 0
    inject_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PerfError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.steps < 1 or self.repeats < 1 or self.warmup < 0 or self.batch < 1 or self.resolution < 0:
            raise PerfError(f"steps, repeats and batch must be >= 1 and warmup >= 0: {self}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PerfConfig:
        return cls(**json.loads(text))

    def label(self) -> str:
        res = self.resolution or "native"
        return (
            f"{self.method} [{self.mode}] {self.arch} {res}px x{self.batch} {self.dtype} {self.device}"
            f"{'' if self.optimisations == 'none' else ' opt=' + self.optimisations}"
        )


# -- the request -----------------------------------------------------------------------
def parse_sizes(text: str | Iterable[int], what: str) -> list[int]:
    """``--resolution``/``--batch``: positive integers (:func:`cloakbench.core.config.parse_int_list`);
    resolutions in multiples of 8, the VAE's downsampling."""
    from cloakbench.core.config import ConfigError, parse_int_list

    try:
        values = parse_int_list(text, f"--{what}", minimum=1)
    except ConfigError as error:
        raise PerfError(str(error)) from None
    if not values:
        raise PerfError(f"--{what} {text!r}: expected positive integers, e.g. 256,512")
    if what == "resolution" and any(v % 8 for v in values):
        raise PerfError(f"--resolution {text!r}: sides must be multiples of 8 (the VAE downsamples by 8)")
    return values


def parse_modes(text: str) -> list[str]:
    modes: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "both":
            modes.extend(("fair", "reference"))
        elif part in MODES:
            modes.append(part)
        elif part:
            raise PerfError(
                f"--mode {text!r}: use fair, reference, reference-2enc, or a comma list (both = fair,reference)"
            )
    modes = [m for m in MODES if m in modes]
    if not modes:
        raise PerfError("--mode: nothing to measure")
    return modes


def resolve_methods(spec: str) -> list[str]:
    """Validated method names, AdvDM first (every ratio needs it); ``all`` = every PGD protection."""
    from cloakbench.protections import PROTECTIONS, publishable_protections

    steppable = [n for n in publishable_protections() if has_step(PROTECTIONS.get(n))]
    names = PROTECTIONS.resolve(spec, all_names=steppable)
    skipped = [n for n in names if not has_step(PROTECTIONS.get(n))]
    if skipped:
        raise PerfError(f"{', '.join(skipped)} has no PGD step to time; leave it out of --methods")
    if DENOMINATOR not in names:
        if DENOMINATOR not in PROTECTIONS:
            raise PerfError(f"{DENOMINATOR} is not registered, and every ratio is taken against it")
        log.info("adding %s: every ratio is taken against it", DENOMINATOR)
    return [DENOMINATOR] + [n for n in names if n != DENOMINATOR]


def has_step(cls: type) -> bool:
    """Whether a protection exposes the engine's step API (``prepare`` / ``step``)."""
    return callable(getattr(cls, "prepare", None)) and callable(getattr(cls, "step", None))


def expand_configs(
    *,
    arch: str,
    methods: list[str],
    resolutions: list[int],
    batches: list[int],
    modes: list[str],
    optimisations: list[str],
    **common: Any,
) -> list[PerfConfig]:
    """Every configuration, ordered so that each ratio's pair is measured close in time."""
    configs = []
    for resolution in resolutions:
        for batch in batches:
            for opt in optimisations:
                for mode in modes:
                    for method in methods:
                        configs.append(
                            PerfConfig(
                                arch=arch,
                                method=method,
                                resolution=resolution,
                                batch=batch,
                                mode=mode,
                                optimisations=opt,
                                **common,
                            )
                        )
    return configs


def parse_inject_delay(items: Iterable[str]) -> dict[str, float]:
    """``["sds-=0.5"]`` -> ``{"sds-": 0.5}`` (test-only: slows a method down on purpose)."""
    delays: dict[str, float] = {}
    for item in items:
        name, sep, seconds = item.rpartition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value < 0:
            raise PerfError(f"--inject-delay {item!r}: expected METHOD=SECONDS, e.g. sds-=0.5")
        delays[name.strip()] = value
    return delays


# -- running children ------------------------------------------------------------------
def worker_command(config: PerfConfig, out_path: Path) -> list[str]:
    return [sys.executable, "-m", "cloakbench.bench.perf.worker", "--config", config.to_json(), "--out", str(out_path)]


#: Modules a forked child would otherwise import itself (~5 s idle, 15 s on a busy CPU).
PRELOAD = ("cloakbench.bench.perf.preload",)
ISOLATIONS = ("auto", "forkserver", "subprocess")


def run_config(config: PerfConfig, *, timeout_s: float | None = None, isolation: str = "auto") -> dict[str, Any]:
    """Measure one configuration in a fresh child process; a failure becomes a row with ``status=failed``.

    ``forkserver`` (the default on CPU under Linux) forks each child from a server that
    has already imported torch, diffusers and the protections: still one new process
    per configuration, with its own memory peaks, but without paying the imports each
    time. ``subprocess`` starts ``python -m cloakbench.bench.perf.worker`` from scratch; it is the
    default for CUDA, which must not be initialised in a process that is forked from.
    A script that calls this with ``forkserver`` needs the ``if __name__ == "__main__":``
    guard: multiprocessing re-imports the main module in each child.
    """
    if isolation not in ISOLATIONS:
        raise PerfError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    if isolation == "auto":
        isolation = "forkserver" if config.device == "cpu" and sys.platform.startswith("linux") else "subprocess"
    row = _run_forked(config, timeout_s) if isolation == "forkserver" else _run_subprocess(config, timeout_s)
    row["isolation"] = isolation
    return row


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _run_subprocess(config: PerfConfig, timeout_s: float | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cloakbench-perf-") as tmp:
        out_path = Path(tmp) / "result.json"
        root = str(Path(__file__).resolve().parents[2])
        try:
            done = subprocess.run(
                worker_command(config, out_path),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=_child_environment(),
                cwd=root,
            )
        except subprocess.TimeoutExpired:
            return failed_row(config, f"timed out after {timeout_s:.0f} s")
        if done.returncode == 0 and out_path.exists():
            return json.loads(out_path.read_text())
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-12:]
        return failed_row(config, _exit_reason(done.returncode) + (": " + " | ".join(tail) if tail else ""))


def _exit_reason(code: int | None) -> str:
    reason = f"child exited with {code}"
    if code is not None and (code < 0 or code == 137):
        reason += " (killed: out of memory?)"
    return reason


_FORKSERVER = None


def _forkserver_context():
    global _FORKSERVER  # noqa: PLW0603 - one fork server per process, started on first use
    if _FORKSERVER is None:
        import multiprocessing

        for key, value in _child_environment().items():  # the server inherits the environment it starts in
            os.environ.setdefault(key, value)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        _FORKSERVER = context
    return _FORKSERVER


def _forked_child(config_json: str, connection) -> None:
    import traceback

    from cloakbench.bench.perf.worker import measure_json

    try:
        connection.send(("ok", measure_json(config_json)))
    except BaseException as error:
        tail = traceback.format_exc().strip().splitlines()[-6:]
        connection.send(("failed", f"{type(error).__name__}: {error} | " + " | ".join(tail)))
    finally:
        connection.close()


def _run_forked(config: PerfConfig, timeout_s: float | None) -> dict[str, Any]:
    context = _forkserver_context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_forked_child, args=(config.to_json(), sender), name="bench-perf-child")
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            child.kill()
            child.join()
            return failed_row(config, f"timed out after {timeout_s:.0f} s")
        status, payload = receiver.recv()
    except EOFError:  # the child died without a word (killed, out of memory)
        child.join()
        return failed_row(config, _exit_reason(child.exitcode))
    finally:
        receiver.close()
    child.join()
    if status == "ok":
        return json.loads(payload)
    return failed_row(config, payload)


def failed_row(config: PerfConfig, error: str) -> dict[str, Any]:
    row = dataclasses.asdict(config)
    row.update(status="failed", error=error, reference_mode=config.mode in REFERENCE_MODES)
    return row


def measure(
    configs: list[PerfConfig],
    *,
    timeout_s: float | None = None,
    isolation: str = "auto",
    on_result: Callable[[PerfConfig, dict], None] | None = None,
) -> list[dict[str, Any]]:
    """Run each configuration in its own child, one at a time (never in parallel: they share the CPU)."""
    rows = []
    for config in configs:
        log.info("measuring %s", config.label())
        row = run_config(config, timeout_s=timeout_s, isolation=isolation)
        rows.append(row)
        if on_result is not None:
            on_result(config, row)
    add_ratios(rows)
    return rows


# -- ratios ----------------------------------------------------------------------------
def _ratio(numerator: Any, denominator: Any) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return float(numerator) / float(denominator)


def group_key(row: dict, *, without: tuple[str, ...] = ()) -> tuple:
    return tuple(row.get(f) for f in GROUP_FIELDS if f not in without)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Fill each ok row's ratios in place.

    - ``*_ratio_to_advdm``: against AdvDM in the same group (architecture, resolution,
      batch, mode, dtype, device, options) — the paper's claim is about these;
    - ``reference_over_fair_*``: this method run the reference's way over the fair way;
    - ``*_vs_none``: this option set against no options (same method and mode).
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    advdm = {group_key(r): r for r in ok if r["method"] == DENOMINATOR}
    by_mode = {(r["method"], group_key(r, without=("mode",)), r["mode"]): r for r in ok}
    by_opt = {(r["method"], group_key(r, without=("optimisations",)), r["optimisations"]): r for r in ok}
    for row in ok:
        base = advdm.get(group_key(row))
        row["time_ratio_to_advdm"] = _ratio(row["s_per_step"], base and base["s_per_step"])
        row["cpu_time_ratio_to_advdm"] = _ratio(row.get("cpu_s_per_step"), base and base.get("cpu_s_per_step"))
        row["memory_ratio_to_advdm"] = _ratio(row["attack_bytes"], base and base["attack_bytes"])
        row["saved_ratio_to_advdm"] = _ratio(row["saved_bytes"], base and base["saved_bytes"])
        row["flops_ratio_to_advdm"] = _ratio(row.get("flops_per_step"), base and base.get("flops_per_step"))
        fair = by_mode.get((row["method"], group_key(row, without=("mode",)), "fair"))
        if row["mode"] in REFERENCE_MODES and fair is not None:
            row["reference_over_fair_time"] = _ratio(row["s_per_step"], fair["s_per_step"])
            row["reference_over_fair_cpu_time"] = _ratio(row.get("cpu_s_per_step"), fair.get("cpu_s_per_step"))
            row["reference_over_fair_memory"] = _ratio(row["attack_bytes"], fair["attack_bytes"])
            row["reference_over_fair_saved"] = _ratio(row["saved_bytes"], fair["saved_bytes"])
            row["reference_over_fair_flops"] = _ratio(row.get("flops_per_step"), fair.get("flops_per_step"))
        plain = by_opt.get((row["method"], group_key(row, without=("optimisations",)), "none"))
        if row["optimisations"] != "none" and plain is not None:
            row["time_vs_none"] = _ratio(row["s_per_step"], plain["s_per_step"])
            row["cpu_time_vs_none"] = _ratio(row.get("cpu_s_per_step"), plain.get("cpu_s_per_step"))
            row["memory_vs_none"] = _ratio(row["attack_bytes"], plain["attack_bytes"])
            row["saved_vs_none"] = _ratio(row["saved_bytes"], plain["saved_bytes"])


# -- provenance ------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on; absolute times mean nothing without it."""
    import torch

    description: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    try:
        description["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            description["memory_bytes"] = int(handle.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        description.update(
            gpu=props.name,
            gpu_memory_bytes=int(props.total_memory),
            cuda=torch.version.cuda,
            gpu_count=torch.cuda.device_count(),
        )
    return description


# -- summaries -------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def write_json(rows: list[dict[str, Any]] | dict[str, Any], path: Path) -> Path:
    """The rows as a JSON list (one object per method and configuration), or a baseline, written atomically."""
    from cloakbench.core.io import write_atomic

    path = Path(path)
    write_atomic(path, (json.dumps(rows, indent=1, sort_keys=True) + "\n").encode())
    return path
