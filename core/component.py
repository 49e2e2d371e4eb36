"""The shared shape of every registered protection, mimicry attack and metric.

A component is a class with a frozen dataclass ``Config`` (paper defaults), a
``version`` bumped whenever its outputs change, and a docstring whose first line is
the one-line description that ``bench list`` shows.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from cloakbench.core.config import apply_overrides, config_as_dict


@dataclasses.dataclass(frozen=True)
class EmptyConfig:
    """For components with no settings."""


class Component:
    Config: ClassVar[type] = EmptyConfig
    version: ClassVar[int] = 1
    registry_name: ClassVar[str] = ""

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None) -> Component:
        config = cls.Config()
        if overrides:
            config = apply_overrides(config, overrides, owner=cls.registry_name or cls.__name__)
        return cls(config)

    @property
    def name(self) -> str:
        return self.registry_name or type(self).__name__

    @classmethod
    def description(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def identity(self) -> dict[str, Any]:
        """What a cache key needs to know about this component."""
        return {"name": self.name, "version": self.version, "config": config_as_dict(self.config)}
