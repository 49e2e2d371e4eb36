"""The mimicry contract (attacks and purifications) and its registry.

``Mimicry(config)(images, model, *, generator, context) -> Tensor``: ``images`` are the
published 8-bit images as ``(N, 3, H, W)`` float in ``[0, 1]``; the result is the
attack's output in the same range. Attacks with several settings (SDEdit strengths)
list them in :meth:`Mimicry.settings`; the runner calls once per setting with
``context.setting`` set, and the ``setting`` column of each row holds it.

A *purification* (``is_purification = True``) tries to wash a protection off before an
attack; ``jpeg+sdedit`` means purify with ``jpeg`` then attack with ``sdedit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from cloakbench.core.component import Component
from cloakbench.core.registry import Registry


@dataclass
class AttackContext:
    """What some attacks need beyond the images.

    - ``setting``: the current setting (e.g. SDEdit strength as a string), "" if none.
    - ``image_names``: display names of the images, in batch order (mask matching).
    - ``mask_dir``: a folder of inpainting masks matched by image name, when the run has one.
    - ``prompt``: the prompt of the run (the protection prompt by default).
    - ``work_dir``: a folder an attack may write side files into (textual-inversion embeddings).
    - ``notes``: filled by the attack: facts the report must show (e.g. "bicubic upscaling").
    """

    setting: str = ""
    image_names: list[str] = field(default_factory=list)
    mask_dir: str | None = None
    prompt: str = "a photo"
    work_dir: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class AttackUnavailable(RuntimeError):
    """An attack cannot run here (e.g. pretrained weights it needs are missing); the message says why.

    Raised before any work starts, so the runner can record the cell as "unavailable" with
    this reason instead of a made-up output.
    """


class Mimicry(Component):
    """Base class of every mimicry attack and purification."""

    is_purification: ClassVar[bool] = False
    # "image": the attack maps each image to an output; "set": it learns from the whole
    # image set (textual inversion) and returns generations, not one output per image.
    scope: ClassVar[str] = "image"
    #: Runs on the model's inpainting UNet (``LDM.inpaint_unet``): a model without one is refused in the plan.
    needs_inpaint_unet: ClassVar[bool] = False

    def settings(self) -> list[str]:
        """The settings this attack sweeps (strings for the ``setting`` column)."""
        return [""]

    def check_available(self) -> None:
        """Raise :class:`AttackUnavailable` if this attack cannot run here (checked before any work)."""

    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        raise NotImplementedError


MIMICRY: Registry[type[Mimicry]] = Registry("mimicry attack")


def attack_names() -> list[str]:
    return [n for n, c in MIMICRY.items() if not c.is_purification]


def purification_names() -> list[str]:
    return [n for n, c in MIMICRY.items() if c.is_purification]


def expand_all_attacks(default_attack: str = "sdedit") -> list[str]:
    """``--attacks all``: every attack, plus every purification followed by ``default_attack``."""
    names = [n for n in attack_names() if n != "identity"]
    if default_attack in MIMICRY:
        names += [f"{p}+{default_attack}" for p in purification_names()]
    return names


def parse_attack_spec(spec: str) -> tuple[list[str], str]:
    """``"jpeg+blur+sdedit"`` -> ``(["jpeg", "blur"], "sdedit")``; every name validated."""
    parts = [p.strip() for p in spec.split("+")]
    if not any(parts):
        raise ValueError(f"empty attack spec {spec!r}")
    if not all(parts):  # "sdedit+" would run SDEdit a second time, labelled as a purification chain
        raise ValueError(
            f"--attacks {spec!r}: a name is missing around '+'; write PURIFICATION+ATTACK, e.g. jpeg+sdedit"
        )
    for part in parts:
        MIMICRY.get(part)
    for part in parts[:-1]:
        if not MIMICRY.get(part).is_purification:
            raise ValueError(
                f"in {spec!r}, {part!r} is an attack, not a purification; only purifications can come before '+'"
            )
    return parts[:-1], parts[-1]


def resolve_attacks(spec: str) -> list[str]:
    """Comma list or ``all`` -> validated attack specs, before anything runs."""
    specs: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        expanded = expand_all_attacks() if item == "all" else [item]
        for one in expanded:
            purifications, attack = parse_attack_spec(one)
            one = "+".join([*purifications, attack])  # "jpeg + sdedit" is "jpeg+sdedit": one chain, one label
            if one not in specs:
                specs.append(one)
    if not specs:
        raise ValueError(f"no attack named in {spec!r}")
    return specs
