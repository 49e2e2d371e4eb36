"""``bench leaderboard run`` and ``verify``: a protocol's run, one entry JSON per protection, and its check.

**Run** (:func:`run_protocol`): the protocol (:mod:`cloakbench.bench.protocol`) becomes one
:class:`~cloakbench.bench.spec.CompareSpec` and runs on the one compare driver
(:func:`cloakbench.bench.compare.run_compare`, any executor), in a run folder of its own
(``runs/leaderboard/<protocol id>``): content-keyed, so a rerun or a widened method list reuses
every finished cell. Then :func:`build_entry` writes, per protection, ``OUT/<name>.json`` and
its protected images under ``OUT/<name>/<budget>/<image>.png``. ``--protected DIR`` scores
another tool's files through the ``external`` protection (``protections/external.py``): the same
cells, attacks and metrics, from files alone.

**Entry** (schema :data:`SCHEMA`, version :data:`SCHEMA_VERSION`): the protocol's id and file
hash; the protection (name, source, tool, identity per budget); the submitter's ``reported``
figures; ``figures`` (:func:`cloakbench.reports.entry.figures`: per budget and attacker, every
figure with ``n`` and its interval; measured, adaptive and overall worst case; unreliable;
cost); ``cells`` (every cell's key, image, setting, seed and metric values, which the figures are
computed from); ``protected_images`` (the SHA-256 of every published image); ``provenance``.

**Verify** (:func:`verify_entry`): refuses an entry whose protected images do not match their
SHA-256; recomputes the figures from the entry's own cells (an edited figure disagrees);
recomputes a seeded sample of the protocol's images (or all) on the compare driver in a scratch
run folder and compares every recomputed cell's metric values with the entry's within the
protocol's tolerance (an edited cell value disagrees when sampled).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloakbench.bench.compare import Event, ExecutorFactory, RunSummary, run_compare
from cloakbench.bench.plan import Components, variant_key
from cloakbench.bench.protocol import (
    Protocol,
    check_budget_field,
    check_images,
    compare_spec,
    load_protocol,
)
from cloakbench.core import provenance
from cloakbench.core.datasets import load_dataset
from cloakbench.core.images import save_png
from cloakbench.core.io import write_atomic
from cloakbench.reports.entry import COST_METRICS, COST_PAIR, KEPT_PAIRS, figures
from cloakbench.reports.run import NO_PROTECTION, load_run

SCHEMA = "cloakbench.leaderboard.entry"
SCHEMA_VERSION = 1
EXTERNAL = "external"
#: Floats of figures recomputed from the same cells agree to rounding only (the JSON round trip).
FIGURE_TOLERANCE = 1e-9


class EntryError(ValueError):
    """An entry that cannot be used or does not verify; the message names the file and what to do."""


def default_methods() -> list[str]:
    """What ``make leaderboard`` runs: every protection the registry lists for the demo (see the Makefile).

    From the registry (``protections.demo_protections``): a new protection joins with no edit.
    """
    from cloakbench.protections import demo_protections

    return demo_protections()


def slug(name: str) -> str:
    """A file name for an entry: letters, digits, ``+``, ``-``, ``.`` and ``_`` kept; the rest ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9+\-._]", "_", name.strip())
    if not cleaned.strip("._"):
        raise EntryError(f"--tool {name!r}: give a name with letters or digits (it names the entry's file)")
    return cleaned


# -- run ---------------------------------------------------------------------------------
def protocol_intake(protocol: Protocol, images: list[str] | None = None):
    intake = load_dataset(images or [protocol.image_source], protocol.resolution)
    if images is None:
        check_images(protocol, intake)
    return intake


def external_overrides(protocol: Protocol, protected: Path, tool: str) -> dict[str, dict[str, Any]]:
    """``external``'s settings for ``--protected DIR``, after checking DIR has one sub-folder per budget."""
    missing = [f"{b:g}" for b in protocol.budgets if not (protected / f"{b:g}").is_dir()]
    if not protected.is_dir() or missing:
        raise EntryError(
            f"--protected {protected}: needs one sub-folder per budget of protocol {protocol.id} "
            f"({', '.join(f'{b:g}/' for b in protocol.budgets)}); missing {', '.join(m + '/' for m in missing) or 'the folder'}"
        )
    return {EXTERNAL: {"folder": str(protected.resolve()), "tool": tool}}


def run_protocol(
    protocol: Protocol,
    methods: list[str],
    work: Path,
    out: Path,
    *,
    protected: Path | None = None,
    tool: str = "",
    reported: dict[str, float] | None = None,
    executor_factory: ExecutorFactory | None = None,
    on_event: Event | None = None,
    device: str = "cpu",
    command: str = "",
) -> tuple[RunSummary, list[Path]]:
    """Run ``protocol`` for ``methods`` (or the external tool's files) in ``work``; write one entry per protection."""
    overrides: dict[str, dict[str, Any]] = {}
    if protected is not None:
        methods = [EXTERNAL]
        overrides = external_overrides(protocol, protected, tool or EXTERNAL)
    else:
        methods = [m for m in methods if m != NO_PROTECTION]
        check_budget_field(protocol, methods)
    if not methods:
        raise EntryError("--methods names no protection (none is the reference, always run)")
    protocol_intake(protocol)  # the images are the protocol's, before any work
    spec = compare_spec(protocol, methods, work, overrides=overrides, device=device, command=command)
    summary = run_compare(spec, on_event, executor_factory)
    components = Components.from_spec(spec)
    written = []
    for name in methods:
        entry_name = slug(tool) if name == EXTERNAL else name
        entry = build_entry(protocol, work, name, components, out / entry_name, reported=reported or {}, tool=tool)
        path = out / f"{entry_name}.json"
        write_entry(path, entry)
        written.append(path)
    return summary, written


def write_entry(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(entry, indent=1, sort_keys=False, allow_nan=False) + "\n").encode())


def _value(value: float) -> float | None:
    return None if math.isnan(value) else float(value) if math.isfinite(value) else None


def collect_cells(rows, protection: str) -> list[dict[str, Any]]:
    """One record per cell of ``protection`` (its protect cells and the attacks on its images), from the run's rows."""
    mine = rows[(rows["protection"] == protection) & rows["pair"].isin(KEPT_PAIRS) & (rows["status"] == "ok")]
    cells: dict[str, dict[str, Any]] = {}
    for row in mine.itertuples(index=False):
        cell = cells.setdefault(
            row.cell,
            {
                "key": row.cell,
                "kind": "attack" if row.attack else "protect",
                "image": row.image,
                "image_name": row.image_name,
                "protection": row.protection,
                "protection_setting": row.protection_setting,
                "purification": row.purification,
                "mimicry": row.mimicry,
                "seed": int(row.seed) if str(row.seed).isdigit() else row.seed,
                "rows": [],
            },
        )
        if math.isnan(row.value):
            continue
        cell["rows"].append([row.pair, row.metric, row.setting_group, _value(row.value), row.higher_is_better])
    return sorted(cells.values(), key=lambda c: (c["protection_setting"], c["kind"] != "protect", c["image"], c["key"]))


def copy_protected_images(run, protection: str, folder: Path, budget_names: dict[str, str]) -> list[dict[str, Any]]:
    """Copy each protect cell's published PNG to ``folder/<budget>/<image>.png``; their hashes for the entry."""
    rows = run.rows
    protect = rows[
        (rows["protection"] == protection)
        & (rows["pair"] == "protected_vs_clean")
        & (rows["artifact"] != "")
        & (rows["status"] == "ok")
    ]
    found = []
    seen = set()
    for row in protect.itertuples(index=False):
        if (row.protection_setting, row.image) in seen:
            continue
        seen.add((row.protection_setting, row.image))
        source = run.artifact_path(row.artifact)
        if source is None:
            raise EntryError(f"{run.run_dir}: the published image {row.artifact} is missing; rerun the same command")
        relative = Path(budget_names[row.protection_setting]) / f"{row.image_name}.png"
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        found.append(
            {
                "image": row.image,
                "image_name": row.image_name,
                "setting": row.protection_setting,
                "file": f"{folder.name}/{relative.as_posix()}",
                "sha256": provenance.sha256_file(target),
            }
        )
    return sorted(found, key=lambda f: (f["setting"], f["image_name"]))


def build_entry(
    protocol: Protocol,
    work: Path,
    protection: str,
    components: Components,
    images_folder: Path,
    *,
    reported: dict[str, float],
    tool: str = "",
) -> dict[str, Any]:
    """The entry of one protection from the finished run folder ``work`` (see the module docstring)."""
    run = load_run(work)
    cells = collect_cells(run.rows, protection)
    if not cells:
        raise EntryError(f"{work}: no finished cell of {protection}; rerun the same command to finish the run")
    budget_names = {protocol.budget_setting(b): f"{b:g}" for b in protocol.budgets}
    if images_folder.exists():
        shutil.rmtree(images_folder)  # the images of this entry only, rewritten whole
    images = copy_protected_images(run, protection, images_folder, budget_names)
    identities = {
        setting: components.protections[variant_key(protection, setting)].identity() for setting in budget_names
    }
    manifest = run.manifest
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "protocol": protocol.identity(),
        "protection": {
            "name": slug(tool) if protection == EXTERNAL else protection,
            "source": "external" if protection == EXTERNAL else "cloakbench",
            "tool": tool if protection == EXTERNAL else f"cloakbench {protection}",
            "identity": identities,
        },
        "reported": reported,
        "figures": figures(cells, protocol.plain(), reported),
        "cells": cells,
        "protected_images": images,
        "provenance": {
            "versions": manifest.get("versions", {}),
            "git_commit": manifest.get("git_commit"),
            "git_dirty": manifest.get("git_dirty"),
            "device": manifest.get("device"),
            "executor": manifest.get("executor"),
            "model": manifest.get("model", {}),
            "run_created_utc": manifest.get("created_utc"),
            "run_finished_utc": manifest.get("finished_utc"),
            "entry_written_utc": datetime.now(UTC).isoformat(),
            "command": manifest.get("command", ""),
        },
    }


# -- verify --------------------------------------------------------------------------------
@dataclasses.dataclass
class Verdict:
    """What ``verify`` found: agreement, and every disagreement named."""

    entry: Path
    cells_checked: int
    values_checked: int
    images_recomputed: list[str]
    disagreements: list[str]
    png_matches: int
    png_total: int

    @property
    def agrees(self) -> bool:
        return not self.disagreements


def read_entry(path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EntryError(f"{path}: no such entry file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EntryError(f"{path} is not a JSON entry ({error}); restore it from its pull request") from None
    if not isinstance(entry, dict) or entry.get("schema") != SCHEMA:
        raise EntryError(f"{path} is not a cloakbench leaderboard entry (schema {SCHEMA!r} expected)")
    if entry.get("schema_version") != SCHEMA_VERSION:
        raise EntryError(
            f"{path} has entry schema version {entry.get('schema_version')!r}; this cloakbench reads version {SCHEMA_VERSION}"
        )
    return entry


def check_protected_images(path: Path, entry: dict[str, Any]) -> Path:
    """Refuse an entry whose protected images are missing or do not match their SHA-256; their folder."""
    listed = entry.get("protected_images") or []
    if not listed:
        raise EntryError(f"{path}: the entry lists no protected image; it cannot be verified")
    for item in listed:
        file = path.parent / item["file"]
        if not file.is_file():
            raise EntryError(f"{path}: refused, its protected image {item['file']} is missing")
        if provenance.sha256_file(file) != item["sha256"]:
            raise EntryError(
                f"{path}: refused, {item['file']} does not match its SHA-256 in the entry (the image or the entry was changed)"
            )
    return path.parent / Path(listed[0]["file"]).parts[0]


def _close(a: float | None, b: float | None, absolute: float, relative: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= absolute + relative * abs(b)


def compare_figures(stated: Any, recomputed: Any, where: str = "figures") -> list[str]:
    """Every place where two figure records differ (numbers to :data:`FIGURE_TOLERANCE`)."""
    if isinstance(stated, dict) and isinstance(recomputed, dict):
        found = []
        for key in sorted(set(stated) | set(recomputed), key=str):
            if key not in stated or key not in recomputed:
                found.append(f"{where}.{key}: present in only one of the entry and its recomputation")
                continue
            found += compare_figures(stated[key], recomputed[key], f"{where}.{key}")
        return found
    if isinstance(stated, list) and isinstance(recomputed, list):
        if len(stated) != len(recomputed):
            return [f"{where}: {len(stated)} items in the entry, {len(recomputed)} recomputed"]
        return [d for i, (a, b) in enumerate(zip(stated, recomputed)) for d in compare_figures(a, b, f"{where}[{i}]")]
    if isinstance(stated, bool) or isinstance(recomputed, bool) or not isinstance(stated, (int, float)):
        return [] if stated == recomputed else [f"{where}: entry says {stated!r}, its cells give {recomputed!r}"]
    if not isinstance(recomputed, (int, float)) or not _close(stated, recomputed, FIGURE_TOLERANCE, FIGURE_TOLERANCE):
        return [f"{where}: entry says {stated!r}, its cells give {recomputed!r}"]
    return []


def cell_identity(cell: dict[str, Any]) -> tuple:
    """A cell by what it is, not its key (a key includes the package version; another release recomputes it)."""
    return (
        cell["kind"],
        cell["image"],
        cell["protection_setting"],
        cell["purification"],
        cell["mimicry"],
        cell["seed"],
    )


def sample_images(protocol: Protocol, count: int | None, seed: int) -> list[str]:
    names = sorted(protocol.image_hashes)
    if count is None or count >= len(names):
        return names
    return sorted(random.Random(seed).sample(names, max(1, count)))


def write_sample_images(protocol: Protocol, names: list[str], folder: Path) -> Path:
    """The sampled protocol images as 8-bit PNGs at the working size (their pixels, hence their hashes, unchanged)."""
    intake = protocol_intake(protocol)
    folder.mkdir(parents=True, exist_ok=True)
    for image in intake.images:
        if image.name in names:
            save_png(image.pixels, folder / f"{image.name}.png")
    return folder


def verify_entry(
    path: Path,
    work: Path,
    *,
    sample: int | None = 1,
    seed: int = 0,
    executor_factory: ExecutorFactory | None = None,
    on_event: Event | None = None,
    device: str = "cpu",
    allow_draft: bool = False,
    recompute: bool = True,
) -> Verdict:
    """Check ``path`` (see the module docstring); ``sample`` images recomputed (``None``: all)."""
    entry = read_entry(path)
    protocol = load_protocol(entry["protocol"]["id"], allow_draft=allow_draft)
    if entry["protocol"].get("sha256") != protocol.sha256:
        raise EntryError(
            f"{path} was made under protocol file {entry['protocol'].get('sha256', '?')[:16]}…, not "
            f"{protocol.id}'s {protocol.sha256[:16]}…; verify it with that protocol file"
        )
    images_folder = check_protected_images(path, entry)
    disagreements = compare_figures(
        entry.get("figures"), figures(entry["cells"], protocol.plain(), entry.get("reported") or {})
    )
    verdict = Verdict(path, 0, 0, [], disagreements, 0, 0)
    if not recompute:
        return verdict
    names = sample_images(protocol, sample, seed)
    verdict.images_recomputed = names
    if work.exists():
        shutil.rmtree(work)  # a scratch run: never reuse an earlier verification's cells
    folder = write_sample_images(protocol, names, work / "images")
    source = entry["protection"]["source"]
    protection = EXTERNAL if source == "external" else entry["protection"]["name"]
    overrides = external_overrides(protocol, images_folder, entry["protection"]["tool"]) if source == "external" else {}
    spec = compare_spec(protocol, [protection], work / "run", images=[str(folder)], overrides=overrides, device=device)
    run_compare(spec, on_event, executor_factory)
    run = load_run(work / "run")
    recomputed = {cell_identity(c): c for c in collect_cells(run.rows, protection)}
    absolute, relative = protocol.tolerance
    for cell in entry["cells"]:
        if cell["image_name"] not in names:
            continue
        again = recomputed.get(cell_identity(cell))
        label = f"{cell['kind']} {cell['image_name']} {cell['protection_setting']} {cell['purification']}+{cell['mimicry']}".rstrip(
            "+ "
        )
        if again is None:
            verdict.disagreements.append(f"{label}: not recomputed (the cell failed or is no longer in the plan)")
            continue
        verdict.cells_checked += 1
        values = {(p, m, s): v for p, m, s, v, _ in again["rows"] if p != COST_PAIR and m not in COST_METRICS}
        for pair, metric, setting, value, _ in cell["rows"]:
            if pair == COST_PAIR:
                continue
            verdict.values_checked += 1
            other = values.get((pair, metric, setting), "absent")
            if other == "absent" or not _close(value, other, absolute, relative):
                verdict.disagreements.append(
                    f"{label} {pair} {metric} {setting}: entry {value!r}, recomputed {other!r}"
                )
    published = {(i["setting"], i["image"]): i["sha256"] for i in entry["protected_images"]}
    for item in copy_protected_images(run, protection, work / "published", {s: s for s in published_settings(entry)}):
        if item["image_name"] in names:
            verdict.png_total += 1
            verdict.png_matches += published.get((item["setting"], item["image"])) == item["sha256"]
    return verdict


def published_settings(entry: dict[str, Any]) -> list[str]:
    return sorted({i["setting"] for i in entry["protected_images"]})
