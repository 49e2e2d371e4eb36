"""Frozen dataclass configs, ``--set NAME.FIELD=VALUE`` overrides and TOML experiment files.

Every protection, mimicry attack and metric carries a frozen dataclass ``Config``
holding its paper defaults. Overrides are parsed against the field's declared type,
so ``--set sdedit.strengths=0.1,0.3`` gives a ``tuple[float, ...]`` and a typo in a
field name is an error that lists the real fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad override, field or config file; the message names what and why."""


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _parse_scalar(text: str, kind: Any, where: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where}: expected true/false, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{where}: expected {kind.__name__}, got {text!r}") from None
    return text


def parse_value(text: str | Any, annotation: Any, where: str) -> Any:
    """Parse ``text`` as a value of ``annotation`` (str, int, float, bool, tuple, Optional, Literal)."""
    if not isinstance(text, str):  # values from TOML are already typed: check the type, never coerce silently
        return check_typed(text, annotation, where)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if text.strip().lower() in {"none", "null", ""} and len(non_none) < len(args):
            return None
        return parse_value(text, non_none[0], where)
    if origin is typing.Literal:
        if text not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(str, args))}, got {text!r}")
        return text
    if origin in (tuple, list):
        item = args[0] if args else str
        values = tuple(_parse_scalar(p.strip(), item, where) for p in text.split(",") if p.strip())
        return check_list(values, where)
    return _parse_scalar(text, annotation, where)


def check_list(values: tuple, where: str) -> tuple:
    """A list setting given by the user: at least one value, each once.

    An empty list (``--set sdedit.strengths=``) would fail every cell late, and a repeated value
    (``strengths=0.3,0.3``) would make two rows of one cell; both are refused here.
    """
    if not values:
        raise ConfigError(f"{where}: no value given; give at least one, e.g. {where.rsplit('.', 1)[-1]}=0.3")
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: {value!r} is given twice; list each value once")
        seen.add(value)
    return values


def describe_type(annotation: Any) -> str:
    """``int`` -> ``a whole number``: how a message names the type a setting takes."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        item = args[0] if args else str
        return f"a list of {describe_type(item).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def check_typed(value: Any, annotation: Any, where: str) -> Any:
    """A value that arrived typed (from a TOML file), checked against ``annotation``; lists become tuples.

    TOML's ``true`` is no number and ``[0.3]`` no float: Python would let ``True / 255`` or a tuple
    through, so each is refused here by name (docs/RELIABILITY.md, "Settings"), never coerced.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    bad = ConfigError(f"{where}: expected {describe_type(annotation)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for option in (a for a in args if a is not type(None)):
            try:
                return check_typed(value, option, where)
            except ConfigError:
                continue
        raise bad
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise bad
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        item = args[0] if args else Any
        try:
            values = tuple(check_typed(v, item, where) for v in value)
        except ConfigError:
            raise bad from None
        return check_list(values, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value  # a type TOML cannot spell (a tensor, a path): the component's own check decides


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: ``low``/``high`` bounds (``None``: unbounded), each
    inclusive unless ``*_open``. NaN and infinities are refused for every numeric setting."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any, where: str) -> None:
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if math.isnan(item) or math.isinf(item):
                raise ConfigError(f"{where}: {item} is not a finite number")
            below = self.low is not None and (item <= self.low if self.low_open else item < self.low)
            above = self.high is not None and (item >= self.high if self.high_open else item > self.high)
            if below or above:
                raise ConfigError(f"{where}: {item:g} is outside {self.describe()}")

    def describe(self) -> str:
        low = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{low}, {high}"


def bounded(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A config field whose numeric value must lie in a range, e.g. ``eps: float = bounded(16.0, 0, 255)``.

    :func:`apply_overrides` checks every override against it (docs/RELIABILITY.md, "Settings"),
    so ``--set sds-.eps=300`` is one clear error instead of a garbage run.
    """
    default_kw = {"default_factory": lambda: default} if isinstance(default, (list, dict)) else {"default": default}
    return dataclasses.field(**default_kw, metadata={"range": Range(low, high, low_open, high_open)})


def setting_range(field: dataclasses.Field) -> Range | None:
    """The declared :class:`Range` of a config field, if any."""
    return field.metadata.get("range")


def check_ranges(config: Any, owner: str | None = None) -> None:
    """Refuse a config whose numeric values lie outside their declared ranges (or are not finite).

    Called from a config's ``__post_init__``, so a config built in code (not only one built
    from ``--set``) is held to the same ranges; raises :class:`ConfigError`.
    """
    owner = owner or type(config).__name__
    for field in dataclasses.fields(config):
        (setting_range(field) or Range()).check(getattr(config, field.name), f"{owner}.{field.name}")


def refuse_unknown_keys(given: Mapping[str, Any] | Any, known: Any, where: str, *, what: str = "key") -> None:
    """A key of ``given`` that is not in ``known`` is one error with a did-you-mean.

    Used for the tables of a ``--config`` TOML file (docs/RELIABILITY.md, "Settings"): an
    ignored key would run a different grid from the one the user wrote.
    """
    from cloakbench.core.registry import suggest

    known = sorted(known)
    for key in given:
        if key not in known:
            raise ConfigError(f"{where}: unknown {what} {key!r}{suggest(key, known)} (known: {', '.join(known)})")


def apply_overrides(config: Any, overrides: Mapping[str, Any], *, owner: str) -> Any:
    """A copy of frozen dataclass ``config`` with ``overrides`` (field -> text or value) applied.

    Every numeric value is checked: NaN and infinities are refused everywhere, and a field
    declared with :func:`bounded` must lie in its range.
    """
    fields = config_fields(type(config))
    hints = typing.get_type_hints(type(config))
    changes = {}
    for field_name, raw in overrides.items():
        if field_name not in fields:
            raise ConfigError(f"{owner} has no setting {field_name!r}; its settings are: {', '.join(fields)}")
        where = f"{owner}.{field_name}"
        value = parse_value(raw, hints[field_name], where)
        (setting_range(fields[field_name]) or Range()).check(value, where)
        changes[field_name] = value
    try:
        return dataclasses.replace(config, **changes)
    except (ValueError, TypeError) as error:  # a config's own __post_init__ check
        raise ConfigError(f"{owner}: {error}") from None


def parse_set_options(items: list[str]) -> dict[str, dict[str, str]]:
    """``["sdedit.strengths=0.3", "sds-.steps=50"]`` -> ``{"sdedit": {"strengths": "0.3"}, ...}``."""
    result: dict[str, dict[str, str]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected NAME.FIELD=VALUE, e.g. sdedit.strengths=0.3")
        key, value = item.split("=", 1)
        name, field_name = key.rsplit(".", 1)
        result.setdefault(name.strip(), {})[field_name.strip()] = value
    return result


def load_toml(path: Path) -> dict[str, Any]:
    """Read an experiment file; its ``[set.NAME]`` tables become overrides like ``--set``."""
    return read_toml_text(path, "config file", ConfigError)


def read_toml_text(path: Path, what: str, error_type: type[Exception] = ConfigError) -> dict[str, Any]:
    """A TOML file as a table; a missing file, text that is not UTF-8 (a UTF-16 file from a Windows
    editor) or bad TOML is one ``error_type`` naming ``what`` and the file. A UTF-8 byte-order mark
    is accepted, as for manifests (core/datasets.py)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise error_type(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error_type(f"{what} {path} is a folder; give a .toml file") from None
    except OSError as error:
        raise error_type(f"{what} {path} cannot be read ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        encoding = "UTF-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "not UTF-8"
        raise error_type(
            f"{what} {path} is {encoding} text (byte {error.start}: {raw[error.start : error.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise error_type(f"{what} {path} is not valid TOML: {error}") from None


def config_as_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def canonical_json(value: Any) -> str:
    """Canonical JSON used for cache keys: sorted keys, no whitespace, floats as repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def qualify_overrides(
    overrides: Mapping[str, Mapping[str, Any]], registries: Mapping[str, Any]
) -> dict[tuple[str, str], dict[str, Any]]:
    """``{"noise": {...}, "mimicry:noise": {...}}`` -> ``{("mimicry", "noise"): {...}, ...}``.

    ``registries`` maps a kind (``protection``, ``mimicry``, ``metric``) to its registry.
    A name users type must resolve to exactly one component: a bare name that several
    kinds register (``noise`` is a protection and a purification) is refused with a
    message naming each qualified form; an unknown name gets a did-you-mean.
    """
    from cloakbench.core.registry import suggest

    resolved: dict[tuple[str, str], dict[str, Any]] = {}
    for raw_name, fields in overrides.items():
        kind, _, name = raw_name.rpartition(":")
        if kind:
            if kind not in registries:
                raise ConfigError(
                    f"--set {raw_name}: unknown kind {kind!r}; use one of {', '.join(k + ':' for k in registries)}"
                )
            if name not in registries[kind]:
                raise ConfigError(
                    f"--set names {raw_name!r}, but {name!r} is no {kind}{suggest(name, registries[kind].names())}"
                )
            owners = [kind]
        else:
            owners = [k for k, registry in registries.items() if name in registry]
            if len(owners) > 1:
                forms = " or ".join(f"{k}:{name}.FIELD" for k in owners)
                raise ConfigError(
                    f"--set {name}.FIELD is ambiguous: {name!r} is a {' and a '.join(owners)}; write {forms}"
                )
            if not owners:
                known = sorted({n for registry in registries.values() for n in registry.names()})
                raise ConfigError(
                    f"--set names {name!r}, which is no protection, attack or metric{suggest(name, known)}"
                )
        resolved.setdefault((owners[0], name), {}).update(fields)
    return resolved


#: The seeds a torch generator takes (``torch.Generator.manual_seed``: a signed or unsigned 64-bit
#: integer); a run seed seeds the model's random weights, so one outside this range is refused by name.
SEED_RANGE = (-(2**63), 2**64 - 1)


def check_seed(value: Any, option: str) -> int:
    """A run seed (``--seed``): a whole number in :data:`SEED_RANGE`, else one :class:`ConfigError` naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{option} {value!r}: expected a whole number, e.g. 0")
    low, high = SEED_RANGE
    if not low <= value <= high:
        raise ConfigError(f"{option} {value}: a torch generator takes seeds from {low} to {high}; give a smaller seed")
    return value


def parse_int_list(text: Any, option: str, *, minimum: int | None = None, maximum: int | None = None) -> list[int]:
    """``"0,1,2"`` (or a TOML list of integers) -> ``[0, 1, 2]``; anything else is one :class:`ConfigError`
    naming ``option`` (e.g. ``--seeds``). ``minimum``/``maximum``: the values allowed; an empty list is refused. The one number-list
    parser of every option (``--seeds``, ``bench perf --resolution/--batch``).

    >>> parse_int_list("0, 1,2", "--seeds")
    [0, 1, 2]
    >>> parse_int_list("0,x", "--seeds")
    Traceback (most recent call last):
    ...
    cloakbench.core.config.ConfigError: --seeds '0,x': expected whole numbers separated by commas, e.g. 0,1,2
    """
    if text is None:
        return []
    items = list(text) if isinstance(text, (list, tuple)) else [p for p in str(text).split(",") if p.strip()]
    try:
        values = [int(str(item).strip()) for item in items]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None
    if not values:  # "--seeds ''" would silently run the default seed
        raise ConfigError(f"{option} {text!r}: no value given; give whole numbers separated by commas, e.g. 0,1,2")
    if minimum is not None and any(v < minimum for v in values):
        raise ConfigError(f"{option} {text!r}: every value must be at least {minimum}")
    if maximum is not None and any(v > maximum for v in values):
        raise ConfigError(f"{option} {text!r}: every value must be at most {maximum}")
    return values
