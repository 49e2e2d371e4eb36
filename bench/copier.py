"""The public protection code an adaptive copier runs (``encoder-harden``), as the harness hands it over.

The mimicry layer may not import ``protections`` (docs/ARCHITECTURE.md, "Layers": the methods are
independent of each other). The harness sits above both, so it builds this object and passes it in
:attr:`cloakbench.mimicry.base.AttackContext.protections`; a mimicry stage only sees the
:class:`~cloakbench.mimicry.base.PublicProtections` protocol. This keeps the copier's pairs made
by exactly the code an artist downloads, with the run's own settings of it, and leaves the
training loop in the mimicry module that owns it.

What the copier runs: every protection with the run's ``--quick`` and ``--set`` settings, never a
``--sweep``'s values (a copier does not know which budget an artist picked; it runs the tool as
configured), on the run's protection model (the tool's model: the artist's images were made with
it, so the copier's pairs come from the same distribution as the published ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from cloakbench import protections as protection_pkg
from cloakbench.core.config import qualify_overrides
from cloakbench.core.images import quantize_8bit, resize_square
from cloakbench.core.quick import quick_component

#: The controls are no tools a copier trains against: ``none`` (the clean reference) and ``noise``
#: (random noise of the same budget, the baseline the leaderboard flags protections against).
CONTROLS = ("none", "noise")


class RunProtections:
    """:class:`~cloakbench.mimicry.base.PublicProtections` over the registry, on the tool's ``model``.

    ``overrides`` are ``--set``'s qualified overrides (``{("protection", "sds-"): {...}}``), as
    :func:`cloakbench.core.config.qualify_overrides` gives them; ``quick`` applies each
    protection's quick settings first, as ``--quick`` does for the run's own protect cells.
    ``model`` may be ``None`` where only :meth:`names` and :meth:`settings_identity` are read
    (the plan, which keys cells before any model is loaded).
    """

    def __init__(self, model, *, quick: bool = False, overrides: Mapping[tuple[str, str], dict] | None = None):
        self.model = model
        self.quick = quick
        self.overrides = dict(overrides or {})
        self._built: dict[str, Any] = {}

    @classmethod
    def for_spec(cls, spec, model) -> RunProtections:
        from cloakbench.bench.plan import REGISTRIES

        return cls(model, quick=spec.quick, overrides=qualify_overrides(spec.overrides, REGISTRIES))

    def names(self) -> list[str]:
        return [n for n in protection_pkg.publishable_protections() if n not in CONTROLS]

    def _protection(self, name: str):
        if name == "none" or name not in protection_pkg.PROTECTIONS:
            known = ", ".join(self.names())
            raise ValueError(f"no public protection {name!r} to train against; known: {known}")
        if name not in self._built:
            cls = protection_pkg.PROTECTIONS.get(name)
            settings = dict(quick_component(cls)) if self.quick else {}
            settings.update(self.overrides.get(("protection", name), {}))
            self._built[name] = cls.from_overrides(settings)
        return self._built[name]

    def settings_identity(self, name: str) -> dict[str, Any]:
        """The protection's name, version and config as the copier runs it (no model: the plan
        reads this before any model is loaded, and the tool's model is in the cell's key already)."""
        return self._protection(name).identity()

    def identity(self, name: str) -> dict[str, Any]:
        return {**self.settings_identity(name), "model": self.model.identity()}

    def protect(self, name: str, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """Protect at the tool model's resolution, publish as 8-bit, return at the images' size."""
        side = images.shape[-1]
        pixels = resize_square(images.detach().float().cpu(), self.model.resolution)
        pixels = pixels.to(self.model.device, self.model.dtype)
        protected = self._protection(name)(pixels, self.model, generator=generator)
        published = quantize_8bit(protected.detach().float().cpu())
        return resize_square(published, side) if side != self.model.resolution else published
