"""The metric contract and its registry.

A metric declares its semantics as class attributes (as torchmetrics does):
``higher_is_better`` (of *similarity*: for "does the protection stop mimicry" rows a
*lower* similarity means stronger protection, and the report says so), ``unit``,
``needs`` (what it requires: a reference image, weights) and ``scope``, which fixes its
**kind** (:data:`KINDS`, shown by ``bench list``):

- full-reference, ``pair``: ``metric(outputs, references) -> Tensor (N,)``, one value per image pair;
- distribution, ``set``: ``metric(outputs, references) -> Tensor ()``, one value for two image sets (FID);
- no-reference, ``image``: ``metric.score(images) -> Tensor (N,)``, one value per image, nothing
  to compare with (BRISQUE: does the picture look distorted?);
- no-reference, ``generations``: ``metric.score(images) -> Tensor ()``, one value for one set of
  generations (FDFR: the share of them in which no face is found);
- identity, ``subject``: ``metric(generations, subject) -> Tensor ()``, one value for a set of
  generations against the subject's own photos (ISM: is it the same person?).

``subjects`` says which subjects a metric applies to: ``""`` every one, ``"face"`` only
subjects whose dataset category marks them as faces (:func:`is_face_category`).

Images are ``(N, 3, H, W)`` float in ``[0, 1]``. A metric whose weights are missing
raises :class:`MetricUnavailable` with the reason; the runner records the row as
unavailable with that reason, never a number.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from cloakbench.core.component import Component
from cloakbench.core.registry import Registry


class MetricUnavailable(RuntimeError):
    """The metric cannot be computed here (missing weights or package); the message says why."""


#: scope -> kind, in the order ``bench list`` explains them.
KINDS: dict[str, str] = {
    "pair": "full-reference",
    "set": "distribution",
    "image": "no-reference",
    "generations": "no-reference",
    "subject": "identity",
}
#: The scopes that need no reference at all.
NO_REFERENCE_SCOPES: tuple[str, ...] = ("image", "generations")
#: Dataset categories (the manifest's ``category`` column, or the category folder) that mark a
#: subject as a face, for the face metrics (docs/METRICS.md, "No-reference and face metrics").
FACE_CATEGORIES: tuple[str, ...] = ("face", "faces")


def is_face_category(category: str) -> bool:
    """Whether a dataset category marks its images as photos of a person's face."""
    return category.strip().lower() in FACE_CATEGORIES


class Metric(Component):
    higher_is_better: ClassVar[bool] = True
    unit: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ("reference image",)
    scope: ClassVar[str] = "pair"
    # Budget metrics (linf, l2) only make sense between a protected image and its clean original.
    budget_only: ClassVar[bool] = False
    #: "" every subject; "face": only subjects whose category marks them as faces.
    subjects: ClassVar[str] = ""

    @classmethod
    def kind(cls) -> str:
        """``full-reference``, ``distribution``, ``no-reference`` or ``identity`` (from :attr:`scope`)."""
        return KINDS[cls.scope]

    @classmethod
    def describe_kind(cls) -> str:
        """What ``bench list`` prints: the kind and what one value scores."""
        what = {
            "pair": "per image pair",
            "set": "per pair of image sets",
            "image": "per image",
            "generations": "per set of generations",
            "subject": "generations vs the subject's photos",
        }[cls.scope]
        only = " (face subjects)" if cls.subjects == "face" else ""
        return f"{cls.kind()}, {what}{only}"

    def check_available(self) -> None:
        """Raise :class:`MetricUnavailable` if weights or packages are missing. Cheap; no compute."""

    def availability(self) -> tuple[bool, str]:
        try:
            self.check_available()
        except MetricUnavailable as error:
            return False, str(error)
        return True, "ready"

    def row_note(self) -> str:
        """What the rows' ``note`` says computed the value (a model or backend); ``""`` if nothing to say."""
        return ""

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NoReferenceMetric(Metric):
    """A score of images alone (scope ``image``: one per image; ``generations``: one per set)."""

    needs: ClassVar[tuple[str, ...]] = ()
    scope: ClassVar[str] = "image"

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images in [0, 1] -> ``(N,)`` (scope ``image``) or ``()`` (scope ``generations``)."""
        raise NotImplementedError

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor | None = None) -> torch.Tensor:
        return self.score(outputs)


METRICS: Registry[type[Metric]] = Registry("metric")


def check_images(images: torch.Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"{name}: expected (N, 3, H, W) images with N >= 1, got {tuple(images.shape)}")


def as_uint8_arrays(images: torch.Tensor) -> list:
    """``(N, 3, H, W)`` in [0, 1] -> N ``(H, W, 3)`` uint8 numpy arrays, rounded as the saved PNGs are."""
    levels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return [image.permute(1, 2, 0).contiguous().cpu().numpy() for image in levels]


def check_pair(outputs: torch.Tensor, references: torch.Tensor, name: str) -> None:
    if outputs.shape != references.shape:
        raise ValueError(
            f"{name}: outputs {tuple(outputs.shape)} and references {tuple(references.shape)} must have the same shape"
        )
    if outputs.ndim != 4 or outputs.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3, H, W) images, got {tuple(outputs.shape)}")
