"""Executing one cell: its inputs in, its artifacts and rows out (docs/ARCHITECTURE.md, "Plan and execute").

:func:`run_cell` is what every executor calls, in whatever process holds a
:class:`Workspace` (the model, the images and the configured components, loaded once per
worker). It never touches the journal: it returns an :class:`Outcome` that the driver
records. Artifacts go to the run folder's content-addressed ``artifacts/`` (atomic
writes, so two workers writing the same bytes are harmless); the driver verifies their
hashes before it marks the cell done.

One code path serves every attack: a per-image attack maps one published image to one
output per setting (SDEdit strengths); a per-set attack (textual inversion) learns from
all published images and returns generations. Both become a list of output items, each
compared with its reference (the clean image, or the nearest clean concept image) and
with the same item of the clean twin.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cloakbench import mimicry as mimicry_pkg
from cloakbench.bench.copier import RunProtections
from cloakbench.bench.noreference import noreference_rows
from cloakbench.bench.plan import NO_PROTECTION, Cell, Components, derive_seed
from cloakbench.bench.profiling import parameter_storages, profile_phase, warm_up
from cloakbench.bench.spec import CompareSpec
from cloakbench.bench.store import Artifact, ArtifactFolder
from cloakbench.core.datasets import ImageInfo, load_dataset
from cloakbench.core.images import (
    IntakeResult,
    LoadedImage,
    png_bytes,
    protection_batch,
    quantize_8bit,
    read_png,
    resize_square,
)
from cloakbench.core.io import write_atomic
from cloakbench.core.ldm import LDM
from cloakbench.core.per_image import one_image_per_call
from cloakbench.core.schema import Pair, Row
from cloakbench.core.zoo import load_model
from cloakbench.metrics import MetricUnavailable, masked
from cloakbench.metrics.analysis import encoder_analysis
from cloakbench.protections import ProtectionUnavailable
from cloakbench.protections.engine import GeneratorArg, image_generators

log = logging.getLogger(__name__)


class CellTimeout(Exception):
    """Raised inside a cell when its time limit passes."""


@dataclass(frozen=True)
class CellTask:
    """A cell and the finished artifacts it reads: its inputs' published PNGs, its twin's outputs."""

    cell: Cell
    inputs: tuple[Artifact, ...] = ()
    twin: tuple[Artifact, ...] = ()


@dataclass
class Outcome:
    """What running a cell produced. ``status``: ``done``, ``failed`` or ``unavailable``."""

    key: str
    status: str
    artifacts: list[Artifact] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    reason: str = ""
    worker: str = ""


@dataclass
class Workspace:
    """What a worker holds while it runs cells: loaded once, used for many cells.

    ``model`` is the protection model; an attack model of another name (transfer,
    ``--attack-model``) is loaded on the first cell that needs it and kept
    (:meth:`model_named`), so each model is held once.
    """

    spec: CompareSpec
    model: LDM
    images: dict[str, LoadedImage]  # by pixel hash
    components: Components
    artifacts: ArtifactFolder
    unavailable: dict[str, str | None]  # attack variant key -> why it cannot run here (None: it can)
    metric_availability: dict[str, tuple[bool, str]]
    info: dict[str, ImageInfo] = field(default_factory=dict)  # by pixel hash: category, prompt, mask
    models: dict[str, LDM] = field(default_factory=dict)  # by name, the protection model included

    @classmethod
    def open(
        cls,
        spec: CompareSpec,
        *,
        components: Components | None = None,
        intake: IntakeResult | None = None,
        model: LDM | None = None,
    ) -> Workspace:
        """Load what the cells of ``spec`` need; a worker process calls this with the spec alone."""
        components = components or Components.from_spec(spec)
        model = model or load_model(
            spec.model, device=spec.device, dtype=spec.dtype, allow_pickle=spec.allow_pickle, seed=spec.seed
        )
        intake = intake or load_dataset(spec.images, model.resolution)
        warm_up(model, spec.prompt)  # no measured cell pays the process's first pass (bench/profiling.py)
        return cls(
            spec=spec,
            model=model,
            images={im.pixel_hash: im for im in intake.images},
            components=components,
            artifacts=ArtifactFolder(Path(spec.out)),
            unavailable={s: _unavailable_reason(ps + [a]) for s, (ps, a) in components.attacks.items()},
            metric_availability={m.name: m.availability() for m in components.metrics},
            info=dict(getattr(intake, "info", {})),
            models={spec.model: model},
        )

    def model_named(self, name: str) -> LDM:
        """The model called ``name`` (``""``: the protection model), loaded once."""
        name = name or self.spec.model
        if name not in self.models:
            log.info("loading attack model %s", name)
            self.models[name] = load_model(
                name,
                device=self.spec.device,
                dtype=self.spec.dtype,
                allow_pickle=self.spec.allow_pickle,
                seed=self.spec.seed,
            )
        return self.models[name]

    def mask_folder(self, image: LoadedImage) -> str | None:
        """A folder holding only this image's dataset mask (named by its stem, as inpainting matches
        masks), written once under the run folder; ``None`` if the dataset gives it no mask."""
        found = self.info.get(image.pixel_hash)
        if found is None or found.mask is None:
            return None
        folder = self.artifacts.root / "work" / "masks" / found.mask_hash[:16]
        path = folder / f"{Path(image.name).stem}.png"
        if not path.is_file():
            write_atomic(path, png_bytes(found.mask.expand(3, -1, -1)))
        return str(folder)

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.model.device).manual_seed(seed)


def _unavailable_reason(components: list) -> str | None:
    """Why an attack chain cannot run here (missing weights), checked before any work."""
    for component in components:
        try:
            component.check_available()
        except mimicry_pkg.AttackUnavailable as error:
            return str(error)
    return None


# -- the failure policy ---------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`CellTimeout` in this (main) thread after ``seconds``."""
    if not seconds:
        yield
        return

    def _expire(signum, frame):
        raise CellTimeout(f"timeout after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def failure_reason(error: BaseException, model: LDM) -> str:
    """One line for the ``note`` column: ``timeout: …``, ``oom: …`` or ``error: Type: message``."""
    if isinstance(error, CellTimeout):
        return f"timeout: {error}"
    if isinstance(error, torch.cuda.OutOfMemoryError):
        size = f"{model.resolution}x{model.resolution}"
        return f"oom: CUDA out of memory at {size}, batch 1 ({str(error).splitlines()[0] if str(error) else ''})"
    return f"error: {type(error).__name__}: {error}"


def failure_outcome(cell: Cell, run: str, reason: str, status: str = "failed", protect_model: str = "") -> Outcome:
    """A cell that produced nothing: one row says why. Failed cells are retried on resume."""
    pair, metric = (Pair.FAILURE, "error") if status == "failed" else (Pair.ATTACK_VS_CLEAN, "attack")
    row = {
        **base_row(cell, run, protect_model),
        "pair": pair.value,
        "metric": metric,
        "value": None,
        "unit": "",
        "higher_is_better": "",
        "status": status,
        "note": reason,
    }
    return Outcome(cell.key, status, [], [row], reason)


def run_cell(workspace: Workspace, task: CellTask) -> Outcome:
    """Run one cell under the spec's time limit; an exception becomes a failed outcome, never a crash."""
    cell, run = task.cell, workspace.spec.out.name
    if cell.kind == "attack":
        reason = workspace.unavailable.get(cell.attack_key)
        if reason:
            return failure_outcome(cell, run, reason, status="unavailable", protect_model=workspace.spec.model)
    try:
        with time_limit(workspace.spec.cell_timeout_s):
            if cell.kind == "protect":
                ((artifacts, rows),) = protect_batch(workspace, [cell])
            else:
                artifacts, rows = attack(workspace, task)
    except ProtectionUnavailable as error:  # e.g. no trained protector for this model: say which file
        return failure_outcome(cell, run, str(error), status="unavailable", protect_model=workspace.spec.model)
    except Exception as error:
        log.debug("%s", traceback.format_exc())
        return failure_outcome(cell, run, failure_reason(error, workspace.model), protect_model=workspace.spec.model)
    return Outcome(cell.key, "done", artifacts, rows)


def run_cells(workspace: Workspace, tasks: list[CellTask]) -> list[Outcome]:
    """Run a batch the executor formed (``bench/batching.py``): protect cells of one protection
    and model in one call, anything else (or a batch of one) cell by cell.

    A batch that raises is run again cell by cell, with a warning: an out-of-memory batch
    (``--batch-size auto`` sized it from one image's peak) then still finishes, and any other
    error is reported on the cell it belongs to, with that cell's own reason.
    """
    if len(tasks) < 2:
        return [run_cell(workspace, task) for task in tasks]
    cells = [task.cell for task in tasks]
    try:
        limit = workspace.spec.cell_timeout_s
        with time_limit(limit * len(cells) if limit else None):
            published = protect_batch(workspace, cells)
    except Exception as error:
        log.warning(
            "a batch of %d %s cells failed (%s); running them one at a time",
            len(cells),
            cells[0].protection,
            failure_reason(error, workspace.model),
        )
        return [run_cell(workspace, task) for task in tasks]
    return [Outcome(cell.key, "done", artifacts, rows) for cell, (artifacts, rows) in zip(cells, published)]


# -- rows ---------------------------------------------------------------------------
def base_row(cell: Cell, run: str, protect_model: str = "", **extra) -> dict[str, Any]:
    """The columns every row of ``cell`` shares (``protect_model``: the run's ``--model``)."""
    purification, mimicry = "", ""
    if cell.attack:
        parts = cell.attack.split("+")
        purification, mimicry = "+".join(parts[:-1]), parts[-1]
    single = cell.scope == "image"
    row = {
        "run": run,
        "cell": cell.key[:16],
        "image": cell.images[0].pixel_hash[:16] if single else "concept",
        "image_name": cell.images[0].name if single else "all images",
        "category": cell.images[0].category if single else "",
        "protection": cell.protection,
        "protection_setting": cell.protection_setting,
        "purification": purification,
        "mimicry": mimicry,
        "attack_setting": cell.attack_setting,
        "setting": "",
        "run_seed": cell.run_seed,
        "seed": cell.seed,
        "protect_model": protect_model or (cell.model if cell.kind == "protect" else ""),
        "attack_model": cell.model if cell.kind == "attack" else "",
        "status": "ok",
        "note": "",
        "artifact": "",
    }
    row.update(extra)
    return row


def metric_rows(
    workspace: Workspace,
    base: dict,
    pair: Pair,
    outputs: torch.Tensor,
    references: torch.Tensor,
    budget: bool = False,
    scope: str = "pair",
) -> list[Row]:
    """Rows of every selected metric of ``scope`` for ``outputs`` against ``references``.

    ``pair`` metrics give one row per image; ``set`` metrics (FID, KID) one row for the
    two sets. A metric that cannot run here gives a row marked unavailable with its reason.
    """
    rows = []
    for metric in workspace.components.metrics:
        if metric.scope != scope or (metric.budget_only and not budget):
            continue
        row = {
            **base,
            "pair": pair.value,
            "metric": metric.name,
            "unit": metric.unit,
            "higher_is_better": int(metric.higher_is_better),
        }
        available, reason = workspace.metric_availability[metric.name]
        if not available:
            rows.append({**row, "value": None, "status": "unavailable", "note": reason})
            continue
        try:
            values = metric(outputs.cpu().float(), references.cpu().float())
        except Exception as error:
            status = "unavailable" if isinstance(error, MetricUnavailable) else "failed"
            rows.append({**row, "value": None, "status": status, "note": str(error)})
            continue
        rows += [{**row, "value": float(value)} for value in values.reshape(-1).tolist()]
    return rows


def cost_rows(base: dict, record) -> list[Row]:
    return [
        {**base, "pair": Pair.COST.value, "metric": metric, "value": value, "unit": unit, "higher_is_better": 0}
        for metric, value, unit in record.rows()
    ]


def analysis_rows(model: LDM, base: dict, clean: torch.Tensor, protected: torch.Tensor) -> list[Row]:
    """The encoder-vulnerability analysis (Xue et al., Sec. 4): δz vs δx per image."""
    with torch.no_grad():
        found = encoder_analysis(model, clean.to(model.device, model.dtype), protected.to(model.device, model.dtype))
    # δx = 0 leaves the amplification undefined: such a value is None with a note, never a number.
    return [
        {
            **base,
            "pair": Pair.ANALYSIS.value,
            "metric": r["metric"],
            "value": r["value"],
            "status": "ok" if r["value"] is not None else "unavailable",
            "note": r.get("note") or "",
            "unit": r.get("unit", ""),
            "higher_is_better": "",
        }
        for r in found
    ]


# -- the two kinds of cell -----------------------------------------------------------
def cell_generators(workspace: Workspace, cells: list[Cell], clean: torch.Tensor) -> GeneratorArg:
    """What the protection is given as ``generator``: the cell's seeded generator for one cell;
    for a batch, each image the generator it would get alone (``image_generators`` of it with its
    own cell's seed), so a batch draws exactly the random numbers of its cells run one by one."""
    if len(cells) == 1:
        return workspace.generator(cells[0].seed)
    return [image_generators(clean[i : i + 1], workspace.generator(cell.seed))[0] for i, cell in enumerate(cells)]


def batch_note(note: str, size: int) -> str:
    """A batched cell's cost-row note: what its figures are (``wall_s``: the batch's time / size)."""
    said = f"batch of {size} images: wall_s is the batch's time / {size}, memory the whole batch's"
    return f"{note}; {said}" if note else said


def protect_batch(workspace: Workspace, cells: list[Cell]) -> list[tuple[list[Artifact], list[Row]]]:
    """Protect the images of ``cells`` (one protection, one model) in one call; publish each as an
    8-bit PNG; measure what was published. One cell is the unbatched case; in a batch the
    networks still see one image per call, so every row is the row of the cell alone.

    Cost rows are per image: the batch's wall time divided by its size (``wall_s``) and the
    batch's memory figures as measured (the peak of the whole batch); in a batch their note says
    so (:func:`batch_note`), so a cost read from a batched run says what it is. Unbatched rows
    are those of every earlier version: batching adds no row and changes no column.
    """
    model = workspace.model
    images = [workspace.images[cell.images[0].pixel_hash] for cell in cells]
    (protection,) = workspace.components.chain(cells[0])  # as the plan resolved it; one protection per batch
    clean = protection_batch([image.pixels for image in images]).to(model.device, model.dtype)
    measured = profile_phase(
        "protect", model.device, count_saved=True, exclude=parameter_storages(*model.modules().values())
    )
    # Each image's network calls are those it makes alone (core/per_image.py): a batch's rows
    # are its cells' rows, byte for byte.
    with measured as record, one_image_per_call():
        protected = protection(clean, model, generator=cell_generators(workspace, cells, clean))
    protected = quantize_8bit(protected.detach().float().cpu())
    record.wall_s /= len(cells)
    results = []
    for index, (cell, image) in enumerate(zip(cells, images)):
        artifact = workspace.artifacts.put(png_bytes(protected[index]), ".png")
        saved = read_png(workspace.artifacts.path(artifact)).unsqueeze(0)  # measure what was published
        base = base_row(
            cell, workspace.spec.out.name, workspace.spec.model, artifact=artifact.path, note=protection.row_note()
        )
        rows = metric_rows(workspace, base, Pair.PROTECTED_VS_CLEAN, saved, image.pixels.unsqueeze(0), budget=True)
        rows += noreference_rows(workspace.components.metrics, workspace.metric_availability, base, saved)
        cost_base = {**base, "note": batch_note(base["note"], len(cells))} if len(cells) > 1 else base
        rows += cost_rows(cost_base, record)
        if cell.protection != NO_PROTECTION:
            rows += analysis_rows(model, base, image.pixels.unsqueeze(0), saved)
        results.append(([artifact], rows))
    return results


def attack(workspace: Workspace, task: CellTask) -> tuple[list[Artifact], list[Row]]:
    """Purify and attack the published images of ``task.inputs``; compare with the clean twin."""
    cell = task.cell
    model = workspace.model_named(cell.model)
    single = workspace.images[cell.images[0].pixel_hash] if cell.scope == "image" else None
    mask_dir = workspace.mask_folder(single) if single is not None else None
    *purifications, attacker = workspace.components.chain(cell)  # as the plan resolved it
    # An attack model of another resolution gets the published PNG resized, and its clean
    # reference the same way (transfer: a copier resizes what they downloaded).
    published = resize_square(
        torch.cat([read_png(workspace.artifacts.path(a)).unsqueeze(0) for a in task.inputs]), model.resolution
    )
    clean = resize_square(
        torch.stack([workspace.images[ref.pixel_hash].pixels for ref in cell.images]), model.resolution
    )
    twins = [read_png(workspace.artifacts.path(a)).unsqueeze(0) for a in task.twin if a.path.endswith(".png")]
    if cell.protection != NO_PROTECTION and not twins:
        raise RuntimeError("the clean twin of this attack is missing (its cell failed)")
    work_dir = None
    if cell.scope == "set":
        work_dir = workspace.artifacts.root / "work" / cell.key[:16]
        work_dir.mkdir(parents=True, exist_ok=True)
    context = mimicry_pkg.AttackContext(
        image_names=[ref.name for ref in cell.images],
        prompt=cell.prompt,
        mask_dir=mask_dir or workspace.spec.mask_dir,
        work_dir=str(work_dir) if work_dir else None,
        # Adaptive stages (encoder-harden) run the public protection code with the tool's model,
        # keep what they train once in the run folder, and avoid the evaluated images.
        protections=RunProtections.for_spec(workspace.spec, workspace.model),
        cache_dir=str(workspace.artifacts.root / "stages"),
        held_out=frozenset(workspace.images),
    )
    with profile_phase(
        "attack", model.device, count_saved=True, exclude=parameter_storages(*model.modules().values())
    ) as record:
        images = published.to(model.device, model.dtype)
        for step, purification in enumerate(purifications):
            generator = workspace.generator(derive_seed(cell.seed, "purify", step))
            # A model stage (encoder-harden) hands the rest of the chain another model.
            model = purification.adapt_model(model, generator=generator, context=context)
            images = quantize_8bit(purification(images, model, generator=generator, context=context).float())
        outputs = []
        for setting in attacker.settings():
            context.setting = setting
            output = attacker(images, model, generator=workspace.generator(cell.seed), context=context)
            outputs.append((setting, quantize_8bit(output.detach().float().cpu())))
    region = attacker.acted_region(images, context)  # where the attack made the output (None: everywhere)
    region = region.detach().float().cpu() if region is not None else None
    run = workspace.spec.out.name
    base_cell = base_row(cell, run, workspace.spec.model)
    if cell.scope == "image":
        items = [(setting, output) for setting, output in outputs]
        reference_pair, references, nearest = Pair.ATTACK_VS_CLEAN, clean, False
        note = "; ".join(f"{k}: {v}" for k, v in sorted(context.notes.items()) if k != "loss_trace")
    else:
        ((_, generations),) = outputs
        items = [(f"generation {i}", g.unsqueeze(0)) for i, g in enumerate(generations)]
        reference_pair, references, nearest, note = Pair.GENERATIONS_VS_CONCEPT, clean, True, ""
    artifacts = [workspace.artifacts.put(png_bytes(output[0]), ".png") for _, output in items]
    rows: list[Row] = []
    if cell.scope == "set":
        artifacts += [
            workspace.artifacts.put(p.read_bytes(), p.suffix)
            for p in sorted(p for p in work_dir.iterdir() if p.is_file())
        ]
        rows += metric_rows(
            workspace,
            {**base_cell, "artifact": ""},
            Pair.GENERATIONS_VS_CONCEPT,
            torch.cat([output for _, output in items]),
            clean,
            scope="set",
        )
        rows += noreference_rows(
            workspace.components.metrics,
            workspace.metric_availability,
            {**base_cell, "artifact": ""},
            torch.cat([output for _, output in items]),
            subject=clean,
            categories=[ref.category for ref in cell.images],
            generations=True,
        )
    for index, (setting, output) in enumerate(items):
        base = {**base_cell, "setting": setting, "artifact": artifacts[index].path, "note": note}
        if nearest:
            rows += nearest_rows(workspace, base, output, references)
        else:
            rows += metric_rows(workspace, base, reference_pair, output, references)
        if cell.protection != NO_PROTECTION:
            rows += strength_rows(workspace, base, output, twins[index], region)
    for step, loss in enumerate(context.notes.get("loss_trace", [])):
        rows.append(
            {
                **base_cell,
                "pair": Pair.TRAINING.value,
                "metric": "loss",
                "setting": str(step),
                "value": float(loss),
                "unit": "",
                "higher_is_better": 0,
            }
        )
    rows += cost_rows(base_cell, record)
    return artifacts, rows


def strength_rows(
    workspace: Workspace, base: dict, output: torch.Tensor, twin: torch.Tensor, region: torch.Tensor | None
) -> list[Row]:
    """The attack's output against its clean twin's: on the region the attack acted on when it declares
    one (inpainting; the whole image then as ``<metric>-whole``, metrics/masked.py), else on the image."""
    whole = metric_rows(workspace, base, Pair.ATTACK_VS_CLEAN_ATTACK, output, twin)
    if region is None:
        return whole
    rows = [{**row, "metric": masked.whole_image_name(row["metric"])} for row in whole]
    for region_output, region_twin in masked.region_pair(output, twin, region):
        rows += metric_rows(workspace, base, Pair.ATTACK_VS_CLEAN_ATTACK, region_output, region_twin)
    return rows


def nearest_rows(workspace: Workspace, base: dict, generation: torch.Tensor, concept: torch.Tensor) -> list[Row]:
    """Pair metrics of one generation against its nearest concept image (by each metric)."""
    candidates = [
        metric_rows(workspace, base, Pair.GENERATIONS_VS_CONCEPT, generation, concept[i : i + 1])
        for i in range(concept.shape[0])
    ]
    best = []
    for rows_for_metric in zip(*candidates):
        valid = [r for r in rows_for_metric if r.get("value") is not None]
        if not valid:
            best.append(rows_for_metric[0])
            continue
        pick = max if rows_for_metric[0]["higher_is_better"] else min
        best.append({**pick(valid, key=lambda r: r["value"]), "note": "nearest concept image"})
    return best
