"""The regression check of ``bench perf``: a committed baseline of cost RATIOS, with tolerances.

Absolute seconds and bytes change with the machine and its load; ratios measured in one
run on one machine do not (docs/PERFORMANCE.md). A baseline (``benchmarks/baseline.json``)
records the settings it was measured with and, for each ratio, its value and a relative
tolerance, in the spirit of pytest-benchmark's ``--benchmark-compare-fail=min:5%``.
Every stored ratio is written so that *a rise is a regression*:

- ``time`` / ``cpu-time`` / ``flops`` / ``memory`` / ``saved``: a method's wall-clock
  s/step, CPU s/step, FLOPs per step (matmul, convolution, attention, forward and
  backward; ``torch.utils.flop_counter``, deterministic), attack memory, or bytes saved
  for backward, over AdvDM's in the same mode (SDS's claimed advantage);
- ``time-fair/reference`` / ``cpu-time-fair/reference`` / ``flops-fair/reference`` /
  ``memory-fair/reference``: a method run the fair way over the same method run the
  reference's way (the harness's advantage over the reference).

On a CPU shared with other jobs, wall-clock ratios moved by up to 3x between two runs
(measured on the 2-core build machine under a load average of 1-9, two torch threads),
and even ratios of the process's CPU time per step (one torch thread) by up to 2x
between runs (cache and memory-bandwidth sharing with other jobs); memory ratios moved
by up to 11 %, FLOPs and saved bytes not at all. A CPU baseline therefore gates the
deterministic ``flops`` and ``saved`` tightly (2 %: an SDS step that backpropagates
through the UNet fails at once), ``memory`` (RSS growth) at 25 %, ``cpu-time`` only
against gross slowdowns (tolerance 200 %: more than 3x), and merely reports wall-clock
time. A GPU baseline gates wall-clock ``time`` (50 %) instead.

``bench perf --check FILE`` re-measures with the baseline's own settings and fails when
a ratio exceeds ``baseline × (1 + tolerance)``; the message names the method, the ratio,
the baseline and the tolerance.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloakbench.bench.perf.runner import DENOMINATOR, SCHEMA_VERSION, PerfError

#: Default relative tolerances. Time on a shared 2-core CPU drifts by tens of percent;
#: RSS growth moves with the allocator; FLOPs and saved-for-backward bytes are deterministic.
DEFAULT_TOLERANCES = {
    "time": 0.5,
    "cpu-time": 2.0,
    "memory": 0.25,
    "saved": 0.02,
    "flops": 0.02,
    "time-fair/reference": 0.5,
    "cpu-time-fair/reference": 2.0,
    "memory-fair/reference": 0.25,
    "flops-fair/reference": 0.02,
}
#: Ratio kind -> (row key of the ratio to AdvDM | of reference over fair).
TO_ADVDM = {
    "time": "time_ratio_to_advdm",
    "cpu-time": "cpu_time_ratio_to_advdm",
    "memory": "memory_ratio_to_advdm",
    "saved": "saved_ratio_to_advdm",
    "flops": "flops_ratio_to_advdm",
}
FAIR_OVER_REFERENCE = {
    "time-fair/reference": "reference_over_fair_time",
    "cpu-time-fair/reference": "reference_over_fair_cpu_time",
    "memory-fair/reference": "reference_over_fair_memory",
    "flops-fair/reference": "reference_over_fair_flops",
}
SETTING_KEYS = (
    "arch",
    "resolutions",
    "batches",
    "methods",
    "modes",
    "optimisations",
    "steps",
    "warmup",
    "repeats",
    "dtype",
    "device",
    "seed",
    "threads",
)


@dataclass(frozen=True)
class Finding:
    """One ratio compared with its baseline."""

    name: str
    method: str
    kind: str
    baseline: float
    tolerance: float
    measured: float | None
    status: str  # ok | regressed | improved | missing

    @property
    def limit(self) -> float:
        return self.baseline * (1.0 + self.tolerance)

    def message(self) -> str:
        if self.status == "missing":
            return (
                f"{self.method}: ratio {self.name} could not be measured (baseline {self.baseline:.3f}); "
                "see the failed row above"
            )
        verdict = {"regressed": "REGRESSED", "improved": "improved", "ok": "ok"}[self.status]
        text = (
            f"{verdict}: {self.method} ratio {self.name} = {self.measured:.3f}, baseline {self.baseline:.3f}, "
            f"tolerance +{self.tolerance:.0%} (limit {self.limit:.3f})"
        )
        if self.status == "improved":
            text += "; consider refreshing the baseline (bench perf --write-baseline)"
        return text


def default_kinds(device: str) -> tuple[str, ...]:
    """The ratio kinds a baseline gates on ``device`` (see the module docstring)."""
    if device.startswith("cuda"):
        return (
            "time",
            "memory",
            "saved",
            "flops",
            "time-fair/reference",
            "memory-fair/reference",
            "flops-fair/reference",
        )
    return (
        "cpu-time",
        "memory",
        "saved",
        "flops",
        "cpu-time-fair/reference",
        "memory-fair/reference",
        "flops-fair/reference",
    )


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``"time=0.3,saved=0.01"`` on top of :data:`DEFAULT_TOLERANCES`."""
    tolerances = dict(DEFAULT_TOLERANCES)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        kind, sep, value = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in tolerances:
            raise PerfError(f"--tolerance {item!r}: expected KIND=FRACTION with KIND in {', '.join(tolerances)}")
        try:
            tolerances[kind] = float(value)
        except ValueError:
            raise PerfError(f"--tolerance {item!r}: {value!r} is not a number") from None
        if tolerances[kind] < 0:
            raise PerfError(f"--tolerance {item!r}: must be >= 0")
    return tolerances


def _where(row: dict) -> str:
    opt = "" if row["optimisations"] == "none" else f" opt={row['optimisations']}"
    return f"{row['resolution']}px x{row['batch']}{opt}"


def ratios_of(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every checkable ratio in ``rows`` (after :func:`cloakbench.bench.perf.runner.add_ratios`), by name."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        if row["method"] != DENOMINATOR:
            for kind, key in TO_ADVDM.items():
                value = row.get(key)
                name = f"{kind} {row['method']}/{DENOMINATOR} [{row['mode']}] {_where(row)}"
                found[name] = {"name": name, "kind": kind, "method": row["method"], "value": value}
        if row["mode"] == "reference":
            for kind, key in FAIR_OVER_REFERENCE.items():
                value = row.get(key)
                name = f"{kind} {row['method']} {_where(row)}"
                found[name] = {
                    "name": name,
                    "kind": kind,
                    "method": row["method"],
                    "value": None if not value else 1.0 / value,
                }
    return found


def require_settings(settings: dict[str, Any]) -> None:
    missing = [k for k in SETTING_KEYS if k not in settings]
    if missing:
        raise PerfError(f"baseline settings lack {', '.join(missing)}")


def build_baseline(
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
    tolerances: dict[str, float],
    *,
    note: str = "",
    kinds: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A baseline from freshly measured rows; refuses rows that failed or lack a ratio.

    ``kinds``: which ratio kinds to keep (default: :func:`default_kinds` of the device).
    """
    require_settings(settings)
    kinds = kinds or default_kinds(settings["device"])
    failed = [f"{r['method']} [{r['mode']}]: {r.get('error')}" for r in rows if r.get("status") != "ok"]
    if failed:
        raise PerfError("cannot write a baseline from failed measurements: " + "; ".join(failed))
    ratios = []
    for entry in ratios_of(rows).values():
        if entry["kind"] not in kinds:
            continue
        if entry["value"] is None:
            raise PerfError(
                f"ratio {entry['name']} has no value (zero or missing denominator); "
                "measure at a size where it is defined"
            )
        ratios.append({**entry, "tolerance": tolerances[entry["kind"]]})
    ok = [r for r in rows if r.get("status") == "ok"]
    return {
        "schema": SCHEMA_VERSION,
        "what": "cost ratios (a rise is a regression); checked by `bench perf --check` with these settings",
        "note": note,
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": ok[0]["machine"] if ok else {},
        "versions": ok[0]["versions"] if ok else {},
        "settings": settings,
        "gated_kinds": list(kinds),
        "ratios": sorted(ratios, key=lambda r: r["name"]),
    }


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        baseline = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PerfError(
            f"baseline {path} does not exist; write one with `bench perf --write-baseline {path}`"
        ) from None
    except json.JSONDecodeError as error:
        raise PerfError(f"baseline {path} is not valid JSON: {error}") from None
    if baseline.get("schema") != SCHEMA_VERSION:
        raise PerfError(f"baseline {path} has schema {baseline.get('schema')!r}; this bench reads {SCHEMA_VERSION}")
    require_settings(baseline.get("settings", {}))
    if not baseline.get("ratios"):
        raise PerfError(f"baseline {path} holds no ratios")
    return baseline


def check(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> list[Finding]:
    """Compare measured rows with every ratio of ``baseline`` (a rise past tolerance regresses)."""
    measured = ratios_of(rows)
    findings = []
    for entry in baseline["ratios"]:
        value = measured.get(entry["name"], {}).get("value")
        base, tol = float(entry["value"]), float(entry["tolerance"])
        if value is None:
            status = "missing"
        elif value > base * (1.0 + tol):
            status = "regressed"
        elif value * (1.0 + tol) < base:  # symmetric to a regression, in ratio space
            status = "improved"
        else:
            status = "ok"
        findings.append(Finding(entry["name"], entry["method"], entry["kind"], base, tol, value, status))
    return findings


def failed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status in ("regressed", "missing")]
