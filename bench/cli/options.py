"""Options shared by several verbs, and the flag > TOML file > default rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloakbench.core.config import ConfigError, load_toml, parse_set_options


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


def read_config(path: Path | None, section: str) -> dict[str, Any]:
    """The TOML file's top level merged with its ``[section]`` table (section wins)."""
    if path is None:
        return {}
    data = load_toml(path)
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    merged.update(data.get(section) or {})
    merged["set"] = data.get("set") or {}
    return merged


def pick(flag: Any, config: dict, key: str, default: Any) -> Any:
    """A flag given on the command line wins over the file, which wins over the default."""
    if flag is not None:
        return flag
    return config.get(key, default)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: I must be in 0..N-1")
    return index, count
