"""Options shared by several verbs, and the flag > TOML file > default rule."""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloakbench.core.config import ConfigError, load_toml, parse_set_options, refuse_unknown_keys


def merged_overrides(config_file: dict, set_items: list[str], path: Path | None = None) -> dict[str, dict[str, Any]]:
    """``[set.NAME]`` tables of the TOML file, then ``--set`` flags on top.

    With ``path`` (the file), each table's values are checked against the component's declared
    types here, so a wrong type (``eps = true``) is named with the file, before any work.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for name, table in (config_file.get("set") or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"[set.{name}] in the config file must be a table of FIELD = VALUE")
        overrides.setdefault(name, {}).update(table)
    if path is not None and overrides:
        check_file_overrides(overrides, path)
    for name, fields in parse_set_options(set_items or []).items():
        overrides.setdefault(name, {}).update(fields)
    return overrides


def check_file_overrides(tables: dict[str, dict[str, Any]], path: Path) -> None:
    """Apply each ``[set.NAME]`` table of ``path`` to its component's defaults: the same type and range
    checks as ``--set`` (core/config.py, :func:`apply_overrides`), the message naming the file."""
    from cloakbench.bench.plan import REGISTRIES
    from cloakbench.core.config import apply_overrides, qualify_overrides

    for (kind, name), fields in qualify_overrides(tables, REGISTRIES).items():
        config_cls = REGISTRIES[kind].get(name).Config
        try:
            apply_overrides(config_cls(), fields, owner=name)
        except ConfigError as error:
            raise ConfigError(f"{path}: [set.{name}]: {error}") from None


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
            "reference_set",
            "batch_size",
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


#: A file key whose flag has another name (``attack_models = [...]`` is ``--attack-model``).
FILE_KEY_FLAGS = {"attack_models": "attack_model"}
#: File keys whose flag takes a comma list (``--attacks sdedit,jpeg+sdedit``): in the file a TOML list
#: of the same items is accepted too, and joined with ``,``. The value is the items' type.
COMMA_LIST_KEYS: dict[str, type] = {
    "methods": str,
    "attacks": str,
    "metrics": str,
    "seeds": int,
    "attack_model": str,
    "attack_models": str,
}
_EXAMPLES = {bool: "true", int: "0", float: "600", str: '"..."'}


def _flag_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; ``Path`` -> ``str`` (a file key names a path as a string)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is Path:
        return str
    if typing.get_origin(annotation) is list:
        return list[_flag_type(typing.get_args(annotation)[0])]  # type: ignore[misc]  # built at run time
    return annotation


def check_config_types(config: dict[str, Any], flags: Callable, path: Path) -> dict[str, Any]:
    """Check every key of a ``--config`` file against the declared type of its flag (the command's own
    signature, so the two cannot drift), before any work; returns the values normalised (a TOML list
    of a comma-list key joined with ``,``).

    ``eps = true`` or ``quick = "false"`` would otherwise run (``bool("false")`` is true) or fail
    cells late; each is one :class:`ConfigError` naming the file, the key and an example.
    """
    from cloakbench.core.config import check_typed, describe_type

    hints = typing.get_type_hints(flags)
    checked: dict[str, Any] = {}
    for key, value in config.items():
        if key in FILE_TABLES:
            checked[key] = value
            continue
        expected = _flag_type(hints[FILE_KEY_FLAGS.get(key, key)])
        item = COMMA_LIST_KEYS.get(key)
        if item is not None and isinstance(value, str):  # the comma list a flag takes: "a,b"
            checked[key] = value
            continue
        if item is not None and isinstance(value, list):
            check_typed(value, list[item], f"{path}: {key}")  # type: ignore[valid-type]  # built at run time  # raises naming the file and key
            checked[key] = value if key == "seeds" else ",".join(value)
            continue
        try:
            checked[key] = check_typed(value, expected, f"{path}: {key}")
        except ConfigError:
            base = typing.get_args(expected)[0] if typing.get_origin(expected) is list else expected
            example = f"[{_EXAMPLES.get(base, '...')}]" if base is not expected else _EXAMPLES.get(expected, "...")
            what = describe_type(expected) + (f" or a list of {describe_type(item)}s" if item else "")
            raise ConfigError(
                f"{path}: {key} = {json.dumps(value, default=str)} must be {what}, e.g. {key} = {example}"
            ) from None
        if isinstance(checked[key], tuple):
            checked[key] = list(checked[key])
    return checked


def read_config(path: Path | None, section: str, flags: Callable | None = None) -> dict[str, Any]:
    """The TOML file's top level merged with its ``[section]`` table (section wins).

    Unknown sections and keys are refused with a did-you-mean (:func:`check_config_keys`); with
    ``flags`` (the command's function) every key's type too (:func:`check_config_types`).
    """
    if path is None:
        return {}
    data = load_toml(path)
    check_config_keys(data, section, path)
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    merged.update(data.get(section) or {})
    if flags is not None:
        merged = check_config_types(merged, flags, path)
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


#: The longest ``--cell-timeout``: a year. Longer is no timeout, and a deadline past the clock's range
#: (``--cell-timeout 1e12``) failed every cell with "timestamp out of range".
MAX_CELL_TIMEOUT_S = 365 * 24 * 3600


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
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_CELL_TIMEOUT_S:
        raise ConfigError(
            f"--cell-timeout {value!r}: expected seconds in (0, {MAX_CELL_TIMEOUT_S}] (at most a year), e.g. 600"
        )
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
