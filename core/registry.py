"""One typed registry for protections, mimicry attacks, metrics and models.

Modelled on lm-evaluation-harness: decorator registration, duplicates refused,
near-miss names answered with "did you mean", and ``all`` / comma lists resolved
before anything runs so a typo costs nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def suggest(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'sds-'?"`` for the names close to ``name``, or ``""``: the one did-you-mean."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class RegistryError(KeyError):
    """An unknown or duplicate registry name. The message is meant for the user."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name -> entry map for one kind of thing (``kind`` appears in messages).

    >>> PROTECTIONS = Registry("protection")
    >>> @PROTECTIONS.register("none")
    ... class NoProtection: ...
    >>> PROTECTIONS.resolve("all")
    ['none']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a second use of a name is refused."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered (by {self._entries[name]!r})")
            self._entries[name] = obj
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names in registration order (stable, so listings are reproducible)."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def get(self, name: str) -> T:
        """The entry for ``name``, or a :class:`RegistryError` suggesting near misses."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        known = ", ".join(self._entries) or "(none registered)"
        return f"unknown {self.kind} {name!r}{suggest(name, self._entries)} Known: {known}"

    def resolve(self, spec: str | Iterable[str], *, all_names: Iterable[str] | None = None) -> list[str]:
        """Turn ``"all"``, ``"a,b"`` or a list into validated names, in the order given.

        Every name is checked before anything is returned, so a bad name fails the
        whole request up front. ``all_names`` lets a caller define what ``all`` means
        (for example, every non-analysis protection).
        """
        parts = spec.split(",") if isinstance(spec, str) else list(spec)
        names: list[str] = []
        for part in (p.strip() for p in parts):
            if not part:
                continue
            expanded = list(all_names if all_names is not None else self._entries) if part == "all" else [part]
            for name in expanded:
                self.get(name)  # raises with a suggestion
                if name not in names:
                    names.append(name)
        if not names:
            raise RegistryError(f"no {self.kind} named in {spec!r}")
        return names
