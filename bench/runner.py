"""The compare grid: protections x (purifications +) mimicry attacks x images, resumable.

A *cell* is a pure function of its inputs, keyed by the SHA-256 of canonical JSON over
the image pixel hashes, the component configs and versions, the model name and weights
hash, the seed, the dtype and the package version (RELIABILITY.md). Paths never enter a key.

Order of work: every protection cell (``none`` first: it is the clean reference), then
every attack cell with the clean twins first, so that each protected output can be
compared with the same attack's output on the clean image with the same seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import platform
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

import cloakbench
from cloakbench.core.config import canonical_json
from cloakbench.core.images import IntakeResult, LoadedImage, load_images, png_bytes, quantize_8bit, read_png
from cloakbench.core.models import LDM, load_model
from cloakbench.profiling import profile_phase
from cloakbench.core.quick import quick_component
from cloakbench.store import Artifact, RunStore, StoreError

log = logging.getLogger(__name__)

Event = Callable[[str, dict], None]


class MissingInput(RuntimeError):
    """An attack cell whose published image does not exist because its protection failed."""


class CellTimeout(Exception):
    """Raised inside a cell when its time limit passes."""


@dataclass
class CompareSpec:
    """Everything that defines a compare run (built from flags and the TOML file)."""

    images: list[str] = field(default_factory=lambda: ["samples"])
    methods: str = "all"
    attacks: str = "sdedit"
    metrics: str = "all"
    model: str = "toy"
    out: Path = Path("runs/compare")
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    prompt: str = "a photo"
    quick: bool = False
    force: bool = False
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    cell_timeout_s: float | None = None
    mask_dir: str | None = None
    allow_pickle: bool = False
    deterministic: bool = False
    shard: tuple[int, int] = (0, 1)
    write_report: bool = True
    command: str = ""


@dataclass
class Cell:
    key: str
    kind: str  # "protect" | "attack" | "set-attack"
    protection: str
    image: LoadedImage | None = None
    attack: str = ""
    seed: int = 0
    label: dict = field(default_factory=dict)


def derive_seed(run_seed: int, *parts: Any) -> int:
    """A cell seed from the run seed and what the cell is (recorded in every row)."""
    return int(hashlib.sha256(canonical_json([run_seed, *parts]).encode()).hexdigest()[:8], 16)


def key_of(payload: dict) -> str:
    return hashlib.sha256(canonical_json({**payload, "cloakbench": cloakbench.__version__}).encode()).hexdigest()


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


def git_state() -> tuple[str, bool | None]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                    timeout=10).stdout.strip())
        return commit or "unknown", dirty if commit else None
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "cloakbench": cloakbench.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


class Grid:
    """Plans and runs one compare run against a :class:`RunStore`."""

    def __init__(self, spec: CompareSpec, on_event: Event | None = None):
        import cloakbench.metrics as metric_pkg
        import cloakbench.mimicry as mimicry_pkg
        import cloakbench.protections as protection_pkg

        self.spec = spec
        self.emit = on_event or (lambda kind, info: None)
        # Resolve every name before anything expensive runs: a typo costs nothing.
        names = protection_pkg.PROTECTIONS.resolve(spec.methods, all_names=protection_pkg.publishable_protections())
        if "none" not in names:
            names.insert(0, "none")  # the clean reference every comparison needs
        else:
            names.remove("none")
            names.insert(0, "none")
        self.protection_names = names
        self.attack_specs = mimicry_pkg.resolve_attacks(spec.attacks)
        self.metric_names = metric_pkg.METRICS.resolve(spec.metrics)
        self._check_override_names(protection_pkg, mimicry_pkg, metric_pkg)
        self.protections = {n: self._build(protection_pkg.PROTECTIONS.get(n)) for n in self.protection_names}
        self.attacks = {}
        for attack_spec in self.attack_specs:
            purifications, attack = mimicry_pkg.parse_attack_spec(attack_spec)
            self.attacks[attack_spec] = (
                [self._build(mimicry_pkg.MIMICRY.get(p)) for p in purifications],
                self._build(mimicry_pkg.MIMICRY.get(attack)),
            )
        self.attack_unavailable = {s: self._unavailable_reason(ps + [a]) for s, (ps, a) in self.attacks.items()}
        self.metrics = [metric_pkg.METRICS.get(n).from_overrides(spec.overrides.get(n)) for n in self.metric_names]
        self.metric_availability = {m.name: m.availability() for m in self.metrics}

    @staticmethod
    def _unavailable_reason(components) -> str | None:
        """Why an attack chain cannot run here (missing weights), checked before any work."""
        from cloakbench.mimicry.base import AttackUnavailable

        for component in components:
            try:
                component.check_available()
            except AttackUnavailable as error:
                return str(error)
        return None

    def _check_override_names(self, *packages) -> None:
        from cloakbench.core.config import ConfigError

        known = set()
        for registry in (packages[0].PROTECTIONS, packages[1].MIMICRY, packages[2].METRICS):
            known.update(registry.names())
        for name in self.spec.overrides:
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, sorted(known), n=2)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"--set names {name!r}, which is no protection, attack or metric{hint}")

    def _build(self, cls):
        overrides = dict(quick_component(cls)) if self.spec.quick else {}
        overrides.update(self.spec.overrides.get(cls.registry_name, {}))
        return cls.from_overrides(overrides)

    # -- planning -----------------------------------------------------------
    def plan(self, model: LDM, intake: IntakeResult) -> tuple[list[Cell], dict]:
        spec = self.spec
        model_id = model.identity()
        cells: list[Cell] = []
        index, count = spec.shard
        images = [im for im in intake.images if int(im.pixel_hash, 16) % count == index]
        for name in self.protection_names:
            protection = self.protections[name]
            for image in images:
                seed = derive_seed(spec.seed, image.pixel_hash, name)
                key = key_of({"kind": "protect", "image": image.pixel_hash, "protection": protection.identity(),
                              "model": model_id, "seed": seed})
                cells.append(Cell(key, "protect", name, image=image, seed=seed,
                                  label={"image": image.name, "protection": name}))
        for attack_spec, (purifications, attack) in self.attacks.items():
            for name in self.protection_names:
                if attack.scope == "set":
                    if index != 0:
                        continue
                    seed = derive_seed(spec.seed, "set", attack_spec)
                    cells.append(Cell("", "set-attack", name, attack=attack_spec, seed=seed,
                                      label={"protection": name, "attack": attack_spec}))
                    continue
                for image in images:
                    # The attack seed ignores the protection: clean and protected twins share it.
                    seed = derive_seed(spec.seed, image.pixel_hash, attack_spec)
                    cells.append(Cell("", "attack", name, image=image, attack=attack_spec, seed=seed,
                                      label={"image": image.name, "protection": name, "attack": attack_spec}))
        plan = {
            "images": [{"name": im.name, "hash": im.pixel_hash} for im in images],
            "protections": [self.protections[n].identity() for n in self.protection_names],
            "attacks": [{"spec": s, "purifications": [p.identity() for p in ps], "attack": a.identity()}
                        for s, (ps, a) in self.attacks.items()],
            "metrics": [m.identity() for m in self.metrics],
            "model": model_id, "seed": spec.seed, "prompt": spec.prompt, "shard": list(spec.shard),
        }
        return cells, plan


def plan_hash(plan: dict) -> str:
    return hashlib.sha256(canonical_json(plan).encode()).hexdigest()


def describe_plan_change(old: dict, new: dict) -> str:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(changed) or "details"


class Runner:
    """Executes a planned grid cell by cell; one failing cell never stops the others."""

    def __init__(self, grid: Grid, model: LDM, intake: IntakeResult, store: RunStore):
        self.grid, self.model, self.intake, self.store = grid, model, intake, store
        self.spec = grid.spec
        self.published: dict[tuple[str, str], tuple[torch.Tensor, Artifact]] = {}  # (protection, image hash)
        self.clean_outputs: dict[tuple, list[tuple[torch.Tensor, Artifact]]] = {}
        self.reused = 0
        self.computed = 0
        self.failed = 0
        self.unavailable = 0

    # -- rows ---------------------------------------------------------------
    def base_row(self, cell: Cell, **extra) -> dict:
        purification, mimicry = "", ""
        if cell.attack:
            parts = cell.attack.split("+")
            purification, mimicry = "+".join(parts[:-1]), parts[-1]
        row = {
            "run": self.store.run_name, "cell": cell.key[:16],
            "image": cell.image.pixel_hash[:16] if cell.image else "concept",
            "image_name": cell.image.name if cell.image else "all images",
            "protection": cell.protection, "purification": purification, "mimicry": mimicry,
            "setting": "", "seed": cell.seed, "status": "ok", "note": "", "artifact": "",
        }
        row.update(extra)
        return row

    def metric_rows(self, base: dict, pair: str, outputs: torch.Tensor, references: torch.Tensor,
                    budget: bool = False, scope: str = "pair") -> list[dict]:
        """Rows of every selected metric of ``scope`` for ``outputs`` against ``references``.

        ``pair`` metrics give one row per image; ``set`` metrics (FID, KID) one row for the
        two sets. A metric that cannot run here gives a row marked unavailable with its reason.
        """
        from cloakbench.metrics.base import MetricUnavailable

        rows = []
        for metric in self.grid.metrics:
            if metric.scope != scope or (metric.budget_only and not budget):
                continue
            row = {**base, "pair": pair, "metric": metric.name, "unit": metric.unit,
                   "higher_is_better": int(metric.higher_is_better)}
            available, reason = self.grid.metric_availability[metric.name]
            if not available:
                rows.append({**row, "value": None, "status": "unavailable", "note": reason})
                continue
            try:
                values = metric(outputs.cpu().float(), references.cpu().float())
            except Exception as error:  # noqa: BLE001 - a metric's own refusal is recorded, not fatal
                status = "unavailable" if isinstance(error, MetricUnavailable) else "failed"
                rows.append({**row, "value": None, "status": status, "note": str(error)})
                continue
            rows += [{**row, "value": float(value)} for value in values.reshape(-1).tolist()]
        return rows

    @staticmethod
    def cost_rows(base: dict, record) -> list[dict]:
        return [{**base, "pair": "cost", "metric": metric, "value": value, "unit": unit, "higher_is_better": 0}
                for metric, value, unit in record.rows()]

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.model.device).manual_seed(seed)

    # -- cells --------------------------------------------------------------
    def run_cell(self, cell: Cell) -> None:
        if cell.kind in ("attack", "set-attack"):
            reason = self.grid.attack_unavailable.get(cell.attack)
            if reason:
                cell.key = key_of({"kind": "unavailable", "label": cell.label, "seed": cell.seed})
                self.record_failure(cell, reason, status="unavailable")
                return
            try:
                cell.key = self.attack_key(cell)
            except MissingInput as error:
                # Its protection failed: record why under a key that names what was asked for.
                cell.key = key_of({"kind": "blocked", "label": cell.label, "seed": cell.seed})
                self.record_failure(cell, f"error: {error}")
                return
        artifacts = self.store.done_artifacts(cell.key)
        if artifacts is not None:
            self.remember(cell, artifacts)
            self.reused += 1
            self.grid.emit("reused", {"cell": cell.label})
            return
        self.store.mark_running(cell.key, cell.kind, cell.label)
        self.grid.emit("start", {"cell": cell.label})
        try:
            with time_limit(self.spec.cell_timeout_s):
                if cell.kind == "protect":
                    artifacts, rows = self.protect(cell)
                elif cell.kind == "attack":
                    artifacts, rows = self.attack(cell)
                else:
                    artifacts, rows = self.set_attack(cell)
        except Exception as error:  # noqa: BLE001 - recorded with its reason; the grid goes on
            log.debug("%s", traceback.format_exc())
            self.record_failure(cell, self.failure_reason(error, cell))
            return
        self.store.mark_done(cell.key, artifacts, rows)
        self.remember(cell, artifacts)
        self.computed += 1
        self.grid.emit("done", {"cell": cell.label})

    def record_failure(self, cell: Cell, reason: str, status: str = "failed") -> None:
        """A cell that produced nothing: one row says why. Failed cells are retried on resume."""
        if status == "failed":
            log.error("cell %s failed: %s", cell.label, reason)
        else:
            log.info("cell %s unavailable: %s", cell.label, reason)
        pair, metric = ("failure", "error") if status == "failed" else ("attack_vs_clean", "attack")
        row = {**self.base_row(cell), "pair": pair, "metric": metric, "value": None, "unit": "",
               "higher_is_better": "", "status": status, "note": reason}
        if self.store.cell_state(cell.key) is None:
            self.store.mark_running(cell.key, cell.kind, cell.label)
        self.store.mark_failed(cell.key, reason, [row])
        if status == "failed":
            self.failed += 1
            self.grid.emit("failed", {"cell": cell.label, "reason": reason})
        else:
            self.unavailable += 1
            self.grid.emit("unavailable", {"cell": cell.label, "reason": reason})

    def failure_reason(self, error: BaseException, cell: Cell) -> str:
        if isinstance(error, CellTimeout):
            return f"timeout: {error}"
        if isinstance(error, torch.cuda.OutOfMemoryError):
            size = f"{self.model.resolution}x{self.model.resolution}"
            return f"oom: CUDA out of memory at {size}, batch 1 ({str(error).splitlines()[0] if str(error) else ''})"
        return f"error: {type(error).__name__}: {error}"

    def remember(self, cell: Cell, artifacts: list[Artifact]) -> None:
        if cell.kind == "protect":
            image = read_png(self.store.artifact_path(artifacts[0])).unsqueeze(0)
            self.published[(cell.protection, cell.image.pixel_hash)] = (image, artifacts[0])
        elif cell.protection == "none":
            twin = (cell.attack, cell.image.pixel_hash if cell.image else "concept")
            self.clean_outputs[twin] = [(read_png(self.store.artifact_path(a)).unsqueeze(0), a)
                                        for a in artifacts if a.path.endswith(".png")]

    def attack_key(self, cell: Cell) -> str:
        purifications, attack = self.grid.attacks[cell.attack]
        if cell.kind == "attack":
            published = [self.published_of(cell.protection, cell.image)[1].sha256]
        else:
            published = [self.published_of(cell.protection, im)[1].sha256 for im in self.intake.images]
        return key_of({"kind": cell.kind, "published": published, "purifications": [p.identity() for p in purifications],
                       "attack": attack.identity(), "model": self.model.identity(), "seed": cell.seed,
                       "prompt": self.spec.prompt, "mask_dir": bool(self.spec.mask_dir)})

    def published_of(self, protection: str, image: LoadedImage) -> tuple[torch.Tensor, Artifact]:
        try:
            return self.published[(protection, image.pixel_hash)]
        except KeyError:
            raise MissingInput(f"protection {protection} failed on {image.name}; nothing to attack") from None

    def protect(self, cell: Cell) -> tuple[list[Artifact], list[dict]]:
        protection = self.grid.protections[cell.protection]
        clean = cell.image.pixels.unsqueeze(0).to(self.model.device, self.model.dtype)
        with profile_phase("protect", self.model.device, count_saved=False) as record:
            protected = protection(clean, self.model, generator=self.generator(cell.seed))
        protected = quantize_8bit(protected.detach().float().cpu())
        artifact = self.store.put_artifact(png_bytes(protected[0]), ".png")
        saved = read_png(self.store.artifact_path(artifact)).unsqueeze(0)  # measure what was published
        base = self.base_row(cell, artifact=artifact.path)
        rows = self.metric_rows(base, "protected_vs_clean", saved, cell.image.pixels.unsqueeze(0), budget=True)
        rows += self.cost_rows(base, record)
        if cell.protection != "none":
            rows += self.analysis_rows(base, cell.image.pixels.unsqueeze(0), saved)
        return [artifact], rows

    def analysis_rows(self, base: dict, clean: torch.Tensor, protected: torch.Tensor) -> list[dict]:
        """The encoder-vulnerability analysis (Xue et al., Sec. 4): δz vs δx per image."""
        try:
            from cloakbench.metrics.analysis import encoder_analysis
        except ImportError:
            return []
        with torch.no_grad():
            found = encoder_analysis(self.model, clean.to(self.model.device, self.model.dtype),
                                     protected.to(self.model.device, self.model.dtype))
        # δx = 0 leaves the amplification undefined: such a value is None with a note, never a number.
        return [{**base, "pair": "analysis", "metric": r["metric"], "value": r["value"],
                 "status": "ok" if r["value"] is not None else "unavailable", "note": r.get("note") or "",
                 "unit": r.get("unit", ""), "higher_is_better": ""} for r in found]

    def _context(self, cell: Cell, work_dir: Path | None = None):
        from cloakbench.mimicry.base import AttackContext

        names = [cell.image.name] if cell.image else [im.name for im in self.intake.images]
        return AttackContext(image_names=names, prompt=self.spec.prompt, mask_dir=self.spec.mask_dir,
                             work_dir=str(work_dir) if work_dir else None)

    def _purify(self, purifications, images: torch.Tensor, cell: Cell, context) -> torch.Tensor:
        for step, purification in enumerate(purifications):
            generator = self.generator(derive_seed(cell.seed, "purify", step))
            images = quantize_8bit(purification(images, self.model, generator=generator, context=context).float())
        return images

    def attack(self, cell: Cell) -> tuple[list[Artifact], list[dict]]:
        purifications, attack = self.grid.attacks[cell.attack]
        published, _ = self.published_of(cell.protection, cell.image)
        clean = cell.image.pixels.unsqueeze(0)
        artifacts, rows = [], []
        context = self._context(cell)
        base_cell = self.base_row(cell)
        with profile_phase("attack", self.model.device) as record:
            images = self._purify(purifications, published.to(self.model.device, self.model.dtype), cell, context)
            outputs = []
            for setting in attack.settings():
                context.setting = setting
                output = attack(images, self.model, generator=self.generator(cell.seed), context=context)
                outputs.append((setting, quantize_8bit(output.detach().float().cpu())))
        twins = self.clean_outputs.get((cell.attack, cell.image.pixel_hash))
        for index, (setting, output) in enumerate(outputs):
            artifact = self.store.put_artifact(png_bytes(output[0]), ".png")
            artifacts.append(artifact)
            note = "; ".join(f"{k}: {v}" for k, v in sorted(context.notes.items()) if k != "loss_trace")
            base = {**base_cell, "setting": setting, "artifact": artifact.path, "note": note}
            rows += self.metric_rows(base, "attack_vs_clean", output, clean)
            if cell.protection != "none":
                if twins is None:
                    raise RuntimeError("the clean twin of this attack is missing (its cell failed)")
                rows += self.metric_rows(base, "attack_vs_clean_attack", output, twins[index][0])
        rows += self.cost_rows({**base_cell, "note": ""}, record)
        return artifacts, rows

    def set_attack(self, cell: Cell) -> tuple[list[Artifact], list[dict]]:
        """An attack that learns from the whole image set (textual inversion)."""
        purifications, attack = self.grid.attacks[cell.attack]
        published = torch.cat([self.published_of(cell.protection, im)[0] for im in self.intake.images])
        clean = self.intake.batch()
        work_dir = self.store.run_dir / "work" / cell.key[:16]
        work_dir.mkdir(parents=True, exist_ok=True)
        context = self._context(cell, work_dir)
        with profile_phase("attack", self.model.device) as record:
            images = self._purify(purifications, published.to(self.model.device, self.model.dtype), cell, context)
            generations = quantize_8bit(
                attack(images, self.model, generator=self.generator(cell.seed), context=context).detach().float().cpu())
        artifacts = [self.store.put_artifact(png_bytes(g), ".png") for g in generations]
        side_files = sorted(p for p in work_dir.iterdir() if p.is_file())
        artifacts += [self.store.put_artifact(p.read_bytes(), p.suffix) for p in side_files]
        base_cell = self.base_row(cell)
        rows = self.metric_rows({**base_cell, "artifact": ""}, "generations_vs_concept", generations, clean,
                                scope="set")
        twins = self.clean_outputs.get((cell.attack, "concept"))
        for index, generation in enumerate(generations):
            base = {**base_cell, "setting": f"generation {index}", "artifact": artifacts[index].path}
            rows += self.nearest_rows(base, generation.unsqueeze(0), clean)
            if cell.protection != "none" and twins is not None:
                rows += self.metric_rows(base, "attack_vs_clean_attack", generation.unsqueeze(0), twins[index][0])
        for step, loss in enumerate(context.notes.get("loss_trace", [])):
            rows.append({**base_cell, "pair": "training", "metric": "loss", "setting": str(step),
                         "value": float(loss), "unit": "", "higher_is_better": 0})
        rows += self.cost_rows(base_cell, record)
        return artifacts, rows

    def nearest_rows(self, base: dict, generation: torch.Tensor, concept: torch.Tensor) -> list[dict]:
        """Pair metrics of one generation against its nearest concept image (by each metric)."""
        candidates = [self.metric_rows(base, "generations_vs_concept", generation, concept[i:i + 1])
                      for i in range(concept.shape[0])]
        best = []
        for rows_for_metric in zip(*candidates):
            valid = [r for r in rows_for_metric if r.get("value") is not None]
            if not valid:
                best.append(rows_for_metric[0])
                continue
            pick = max if rows_for_metric[0]["higher_is_better"] else min
            chosen = pick(valid, key=lambda r: r["value"])
            best.append({**chosen, "note": "nearest concept image"})
        return best


def build_manifest(spec: CompareSpec, plan: dict, model: LDM, intake: IntakeResult, previous: dict | None) -> dict:
    commit, dirty = git_state()
    return {
        "run": spec.out.name,
        "created_utc": (previous or {}).get("created_utc", datetime.now(timezone.utc).isoformat()),
        "resumed_utc": datetime.now(timezone.utc).isoformat() if previous else None,
        "finished_utc": None,
        "command": spec.command,
        "versions": versions(),
        "device": device_name(model.device),
        "git_commit": commit, "git_dirty": dirty,
        "model": model.identity(),
        "plan": plan, "plan_hash": plan_hash(plan),
        "skipped": [dataclasses.asdict(s) for s in intake.skipped],
        "image_notes": {im.name: im.notes for im in intake.images},
        "settings": {"quick": spec.quick, "dtype": spec.dtype, "deterministic": spec.deterministic,
                     "overrides": spec.overrides, "cell_timeout_s": spec.cell_timeout_s},
    }


@dataclass
class RunSummary:
    run_dir: Path
    cells: int
    reused: int
    computed: int
    failed: int
    unavailable: int
    skipped: list
    rows_csv: Path
    report: Path | None
    seconds: float


def run_compare(spec: CompareSpec, on_event: Event | None = None) -> RunSummary:
    """Plan, (re)run and record a compare grid; returns what happened."""
    started = time.perf_counter()
    if spec.deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    grid = Grid(spec, on_event)
    model = load_model(spec.model, device=spec.device, dtype=spec.dtype, allow_pickle=spec.allow_pickle,
                       seed=spec.seed)
    intake = load_images(spec.images, model.resolution)
    if not intake.images:
        reasons = "; ".join(s.reason for s in intake.skipped) or "no files found"
        raise StoreError(f"no usable images in {', '.join(spec.images)}: {reasons}")
    cells, plan = grid.plan(model, intake)
    with RunStore(spec.out) as store:
        previous = store.read_manifest()
        if previous and previous.get("plan_hash") != plan_hash(plan) and not spec.force:
            raise StoreError(
                f"{spec.out} holds a run with a different plan (changed: "
                f"{describe_plan_change(previous.get('plan', {}), plan)}); use another --out, or --force to "
                "switch this run to the new plan (finished cells that still match are reused)"
            )
        manifest = build_manifest(spec, plan, model, intake, previous)
        store.write_manifest(manifest)
        runner = Runner(grid, model, intake, store)
        grid.emit("plan", {"cells": len(cells), "images": len(intake.images), "skipped": len(intake.skipped)})
        order: list[str] = []
        last_flush = time.monotonic()
        for cell in cells:
            runner.run_cell(cell)
            order.append(cell.key)
            if time.monotonic() - last_flush > 30:
                store.write_rows_csv(order)
                last_flush = time.monotonic()
        rows_csv = store.write_rows_csv(order)
        manifest["finished_utc"] = datetime.now(timezone.utc).isoformat()
        manifest["cells"] = {"total": len(cells), "reused": runner.reused, "computed": runner.computed,
                             "failed": runner.failed, "unavailable": runner.unavailable}
        store.write_manifest(manifest)
    report = None
    if spec.write_report:
        report = render_report(spec.out)
    return RunSummary(spec.out, len(cells), runner.reused, runner.computed, runner.failed, runner.unavailable,
                      intake.skipped,
                      rows_csv, report, time.perf_counter() - started)


def render_report(run_dir: Path) -> Path | None:
    try:
        from cloakbench.reports.html import write_report
    except ImportError:
        log.warning("the report package is not available; rows.csv is written")
        return None
    return write_report(Path(run_dir))
