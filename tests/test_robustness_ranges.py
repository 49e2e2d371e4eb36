"""Every int/float setting of every registered component declares its range (issue #12).

``bounded(default, low, high)`` in ``cloakbench.core.config``: ``apply_overrides`` then refuses
out-of-range values, NaN and infinities with one sentence naming the setting, and
``check_ranges`` holds configs built in code to the same ranges (docs/RELIABILITY.md,
"Settings"). A new component is picked up by this test without editing it.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from cloakbench.core.config import ConfigError, setting_range
from cloakbench.metrics import METRICS
from cloakbench.mimicry import MIMICRY
from cloakbench.protections import PROTECTIONS


def numeric(annotation) -> bool:
    """int, float, or an Optional / tuple of them."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple, list):
        return any(numeric(a) for a in typing.get_args(annotation) if a not in (type(None), Ellipsis))
    return False


def numeric_settings():
    """``(qualified name, field, declared range or None, default)`` of every numeric setting."""
    for kind, registry in (("protection", PROTECTIONS), ("mimicry", MIMICRY), ("metric", METRICS)):
        for name in registry.names():
            config_cls = getattr(registry.get(name), "Config", None)
            if config_cls is None or not dataclasses.is_dataclass(config_cls):
                continue
            hints = typing.get_type_hints(config_cls)
            defaults = config_cls()
            for field in dataclasses.fields(config_cls):
                if numeric(hints[field.name]):
                    yield f"{kind}:{name}", field.name, setting_range(field), getattr(defaults, field.name)


def test_every_numeric_setting_of_every_component_declares_a_range():
    settings = list(numeric_settings())
    assert len(settings) > 50  # the registries are really walked
    missing = [f"{owner}.{field}" for owner, field, declared, _ in settings if declared is None]
    assert not missing, f"declare these with cloakbench.core.config.bounded(default, low, high): {missing}"


def test_every_default_lies_in_its_declared_range():
    outside = []
    for owner, field, declared, default in numeric_settings():
        if declared is None or default is None:
            continue
        try:
            declared.check(default, f"{owner}.{field}")
        except ConfigError as error:
            outside.append(str(error))
    assert not outside, outside
