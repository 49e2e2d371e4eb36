"""``--quick``: shrink every step count so a whole grid runs as a smoke test in seconds.

A component may declare its own quick settings as a class attribute ``QUICK``
(``{"field": value}``); otherwise every integer field named ``steps`` or ending in
``_steps`` is capped at :data:`QUICK_STEPS`.
"""

from __future__ import annotations

import dataclasses
import typing

QUICK_STEPS = 3


def quick_component(cls) -> dict:
    explicit = getattr(cls, "QUICK", None)
    if explicit is not None:
        return dict(explicit)
    config = cls.Config()
    hints = typing.get_type_hints(type(config))
    overrides = {}
    for item in dataclasses.fields(config):
        if hints.get(item.name) is int and (item.name == "steps" or item.name.endswith("_steps")):
            overrides[item.name] = min(getattr(config, item.name), QUICK_STEPS)
    return overrides
