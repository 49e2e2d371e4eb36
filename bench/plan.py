"""Planning: a :class:`~cloakbench.spec.CompareSpec` becomes a list of cells, with no model loaded.

A *cell* is one unit of work, a pure function of its inputs, keyed by the SHA-256 of
canonical JSON over what determines its output (docs/RELIABILITY.md, "Store"):

- a **protect** cell: the image's pixel hash, the protection's name, version and config,
  the model's name, weights hash and dtype, and the cell's seed;
- an **attack** cell: the keys of the protect cells whose published PNGs it attacks, the
  purifications' and the attack's identities, the model, the seed, the prompt and whether a
  mask folder is used. Protect cells are deterministic, so naming them by key names the
  published bytes without computing them.

Paths never enter a key. Cells are plain, frozen data (:meth:`Cell.to_dict`), so any
executor can ship them to another process or machine; :mod:`cloakbench.execute` runs one.

Order and stages. Protect cells come first (``none``, the clean reference, before every
protection), then for each attack its clean twin (the attack on ``none``) before the same
attack on protected images, so each protected output can be compared with the same
attack's output on the clean image with the same seed. :attr:`Cell.stage` says which
cells may run together: a cell only depends on cells of earlier stages.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import cloakbench
from cloakbench import metrics as metric_pkg
from cloakbench import mimicry as mimicry_pkg
from cloakbench import protections as protection_pkg
from cloakbench.core.config import canonical_json, qualify_overrides
from cloakbench.core.images import IntakeResult
from cloakbench.core.models import ModelFacts
from cloakbench.core.quick import quick_component
from cloakbench.spec import CompareSpec

#: The clean reference: every comparison needs it, so every plan has it first.
NO_PROTECTION = "none"

#: The kinds a ``--set`` name may be qualified with, and their registries.
REGISTRIES = {"protection": protection_pkg.PROTECTIONS, "mimicry": mimicry_pkg.MIMICRY,
              "metric": metric_pkg.METRICS}


def derive_seed(run_seed: int, *parts: Any) -> int:
    """A cell seed from the run seed and what the cell is (recorded in every row)."""
    return int(hashlib.sha256(canonical_json([run_seed, *parts]).encode()).hexdigest()[:8], 16)


def key_of(payload: dict) -> str:
    """The content key of a cell: SHA-256 of canonical JSON of ``payload`` and the package version."""
    return hashlib.sha256(canonical_json({**payload, "cloakbench": cloakbench.__version__}).encode()).hexdigest()


@dataclass(frozen=True)
class ImageRef:
    """An input image as a plan names it: display name and pixel hash (its identity)."""

    name: str
    pixel_hash: str


@dataclass(frozen=True)
class Cell:
    """One unit of work. Plain data: serialisable, hashable, the same on every machine.

    ``images`` holds one image, or every image for an attack that learns from the whole
    set (``scope == "set"``, e.g. textual inversion). ``inputs`` are the keys of the
    protect cells whose published PNGs an attack cell reads, in ``images`` order;
    ``twin`` is the key of the same attack on the clean images (``""`` for the clean
    twin itself and for protect cells).
    """

    key: str
    kind: str  # "protect" | "attack"
    protection: str
    seed: int
    images: tuple[ImageRef, ...]
    attack: str = ""
    scope: str = "image"  # "image" | "set"
    inputs: tuple[str, ...] = ()
    twin: str = ""

    @property
    def stage(self) -> int:
        """0: protect cells; 1: attacks on the clean images; 2: attacks on protected images."""
        if self.kind == "protect":
            return 0
        return 1 if self.protection == NO_PROTECTION else 2

    @property
    def label(self) -> dict[str, str]:
        """What a person reads in the progress line and the journal."""
        label = {"protection": self.protection}
        if self.scope == "image":
            label = {"image": self.images[0].name, **label}
        if self.attack:
            label["attack"] = self.attack
        return label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Cell":
        return cls(**{**data, "images": tuple(ImageRef(**i) for i in data["images"]),
                      "inputs": tuple(data["inputs"])})


@dataclass
class Components:
    """The configured protections, attack chains and metrics of a spec (nothing loaded yet).

    Building them validates every name and every ``--set`` before any work: a typo costs
    nothing.
    """

    protections: dict[str, Any]
    attacks: dict[str, tuple[list[Any], Any]]  # spec "jpeg+sdedit" -> ([purifications], attack)
    metrics: list[Any]

    @classmethod
    def from_spec(cls, spec: CompareSpec) -> "Components":
        overrides = qualify_overrides(spec.overrides, REGISTRIES)

        def build(kind: str, name: str):
            component_cls = REGISTRIES[kind].get(name)
            settings = dict(quick_component(component_cls)) if spec.quick else {}
            settings.update(overrides.get((kind, name), {}))
            return component_cls.from_overrides(settings)

        names = protection_pkg.PROTECTIONS.resolve(spec.methods,
                                                   all_names=protection_pkg.publishable_protections())
        names = [NO_PROTECTION] + [n for n in names if n != NO_PROTECTION]
        attacks = {}
        for attack_spec in mimicry_pkg.resolve_attacks(spec.attacks):
            purifications, attack = mimicry_pkg.parse_attack_spec(attack_spec)
            attacks[attack_spec] = ([build("mimicry", p) for p in purifications], build("mimicry", attack))
        return cls(protections={n: build("protection", n) for n in names}, attacks=attacks,
                   metrics=[build("metric", n) for n in metric_pkg.METRICS.resolve(spec.metrics)])


@dataclass
class Plan:
    """The cells of a run in order, and the description the manifest keeps (and compares on resume)."""

    cells: list[Cell]
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical_json(self.description).encode()).hexdigest()

    def stages(self) -> list[list[Cell]]:
        """Cells grouped by :attr:`Cell.stage`, plan order kept inside each group."""
        return [[c for c in self.cells if c.stage == stage] for stage in (0, 1, 2)]


def build_plan(spec: CompareSpec, components: Components, model: ModelFacts, intake: IntakeResult) -> Plan:
    """Every cell of ``spec`` for the images of ``intake``: pure, deterministic, no model built."""
    model_id = model.identity(spec.dtype)
    index, count = spec.shard
    images = [im for im in intake.images if int(im.pixel_hash, 16) % count == index]
    refs = {im.pixel_hash: ImageRef(im.name, im.pixel_hash) for im in images}
    all_refs = tuple(refs[im.pixel_hash] for im in images)
    cells: list[Cell] = []
    protect_keys: dict[tuple[str, str], str] = {}
    for name, protection in components.protections.items():
        for image in images:
            seed = derive_seed(spec.seed, image.pixel_hash, name)
            key = key_of({"kind": "protect", "image": image.pixel_hash, "protection": protection.identity(),
                          "model": model_id, "seed": seed})
            protect_keys[(name, image.pixel_hash)] = key
            cells.append(Cell(key, "protect", name, seed, (refs[image.pixel_hash],)))
    for attack_spec, (purifications, attack) in components.attacks.items():
        chain = {"purifications": [p.identity() for p in purifications], "attack": attack.identity(),
                 "model": model_id, "prompt": spec.prompt, "mask_dir": bool(spec.mask_dir)}
        if attack.scope == "set":
            # A set attack learns from every image at once: one cell per protection, in shard 0 only.
            groups = [all_refs] if index == 0 else []
            seeds = [derive_seed(spec.seed, "set", attack_spec)]
        else:
            groups = [(ref,) for ref in all_refs]
            # The attack seed ignores the protection: clean and protected twins share it.
            seeds = [derive_seed(spec.seed, ref.pixel_hash, attack_spec) for ref in all_refs]
        twins: dict[tuple[str, ...], str] = {}
        for name in components.protections:
            for group, seed in zip(groups, seeds):
                inputs = tuple(protect_keys[(name, ref.pixel_hash)] for ref in group)
                kind = "set-attack" if attack.scope == "set" else "attack"
                key = key_of({"kind": kind, "inputs": list(inputs), **chain, "seed": seed})
                hashes = tuple(ref.pixel_hash for ref in group)
                if name == NO_PROTECTION:
                    twins[hashes] = key
                cells.append(Cell(key, "attack", name, seed, group, attack=attack_spec, scope=attack.scope,
                                  inputs=inputs, twin="" if name == NO_PROTECTION else twins[hashes]))
    description = {
        "images": [{"name": im.name, "hash": im.pixel_hash} for im in images],
        "protections": [p.identity() for p in components.protections.values()],
        "attacks": [{"spec": s, "purifications": [p.identity() for p in ps], "attack": a.identity()}
                    for s, (ps, a) in components.attacks.items()],
        "metrics": [m.identity() for m in components.metrics],
        "model": model_id, "seed": spec.seed, "prompt": spec.prompt, "shard": list(spec.shard),
    }
    return Plan(cells, description)


def describe_plan_change(old: dict, new: dict) -> str:
    """The top-level entries of two plan descriptions that differ, for the refusal message."""
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(changed) or "details"
