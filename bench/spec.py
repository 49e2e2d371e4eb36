"""What defines a compare run: :class:`CompareSpec`, built from flags and the TOML file.

A spec is plain data. :mod:`cloakbench.bench.plan` turns it into cells without loading a model;
:mod:`cloakbench.bench.executors` run the cells (docs/ARCHITECTURE.md, "Plan and execute").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CompareSpec:
    """Everything that defines a compare run (built from flags and the TOML file).

    ``overrides`` maps a component name to ``{field: value}``. The name may be bare
    (``sds-``) or qualified by its kind (``protection:noise``, ``mimicry:noise``,
    ``metric:psnr``); a bare name that two kinds share is refused (see
    :func:`cloakbench.core.config.qualify_overrides`).

    ``sweeps`` maps a component name (bare or kind-qualified, as ``overrides``) to
    ``{field: [value, ...]}``: each combination of values is its own configured instance
    (``--sweep sds-.eps=4,8,16``). ``seeds`` repeats every cell per run seed (empty: just
    ``seed``). ``attack_models`` are the models attacks run on (empty: ``model``, no transfer).
    ``images`` are folders, category folders, manifest CSVs, files or ``samples``
    (:mod:`cloakbench.core.datasets`).
    """

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
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    attack_models: list[str] = field(default_factory=list)
    cell_timeout_s: float | None = None
    mask_dir: str | None = None
    allow_pickle: bool = False
    deterministic: bool = False
    #: Protect cells per batch: 1 (one image at a time), N, or "auto" (bench/batching.py). Not in any cell key.
    batch_size: int | str = 1
    shard: tuple[int, int] = (0, 1)
    write_report: bool = True
    command: str = ""

    @property
    def run_seeds(self) -> list[int]:
        """The run seeds, in order, each once."""
        return list(dict.fromkeys(self.seeds)) or [self.seed]

    @property
    def attack_model_names(self) -> list[str]:
        """The models attacks run on, in order, each once."""
        return list(dict.fromkeys(self.attack_models)) or [self.model]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (a worker process rebuilds its workspace from it)."""
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["shard"] = list(self.shard)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompareSpec:
        return cls(**{**data, "out": Path(data["out"]), "shard": tuple(data["shard"])})


def parse_sweep_options(items: list[str]) -> dict[str, dict[str, str]]:
    """``["sds-.eps=4,8,16"]`` -> ``{"sds-": {"eps": "4,8,16"}}``.

    Values are separated by ``,``; for a list-valued setting (``sdedit.strengths``) each
    value is one list and values are separated by ``;`` (``sdedit.strengths=0.3,0.5;0.7``):
    the splitting happens in :mod:`cloakbench.bench.plan`, which knows the setting's type, so
    here the text after ``=`` is kept whole, as a string (a TOML file gives a list instead).
    """
    from cloakbench.core.config import ConfigError

    result: dict[str, dict[str, str]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if not _ or "." not in key or not values.strip():
            raise ConfigError(f"--sweep {item!r}: expected NAME.FIELD=V1,V2,..., e.g. sds-.eps=4,8,16")
        name, field_name = key.rsplit(".", 1)
        fields = result.setdefault(name.strip(), {})
        if field_name.strip() in fields:  # the last would silently win: one field is one axis
            raise ConfigError(
                f"--sweep {key.strip()} is given twice ({fields[field_name.strip()]} and {values}); "
                f"give its values once, e.g. --sweep {key.strip()}={fields[field_name.strip()]},{values}"
            )
        fields[field_name.strip()] = values
    return result
