"""What defines a compare run: :class:`CompareSpec`, built from flags and the TOML file.

A spec is plain data. :mod:`cloakbench.plan` turns it into cells without loading a model;
:mod:`cloakbench.executors` run the cells (docs/ARCHITECTURE.md, "Plan and execute").
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
    cell_timeout_s: float | None = None
    mask_dir: str | None = None
    allow_pickle: bool = False
    deterministic: bool = False
    shard: tuple[int, int] = (0, 1)
    write_report: bool = True
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (a worker process rebuilds its workspace from it)."""
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["shard"] = list(self.shard)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompareSpec":
        return cls(**{**data, "out": Path(data["out"]), "shard": tuple(data["shard"])})
