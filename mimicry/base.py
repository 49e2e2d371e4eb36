"""The mimicry contract (attacks and purifications) and its registry.

``Mimicry(config)(images, model, *, generator, context) -> Tensor``: ``images`` are the
published 8-bit images as ``(N, 3, H, W)`` float in ``[0, 1]``; the result is the
attack's output in the same range. Attacks with several settings (SDEdit strengths)
list them in :meth:`Mimicry.settings`; the runner calls once per setting with
``context.setting`` set, and the ``setting`` column of each row holds it.

A *purification* (``is_purification = True``) tries to wash a protection off before an
attack; ``jpeg+sdedit`` means purify with ``jpeg`` then attack with ``sdedit``. Any chain of
purifications may come before the attack, a fine-tuning one included (``upscale+lora``,
``jpeg+blur+lora``: the robust-mimicry chains of Hönig et al., arXiv 2406.12027).

A stage may also change the *model* the rest of the chain runs with (``adapts_model``:
:meth:`Mimicry.adapt_model` returns it; ``encoder-harden`` hands on a model whose VAE encoder
the copier fine-tuned). An *adaptive* attack (``adaptive = True``) is one that knows the
protections: it runs their public code or attacks their mechanism on purpose
(docs/MIMICRY.md, "Adaptive attackers"); the leaderboard reports the worst case over the
adaptive and the non-adaptive attackers separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from cloakbench.core.component import Component
from cloakbench.core.registry import Registry


class PublicProtections(Protocol):
    """The public protection code an adaptive copier can run, handed in by the harness.

    The mimicry layer never imports ``protections`` (docs/ARCHITECTURE.md, "Layers"): the harness,
    which sits above both, passes this object in :attr:`AttackContext.protections`
    (``cloakbench.bench.copier``). ``protect`` runs a protection as the artist would, with the
    tool's own model (the run's protection model), and returns the published 8-bit images.
    """

    def names(self) -> list[str]:
        """Every protection tool an artist could publish with, in registry order (not the controls
        ``none`` and ``noise``)."""
        ...

    def settings_identity(self, name: str) -> dict[str, Any]:
        """The protection's name, version and config as the copier runs it; refuses an unknown name
        (``ValueError`` naming the known ones). Needs no model: the plan keys cells with it."""
        ...

    def identity(self, name: str) -> dict[str, Any]:
        """What a cache key needs: :meth:`settings_identity` and the tool's model."""
        ...

    def protect(self, name: str, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """``images`` ``(N, 3, H, W)`` in ``[0, 1]`` protected by ``name``, 8-bit, same shape."""
        ...


@dataclass
class AttackContext:
    """What some attacks need beyond the images.

    - ``setting``: the current setting (e.g. SDEdit strength as a string), "" if none.
    - ``image_names``: display names of the images, in batch order (mask matching).
    - ``mask_dir``: a folder of inpainting masks matched by image name, when the run has one.
    - ``prompt``: the prompt of the run (the protection prompt by default).
    - ``work_dir``: a folder an attack may write side files into (textual-inversion embeddings).
    - ``notes``: filled by the attack: facts the report must show (e.g. "bicubic upscaling").
    - ``protections``: the public protection code, for adaptive attacks that run it
      (:class:`PublicProtections`); ``None`` where the caller gives none.
    - ``cache_dir``: a folder of the run where a stage keeps what it computed once for many
      cells (a hardened encoder), named by a content key; ``None``: nothing is kept.
    - ``held_out``: pixel hashes of the evaluated images, which a copier's own images must avoid.
    """

    setting: str = ""
    image_names: list[str] = field(default_factory=list)
    mask_dir: str | None = None
    prompt: str = "a photo"
    work_dir: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    protections: PublicProtections | None = None
    cache_dir: str | None = None
    held_out: frozenset[str] = frozenset()


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
    # Knows the protections (runs their public code, or attacks their mechanism on purpose):
    # the leaderboard's adaptive worst case is taken over these (docs/MIMICRY.md, "Adaptive attackers").
    adaptive: ClassVar[bool] = False
    # Changes the model the rest of the chain runs with (adapt_model), e.g. a hardened encoder.
    adapts_model: ClassVar[bool] = False
    #: Runs on the model's inpainting UNet (``LDM.inpaint_unet``): a model without one is refused in the plan.
    needs_inpaint_unet: ClassVar[bool] = False

    def settings(self) -> list[str]:
        """The settings this attack sweeps (strings for the ``setting`` column)."""
        return [""]

    def acted_region(self, images: torch.Tensor, context: AttackContext) -> torch.Tensor | None:
        """``(N, 1, H, W)``, 1 where the attack made the output (its strength is measured there,
        metrics/masked.py), or ``None``: the attack made the whole image."""
        return None

    def check_available(self) -> None:
        """Raise :class:`AttackUnavailable` if this attack cannot run here (checked before any work)."""

    def adapt_model(self, model, *, generator: torch.Generator, context: AttackContext):
        """The model the rest of the chain runs with (``model`` itself unless ``adapts_model``)."""
        return model

    def copier_protections(self, public: PublicProtections) -> list[str]:
        """The public protections this stage runs (``encoder-harden``'s training pairs); none by default.

        The plan puts their configured identities into the key of every cell of the chain, so a
        ``--set`` on one of them (``sds-.steps=50``) makes new cells instead of reusing stale ones.
        """
        return []

    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        raise NotImplementedError


MIMICRY: Registry[type[Mimicry]] = Registry("mimicry attack")


def attack_names() -> list[str]:
    return [n for n, c in MIMICRY.items() if not c.is_purification]


def purification_names() -> list[str]:
    return [n for n, c in MIMICRY.items() if c.is_purification]


#: The robust-mimicry chains of Hönig et al., "Adversarial Perturbations Cannot Reliably Protect
#: Artists From Generative AI" (arXiv 2406.12027, Sec. 4): a purification, then fine-tuning on the
#: purified images (their ``noisy upscaling``, ``IMPRESS++`` and DiffPure-style purifications each
#: followed by DreamBooth/LoRA fine-tuning), plus ``upscale-bicubic+lora`` where the SD x4 upscaler
#: is absent (a different, cheaper purification under its own name). ``--attacks robust`` names them.
ROBUST_MIMICRY_CHAINS: tuple[str, ...] = (
    "upscale+lora",
    "upscale-bicubic+lora",
    "impress+lora",
    "diffpure+lora",
    "gridpure+lora",
)


def expand_all_attacks(default_attack: str = "sdedit") -> list[str]:
    """``--attacks all``: every attack, every purification followed by ``default_attack``, and the
    robust-mimicry chains (:data:`ROBUST_MIMICRY_CHAINS`), so the worst case covers the fine-tuning
    copier after purification."""
    names = [n for n in attack_names() if n != "identity"]
    if default_attack in MIMICRY:
        names += [f"{p}+{default_attack}" for p in purification_names()]
    names += [c for c in ROBUST_MIMICRY_CHAINS if c not in names]
    return names


def is_adaptive(spec: str) -> bool:
    """Whether the attack chain ``spec`` (``counter-pgd+sdedit``) has an adaptive stage."""
    return any(MIMICRY.get(part).adaptive for part in (p.strip() for p in spec.split("+")) if part)


def parse_attack_spec(spec: str) -> tuple[list[str], str]:
    """``"jpeg+blur+sdedit"`` -> ``(["jpeg", "blur"], "sdedit")``; every name validated.

    Any number of purifications (or model stages such as ``encoder-harden``) may come before
    the last name, which is the attack: a per-image one (``sdedit``) or a fine-tuning one
    (``lora``, ``dreambooth``, ``textual-inversion``).
    """
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
    """Comma list, ``all`` or ``robust`` (:data:`ROBUST_MIMICRY_CHAINS`) -> validated attack specs,
    before anything runs."""
    specs: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            expanded = expand_all_attacks()
        elif item == "robust":
            expanded = list(ROBUST_MIMICRY_CHAINS)
        else:
            expanded = [item]
        for one in expanded:
            purifications, attack = parse_attack_spec(one)
            one = "+".join([*purifications, attack])  # "jpeg + sdedit" is "jpeg+sdedit": one chain, one label
            if one not in specs:
                specs.append(one)
    if not specs:
        raise ValueError(f"no attack named in {spec!r}")
    return specs
