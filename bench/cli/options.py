"""Options shared by several verbs, and the flag > TOML file > default rule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cloakbench.core.config import ConfigError, load_toml, parse_set_options, refuse_unknown_keys


def merged_overrides(config_file: dict, set_items: list[str]) -> dict[str, dict[str, Any]]:
    """``[set.NAME]`` tables of the TOML file, then ``--set`` flags on top."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, table in (config_file.get("set") or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"[set.{name}] in the config file must be a table of FIELD = VALUE")
        overrides.setdefault(name, {}).update(table)
    for name, fields in parse_set_options(set_items or []).items():
        overrides.setdefault(name, {}).update(fields)
    return overrides


#: The keys a ``--config`` file may set for each verb (its ``[section]`` table or the top level);
#: anything else is refused with a did-you-mean, never ignored. tests/test_robustness.py
#: checks this against the keys bench/cli/<verb>.py actually reads from the file.
FILE_KEYS: dict[str, frozenset[str]] = {
    "compare": frozenset(
        {
            "images",
            "methods",
            "attacks",
            "metrics",
            "model",
            "out",
            "device",
            "dtype",
            "seed",
            "prompt",
            "quick",
            "cell_timeout",
            "mask_dir",
            "seeds",
            "attack_models",
            "attack_model",
        }
    ),
}
#: Tables every verb's file may hold besides its own section: ``[set.NAME]`` and ``[sweep.NAME]``.
FILE_TABLES = frozenset({"set", "sweep"})


def check_config_keys(data: dict[str, Any], section: str, path: Path) -> None:
    """Refuse unknown sections and keys of a ``--config`` file, naming the file and the closest key."""
    known_keys = FILE_KEYS.get(section, frozenset())
    tables = {key: value for key, value in data.items() if isinstance(value, dict)}
    sections = FILE_TABLES | {section} | set(FILE_KEYS)
    refuse_unknown_keys(tables, sections, str(path), what="section")
    other = [name for name in tables if name in FILE_KEYS and name != section]
    if other:
        raise ConfigError(f"{path}: [{other[0]}] is for `bench {other[0]}`; this command reads [{section}]")
    top = [key for key, value in data.items() if not isinstance(value, dict)]
    refuse_unknown_keys(top, known_keys, f"{path}: top level")
    refuse_unknown_keys(data.get(section) or {}, known_keys, f"{path}: [{section}]")


def read_config(path: Path | None, section: str) -> dict[str, Any]:
    """The TOML file's top level merged with its ``[section]`` table (section wins).

    Unknown sections and keys are refused with a did-you-mean (:func:`check_config_keys`).
    """
    if path is None:
        return {}
    data = load_toml(path)
    check_config_keys(data, section, path)
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    merged.update(data.get(section) or {})
    merged["set"] = data.get("set") or {}
    merged["sweep"] = data.get("sweep") or {}
    return merged


def merged_sweeps(config_file: dict, sweep_items: list[str]) -> dict[str, dict[str, Any]]:
    """``[sweep.NAME]`` tables of the TOML file (``eps = [4, 8, 16]``), then ``--sweep`` flags on top."""
    from cloakbench.bench.spec import parse_sweep_options

    sweeps: dict[str, dict[str, Any]] = {}
    for name, table in (config_file.get("sweep") or {}).items():
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise ConfigError(
                f"[sweep.{name}] in the config file must be a table of FIELD = [VALUE, ...], e.g. eps = [4, 8, 16]"
            )
        sweeps.setdefault(name, {}).update(table)
    for name, fields in parse_sweep_options(sweep_items or []).items():
        sweeps.setdefault(name, {}).update(fields)
    return sweeps


def parse_name_list(values: list[str] | str | None) -> list[str]:
    """Repeatable and comma-separated names (``--attack-model a,b --attack-model c``) -> ``[a, b, c]``."""
    if values is None:
        return []
    values = [values] if isinstance(values, str) else values
    return [name.strip() for value in values for name in str(value).split(",") if name.strip()]


def pick(flag: Any, config: dict, key: str, default: Any) -> Any:
    """A flag given on the command line wins over the file, which wins over the default."""
    if flag is not None:
        return flag
    return config.get(key, default)


def parse_cell_timeout(value: Any) -> float | None:
    """``--cell-timeout`` (or ``cell_timeout`` in the file): seconds, finite and > 0, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"--cell-timeout {value!r}: expected a number of seconds, e.g. 600")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--cell-timeout {value!r}: expected a number of seconds, e.g. 600") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--cell-timeout {value!r}: expected a finite number of seconds greater than 0, e.g. 600")
    return seconds


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: I must be in 0..N-1")
    return index, count


#: The protections that train a surrogate on a reference clean set (protections/reference_set.py).
REFERENCE_SET_PROTECTIONS = ("aspl", "fsmg")


def with_reference_set(overrides: dict[str, dict[str, Any]], reference_set: str | None) -> dict[str, dict[str, Any]]:
    """``--reference-set DIR``: ``reference_set`` of ASPL and FSMG (an explicit ``--set aspl.reference_set`` wins)."""
    if not reference_set:
        return overrides
    from pathlib import Path

    from cloakbench.core.config import ConfigError

    path = Path(reference_set).expanduser()
    if not path.exists():
        raise ConfigError(
            f"--reference-set {reference_set}: no such folder or file; name the subject's clean photos "
            "that are not protected (Anti-DreamBooth's set A)"
        )
    for name in REFERENCE_SET_PROTECTIONS:
        overrides.setdefault(name, {}).setdefault("reference_set", str(path.resolve()))
    return overrides
