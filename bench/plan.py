"""Planning: a :class:`~cloakbench.bench.spec.CompareSpec` becomes a list of cells, with no model loaded.

A *cell* is one unit of work, a pure function of its inputs, keyed by the SHA-256 of
canonical JSON over what determines its output (docs/RELIABILITY.md, "Store"):

- a **protect** cell: the image's pixel hash, the protection's name, version and config
  (with the image's own prompt when the dataset gives one), the model's name, weights
  hash and dtype, and the cell's seed;
- an **attack** cell: the keys of the protect cells whose published PNGs it attacks, the
  purifications' and the attack's identities, the model the attack runs on, the seed, the
  prompt, whether a mask folder is used and the hash of the image's own mask; for a chain
  with an adaptive stage that runs public protection code (``encoder-harden``'s training
  pairs), the configured identities of those protections too, so a ``--set`` on one of
  them changes the key (:func:`copier_identities`). Protect
  cells are deterministic, so naming them by key names the published bytes without
  computing them.

Paths never enter a key. Cells are plain, frozen data (:meth:`Cell.to_dict`), so any
executor can ship them to another process or machine; :mod:`cloakbench.bench.execute` runs one.

Axes (README, "Datasets, sweeps, seeds and transfer"): every swept configuration of a
protection or an attack (``--sweep sds-.eps=4,8,16``) is its own configured instance,
keyed ``sds-[eps=8]`` in :class:`Components` and recorded as ``protection_setting`` /
``attack_setting``; every run seed (``--seeds 0,1,2``) repeats every cell with seeds
derived from it; every attack model (``--attack-model``) repeats every attack cell. Since
keys depend only on what a cell computes, widening an axis and rerunning reuses every
finished cell.

Order and stages. Protect cells come first (``none``, the clean reference, before every
protection), then for each attack its clean twin (the attack on ``none``) before the same
attack on protected images, so each protected output can be compared with the same
attack's output on the clean image with the same seed and attack model. :attr:`Cell.stage`
says which cells may run together: a cell only depends on cells of earlier stages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

import cloakbench
from cloakbench import metrics as metric_pkg
from cloakbench import mimicry as mimicry_pkg
from cloakbench import protections as protection_pkg
from cloakbench.bench.copier import RunProtections
from cloakbench.bench.spec import CompareSpec
from cloakbench.core.config import ConfigError, canonical_json, config_fields, qualify_overrides
from cloakbench.core.images import IntakeResult
from cloakbench.core.quick import quick_component
from cloakbench.core.registry import Registry
from cloakbench.core.zoo import ModelFacts, model_facts
from cloakbench.metrics.base import Metric
from cloakbench.mimicry.base import Mimicry
from cloakbench.protections.base import Protection

#: The clean reference: every comparison needs it, so every plan has it first.
NO_PROTECTION = "none"

#: The kinds a ``--set`` name may be qualified with, and their registries.
REGISTRIES: dict[str, Registry[Any]] = {
    "protection": protection_pkg.PROTECTIONS,
    "mimicry": mimicry_pkg.MIMICRY,
    "metric": metric_pkg.METRICS,
}


def derive_seed(run_seed: int, *parts: Any) -> int:
    """A cell seed from the run seed and what the cell is (recorded in every row)."""
    return int(hashlib.sha256(canonical_json([run_seed, *parts]).encode()).hexdigest()[:8], 16)


def key_of(payload: dict) -> str:
    """The content key of a cell: SHA-256 of canonical JSON of ``payload`` and the package version."""
    return hashlib.sha256(canonical_json({**payload, "cloakbench": cloakbench.__version__}).encode()).hexdigest()


#: In ``--sweep NAME.FIELD=...``, the separator of values of a list-valued setting (a scalar's is ``,``).
LIST_SWEEP_SEPARATOR = ";"


def variant_key(name: str, setting: str) -> str:
    """The key of one configured instance: ``sds-`` unswept, ``sds-[eps=8]`` for a swept configuration.

    >>> variant_key("sds-", ""), variant_key("sds-", "eps=8")
    ('sds-', 'sds-[eps=8]')
    """
    return f"{name}[{setting}]" if setting else name


def format_setting_value(value: Any) -> str:
    """A setting's value as ``protection_setting`` writes it: ``8`` for 8.0, ``[0.3;0.5]`` for a list.

    >>> format_setting_value(8.0), format_setting_value((0.3, 0.5))
    ('8', '[0.3;0.5]')
    """
    if isinstance(value, (tuple, list)):
        return "[" + ";".join(format_setting_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def canonical_setting(config: Any, fields: list[str], prefix: str = "") -> str:
    """``eps=8`` (fields in name order, joined by ``,``) from a configured instance's own values."""
    return ",".join(f"{prefix}{name}={format_setting_value(getattr(config, name))}" for name in sorted(fields))


def _is_list_setting(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_setting(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (tuple, list)


def sweep_values(raw: Any, annotation: Any, where: str) -> list[str]:
    """The values of one swept setting, as text for :func:`~cloakbench.core.config.apply_overrides`.

    From the command line ``raw`` is the text after ``=``: split on ``,``, or on ``;`` for a
    list-valued setting (whose items stay separated by ``,``). From a TOML file it is a list
    of values; each becomes text too, so ``4`` in TOML and ``4`` on the command line key the
    same cell.
    """
    if isinstance(raw, str):
        separator = LIST_SWEEP_SEPARATOR if _is_list_setting(annotation) else ","
        values = [part.strip() for part in raw.split(separator) if part.strip()]
    elif isinstance(raw, (list, tuple)):
        values = [
            ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v).lower() if isinstance(v, bool) else str(v)
            for v in raw
        ]
    else:
        raise ConfigError(f"--sweep {where}: expected a list of values, e.g. {where}=4,8,16")
    if not values:
        raise ConfigError(f"--sweep {where}: no values given, e.g. {where}=4,8,16")
    return values


#: What an image changes in the components of its cells: ``((field, value), ...)`` per component.
Adaptation = tuple[tuple[str, Any], ...]


def protection_adaptation(protection: Any, prompt: str) -> Adaptation:
    """The image's own prompt, for a protection that takes a prompt (when the image has one)."""
    if not prompt or "prompt" not in config_fields(type(protection.config)) or protection.config.prompt == prompt:
        return ()
    return (("prompt", prompt),)


def attack_adaptation(component: Any, has_mask: bool) -> Adaptation:
    """``mask="folder"`` for an inpainting component when the dataset gives the image its own mask."""
    if not has_mask or "mask" not in config_fields(type(component.config)):
        return ()
    annotation = typing.get_type_hints(type(component.config))["mask"]
    if "folder" not in typing.get_args(annotation) or component.config.mask == "folder":
        return ()
    return (("mask", "folder"),)


def adapted(component: Any, adaptation: Adaptation) -> Any:
    """``component`` with ``adaptation`` applied to its config (the same instance when there is none)."""
    if not adaptation:
        return component
    return type(component)(dataclasses.replace(component.config, **dict(adaptation)))


def copier_identities(stages: list[Mimicry], public: RunProtections) -> list[dict[str, Any]]:
    """The configured identities (name, version, config) of the public protections a chain runs.

    ``encoder-harden`` trains on pairs made by the protections of its ``against`` with the run's
    ``--quick`` and ``--set`` settings (:class:`~cloakbench.bench.copier.RunProtections`), which
    need not be among ``--methods``: its own identity names only ``against``, so without these a
    ``--set sds-.steps=50`` would reuse cells attacked with an encoder trained on other pairs.
    Empty for every chain without such a stage (their keys are unchanged).
    """
    try:
        return [public.settings_identity(name) for stage in stages for name in stage.copier_protections(public)]
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from None


@dataclass(frozen=True)
class ImageRef:
    """An input image as a plan names it: display name and pixel hash (its identity), and what the
    dataset says of it: category, prompt ("" none) and the hash of its mask ("" none)."""

    name: str
    pixel_hash: str
    category: str = ""
    prompt: str = ""
    mask: str = ""


@dataclass(frozen=True)
class Cell:
    """One unit of work. Plain data: serialisable, hashable, the same on every machine.

    ``images`` holds one image, or every image for an attack that learns from the whole
    set (``scope == "set"``, e.g. textual inversion). ``inputs`` are the keys of the
    protect cells whose published PNGs an attack cell reads, in ``images`` order;
    ``twin`` is the key of the same attack on the clean images (``""`` for the clean
    twin itself and for protect cells). ``protection_setting`` / ``attack_setting`` name
    the swept configuration (``""`` unswept); ``model`` is the model the cell runs on
    (the protection model for protect cells, the attack model for attack cells) and
    ``run_seed`` the run seed its ``seed`` derives from.

    What the cell runs is resolved here, once: ``prompt`` is the prompt it uses (the image's own,
    else the run's) and ``adaptations`` what the image changes in each component of its chain
    (the protection; or the purifications, then the attack). :meth:`Components.chain` gives the
    very instances the cell's key was computed from; execute never re-derives them.
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
    protection_setting: str = ""
    attack_setting: str = ""
    model: str = ""
    run_seed: int = 0
    prompt: str = ""
    adaptations: tuple[Adaptation, ...] = ()

    @property
    def protection_key(self) -> str:
        """The key of this cell's protection in :attr:`Components.protections`."""
        return variant_key(self.protection, self.protection_setting)

    @property
    def attack_key(self) -> str:
        """The key of this cell's attack chain in :attr:`Components.attacks`."""
        return variant_key(self.attack, self.attack_setting)

    @property
    def stage(self) -> int:
        """0: protect cells; 1: attacks on the clean images; 2: attacks on protected images."""
        if self.kind == "protect":
            return 0
        return 1 if self.protection == NO_PROTECTION else 2

    @property
    def label(self) -> dict[str, str]:
        """What a person reads in the progress line and the journal."""
        label = {"protection": self.protection_key}
        if self.scope == "image":
            label = {"image": self.images[0].name, **label}
        if self.attack:
            label["attack"] = self.attack_key
            label["model"] = self.model
        label["seed"] = str(self.run_seed)
        return label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        adaptations = tuple(tuple(tuple(pair) for pair in a) for a in data.get("adaptations", ()))
        images = tuple(ImageRef(**i) for i in data["images"])
        return cls(**{**data, "images": images, "inputs": tuple(data["inputs"]), "adaptations": adaptations})


@dataclass
class Components:
    """The configured protections, attack chains and metrics of a spec (nothing loaded yet).

    ``protections`` and ``attacks`` are keyed by :func:`variant_key`: the name (or attack
    spec, ``jpeg+sdedit``) alone when unswept, with the canonical setting in brackets for
    each swept configuration. Building them validates every name, every ``--set`` and
    every ``--sweep`` before any work: a typo costs nothing.
    """

    protections: dict[str, Protection]
    attacks: dict[
        str, tuple[list[Mimicry], Mimicry]
    ]  # "jpeg+sdedit" or "sdedit[guidance_scale=3]" -> ([purif.], attack)
    metrics: list[Metric]
    protection_variants: list[tuple[str, str]] = field(default_factory=list)  # (name, setting), plan order
    attack_variants: list[tuple[str, str]] = field(default_factory=list)  # (attack spec, setting)

    def chain(self, cell: Cell) -> list[Any]:
        """The component instances ``cell`` runs, as its plan resolved them: ``[protection]`` for a
        protect cell, ``[*purifications, attack]`` for an attack cell (its key names exactly these)."""
        base: list[Protection | Mimicry]
        if cell.kind == "protect":
            base = [self.protections[cell.protection_key]]
        else:
            purifications, attack = self.attacks[cell.attack_key]
            base = [*purifications, attack]
        adaptations = cell.adaptations or ((),) * len(base)
        if len(adaptations) != len(base):
            raise ValueError(f"cell {cell.key[:12]}: {len(adaptations)} adaptations for a chain of {len(base)}")
        return [adapted(component, a) for component, a in zip(base, adaptations)]

    @classmethod
    def from_spec(cls, spec: CompareSpec) -> Components:
        overrides = qualify_overrides(spec.overrides, REGISTRIES)
        try:
            sweeps = qualify_overrides(spec.sweeps, REGISTRIES)
        except ConfigError as error:
            raise ConfigError(str(error).replace("--set", "--sweep")) from None
        used: set[tuple[str, str]] = set()

        def variants(kind: str, name: str, prefix: str = "") -> list[tuple[str, Any]]:
            """``[(canonical setting, component)]``: one unswept instance, or one per swept combination."""
            used.add((kind, name))
            component_cls = REGISTRIES[kind].get(name)
            settings = dict(quick_component(component_cls)) if spec.quick else {}
            settings.update(overrides.get((kind, name), {}))
            sweep = sweeps.get((kind, name))
            if not sweep:
                return [("", component_cls.from_overrides(settings))]
            fields = config_fields(component_cls.Config)
            hints = typing.get_type_hints(component_cls.Config)
            axes = []
            for field_name in sorted(sweep):
                if field_name not in fields:
                    raise ConfigError(
                        f"--sweep {name}.{field_name}: {name} has no setting {field_name!r}; its "
                        f"settings are: {', '.join(fields) or 'none'}"
                    )
                if field_name in overrides.get((kind, name), {}):
                    raise ConfigError(f"{name}.{field_name} is given by both --set and --sweep; keep one")
                axes.append((field_name, sweep_values(sweep[field_name], hints[field_name], f"{name}.{field_name}")))
            found: dict[str, Any] = {}
            for combination in itertools.product(*(values for _, values in axes)):
                component = component_cls.from_overrides({**settings, **dict(zip([f for f, _ in axes], combination))})
                found.setdefault(canonical_setting(component.config, [f for f, _ in axes], prefix), component)
            return list(found.items())

        names = protection_pkg.PROTECTIONS.resolve(spec.methods, all_names=protection_pkg.publishable_protections())
        names = [NO_PROTECTION] + [n for n in names if n != NO_PROTECTION]
        protections, protection_variants = {}, []
        for name in names:
            for setting, component in variants("protection", name):
                protections[variant_key(name, setting)] = component
                protection_variants.append((name, setting))
        attacks, attack_variants = {}, []
        for attack_spec in mimicry_pkg.resolve_attacks(spec.attacks):
            purification_names, attack_name = mimicry_pkg.parse_attack_spec(attack_spec)
            # A chain's settings: the purifications' (prefixed by their name) and the attack's own.
            chain = [variants("mimicry", p, prefix=f"{p}.") for p in purification_names]
            chain.append(variants("mimicry", attack_name))
            for combination in itertools.product(*chain):
                setting = ",".join(s for s, _ in combination if s)
                components = [c for _, c in combination]
                attacks[variant_key(attack_spec, setting)] = (components[:-1], components[-1])
                attack_variants.append((attack_spec, setting))
        metrics = []
        for name in metric_pkg.METRICS.resolve(spec.metrics):
            (setting, metric), *more = variants("metric", name)
            if more or setting:
                raise ConfigError(
                    f"--sweep {name}: metrics cannot be swept (every metric measures every cell); "
                    "sweep a protection or an attack setting"
                )
            metrics.append(metric)
        unused = sorted(f"{kind}:{name}" for kind, name in sweeps if (kind, name) not in used)
        if unused:
            raise ConfigError(
                f"--sweep names {', '.join(unused)}, which this run does not use; add it to "
                "--methods or --attacks, or drop the sweep"
            )
        return cls(
            protections=protections,
            attacks=attacks,
            metrics=metrics,
            protection_variants=protection_variants,
            attack_variants=attack_variants,
        )


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


#: A plan this large is refused unless the user confirms it (``bench compare --yes``): a sweep typed
#: with one value too many multiplies the grid, and 10^5 cells took 46 s to plan and a 35 MB manifest
#: before the first cell ran (issue #30).
PLAN_CELL_LIMIT = 100_000


def count_cells(spec: CompareSpec, components: Components, intake: IntakeResult) -> int:
    """How many cells :func:`build_plan` will make, counted without making them (nothing hashed).

    Per run seed: a protect cell per protection variant and image of the shard; an attack cell per
    attack variant, attack model and protection variant, and per image (``scope == "image"``) or
    once in shard 0 (``scope == "set"``).
    """
    index, count = spec.shard
    images = sum(1 for im in intake.images if int(im.pixel_hash, 16) % count == index)
    protections = len(components.protection_variants)
    per_protection = 0
    for attack_spec, setting in components.attack_variants:
        _, attack = components.attacks[variant_key(attack_spec, setting)]
        per_protection += (1 if index == 0 else 0) if attack.scope == "set" else images
    per_seed = protections * images + per_protection * protections * len(spec.attack_model_names)
    return per_seed * len(spec.run_seeds)


def build_plan(
    spec: CompareSpec,
    components: Components,
    model: ModelFacts,
    intake: IntakeResult,
    attack_models: dict[str, ModelFacts] | None = None,
) -> Plan:
    """Every cell of ``spec`` for the images of ``intake``: pure, deterministic, no model built.

    ``intake`` may be a :class:`~cloakbench.core.datasets.Dataset` (categories, prompts,
    masks) or a plain intake. ``attack_models`` maps each attack model's name to its facts
    (read with :func:`~cloakbench.core.zoo.model_facts` when not given).
    """
    model_id = model.identity(spec.dtype)
    if attack_models is None:
        attack_models = {
            name: model if name == spec.model else model_facts(name, seed=spec.seed, allow_pickle=spec.allow_pickle)
            for name in spec.attack_model_names
        }
    attack_ids = {name: facts.identity(spec.dtype) for name, facts in attack_models.items()}
    info = getattr(intake, "info", {})
    index, count = spec.shard
    images = [im for im in intake.images if int(im.pixel_hash, 16) % count == index]
    refs = {}
    for im in images:
        found = info.get(im.pixel_hash)
        refs[im.pixel_hash] = ImageRef(
            im.name, im.pixel_hash, *((found.category, found.prompt, found.mask_hash) if found else ())
        )
    all_refs = tuple(refs[im.pixel_hash] for im in images)
    cells: list[Cell] = []
    protect_keys: dict[tuple[int, str, str], str] = {}
    # The public protection code as an adaptive copier runs it (no model needed for its settings).
    public = RunProtections(None, quick=spec.quick, overrides=qualify_overrides(spec.overrides, REGISTRIES))
    for run_seed in spec.run_seeds:
        for name, setting in components.protection_variants:
            protection = components.protections[variant_key(name, setting)]
            for ref in all_refs:
                seed = derive_seed(run_seed, ref.pixel_hash, name)
                draft = Cell(
                    "",
                    "protect",
                    name,
                    seed,
                    (ref,),
                    protection_setting=setting,
                    model=spec.model,
                    run_seed=run_seed,
                    prompt=ref.prompt,
                    adaptations=(protection_adaptation(protection, ref.prompt),),
                )
                # The key names the very instance execute will run (Components.chain).
                (resolved,) = components.chain(draft)
                key = key_of(
                    {
                        "kind": "protect",
                        "image": ref.pixel_hash,
                        "protection": resolved.identity(),
                        "model": model_id,
                        "seed": seed,
                    }
                )
                protect_keys[(run_seed, variant_key(name, setting), ref.pixel_hash)] = key
                cells.append(dataclasses.replace(draft, key=key))
    for run_seed in spec.run_seeds:
        for attack_spec, attack_setting in components.attack_variants:
            purifications, attack = components.attacks[variant_key(attack_spec, attack_setting)]
            if attack.scope == "set":
                # A set attack learns from every image at once: one cell per protection, in shard 0 only.
                groups = [all_refs] if index == 0 else []
                seeds = [derive_seed(run_seed, "set", attack_spec)]
            else:
                groups = [(ref,) for ref in all_refs]
                # The attack seed ignores the protection: clean and protected twins share it.
                seeds = [derive_seed(run_seed, ref.pixel_hash, attack_spec) for ref in all_refs]
            for attack_model in spec.attack_model_names:
                twins: dict[tuple[str, ...], str] = {}
                for name, setting in components.protection_variants:
                    for group, seed in zip(groups, seeds):
                        single = group[0] if attack.scope == "image" else None
                        has_mask = bool(single and single.mask)
                        inputs = tuple(
                            protect_keys[(run_seed, variant_key(name, setting), ref.pixel_hash)] for ref in group
                        )
                        hashes = tuple(ref.pixel_hash for ref in group)
                        draft = Cell(
                            "",
                            "attack",
                            name,
                            seed,
                            group,
                            attack=attack_spec,
                            scope=attack.scope,
                            inputs=inputs,
                            twin="" if name == NO_PROTECTION else twins[hashes],
                            protection_setting=setting,
                            attack_setting=attack_setting,
                            model=attack_model,
                            run_seed=run_seed,
                            prompt=(single.prompt if single else "") or spec.prompt,
                            adaptations=tuple(attack_adaptation(c, has_mask) for c in [*purifications, attack]),
                        )
                        *resolved_purifications, resolved_attack = components.chain(draft)
                        chain = {
                            "purifications": [p.identity() for p in resolved_purifications],
                            "attack": resolved_attack.identity(),
                            "model": attack_ids[attack_model],
                            "prompt": draft.prompt,
                            "mask_dir": bool(spec.mask_dir),
                        }
                        if single is not None and has_mask:
                            chain["mask"] = single.mask
                        copier = copier_identities([*resolved_purifications, resolved_attack], public)
                        if copier:
                            chain["copier_protections"] = copier
                        kind = "set-attack" if attack.scope == "set" else "attack"
                        key = key_of({"kind": kind, "inputs": list(inputs), **chain, "seed": seed})
                        if name == NO_PROTECTION:
                            twins[hashes] = key
                        cells.append(dataclasses.replace(draft, key=key))
    description = {
        "images": [
            {"name": r.name, "hash": r.pixel_hash, "category": r.category, "prompt": r.prompt, "mask": r.mask}
            for r in all_refs
        ],
        "protections": [
            {"setting": s, **components.protections[variant_key(n, s)].identity()}
            for n, s in components.protection_variants
        ],
        "attacks": [
            {
                "spec": a,
                "setting": s,
                "purifications": [p.identity() for p in ps],
                "attack": at.identity(),
                **({"copier_protections": found} if (found := copier_identities([*ps, at], public)) else {}),
            }
            for (a, s), (ps, at) in zip(components.attack_variants, components.attacks.values())
        ],
        "metrics": [m.identity() for m in components.metrics],
        "model": model_id,
        "attack_models": [attack_ids[n] for n in spec.attack_model_names],
        "seed": spec.seed,
        "seeds": spec.run_seeds,
        "prompt": spec.prompt,
        "shard": list(spec.shard),
    }
    return Plan(cells, description)


def is_widening(finished: set[str], plan: Plan) -> bool:
    """Whether ``plan`` keeps every finished cell of a run folder (more seeds, sweep values, images or
    attack models): then switching to it loses no work, and the driver accepts it without ``--force``."""
    return finished <= {cell.key for cell in plan.cells}


def describe_plan_change(old: dict, new: dict) -> str:
    """The top-level entries of two plan descriptions that differ, for the refusal message."""
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(changed) or "details"
