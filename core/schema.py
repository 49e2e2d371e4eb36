"""The rows every run writes: their columns, what each pair compares, and one row type.

The only place that lists the columns of ``rows.csv``: the store writes them, the report
reads them, the executor builds :class:`Row` values. Rows are tidy long format, one
number per row (docs/ARCHITECTURE.md, "Results store").
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypedDict


class Pair(str, Enum):
    """What a row compares; the ``pair`` column holds the value."""

    PROTECTED_VS_CLEAN = "protected_vs_clean"  # is the protection invisible?
    ATTACK_VS_CLEAN = "attack_vs_clean"  # the attack's output against the clean image
    ATTACK_VS_CLEAN_ATTACK = "attack_vs_clean_attack"  # against the same attack's output on the clean image
    GENERATIONS_VS_CONCEPT = "generations_vs_concept"  # a per-set attack's generations against the set
    GENERATIONS = "generations"  # a per-set attack's generations alone (no-reference: BRISQUE, FDFR)
    PROTECTED = "protected"  # the published protected image alone (no-reference: BRISQUE)
    ANALYSIS = "analysis"  # the encoder-vulnerability analysis
    COST = "cost"  # wall-clock and memory of the cell
    TRAINING = "training"  # a per-set attack's training loss trace
    FAILURE = "failure"  # a cell that produced nothing; ``note`` says why

    def __str__(self) -> str:
        return self.value


#: Pairs whose rows say how strongly a protection stops an attack (lower similarity = stronger).
ATTACK_PAIRS: tuple[Pair, ...] = (Pair.ATTACK_VS_CLEAN, Pair.ATTACK_VS_CLEAN_ATTACK, Pair.GENERATIONS_VS_CONCEPT)
#: Pairs of per-image attack outputs (what the report's image grids show).
PER_IMAGE_ATTACK_PAIRS: tuple[Pair, ...] = (Pair.ATTACK_VS_CLEAN_ATTACK, Pair.ATTACK_VS_CLEAN)

#: The columns of ``rows.csv``, in order.
#: ``protection_setting`` is the protection's swept configuration in canonical form
#: (``eps=8``; several settings joined by ``,`` in name order; empty when nothing is swept),
#: beside ``setting`` (the attack's own axis, e.g. an SDEdit strength); ``attack_setting`` is
#: the attack chain's swept configuration in the same form (purifications' fields prefixed by
#: their name, ``jpeg.quality=75``). ``run_seed`` is the run seed (``--seeds``) the cell's
#: ``seed`` derives from. ``protect_model`` and
#: ``attack_model`` name the model the protection was computed on and the model the attack ran
#: on (the same unless ``--attack-model`` differs: transfer). ``category`` is the image's
#: dataset category (README, "Datasets, sweeps, seeds and transfer"). Runs written before these columns
#: existed lack them; readers fill them with "".
COLUMNS: tuple[str, ...] = (
    "run",
    "cell",
    "image",
    "image_name",
    "category",
    "protection",
    "protection_setting",
    "purification",
    "mimicry",
    "attack_setting",
    "setting",
    "run_seed",
    "seed",
    "protect_model",
    "attack_model",
    "pair",
    "metric",
    "value",
    "unit",
    "higher_is_better",
    "status",
    "note",
    "artifact",
)


#: The columns that identify one observation of a cell (which image, protection, attack, setting,
#: seed, models, pair and metric); the others carry its value and what is said of it.
OBSERVATION_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in COLUMNS
    if c
    not in {"run", "cell", "image_name", "category", "value", "unit", "higher_is_better", "status", "note", "artifact"}
)


class Row(TypedDict, total=False):
    """One tidy row (see :data:`COLUMNS`); ``value`` is ``None`` unless ``status == "ok"``."""

    run: str
    cell: str
    image: str
    image_name: str
    category: str
    protection: str
    protection_setting: str
    purification: str
    mimicry: str
    attack_setting: str
    setting: str
    run_seed: int
    seed: int
    protect_model: str
    attack_model: str
    pair: str
    metric: str
    value: float | None
    unit: str
    higher_is_better: int | str
    status: str
    note: str
    artifact: str


def csv_value(value: Any) -> Any:
    """A row value as ``rows.csv`` writes it: ``None`` empty, booleans 0/1, floats at full precision."""
    if value is None:
        return ""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return value
