"""Anti-DreamBooth's reference clean set: the images the surrogate of ASPL and FSMG trains on.

Van Le et al., "Anti-DreamBooth: Protecting users from personalized text-to-image synthesis"
(ICCV 2023, arXiv:2303.15433). The reference splits a subject's photos into a *reference
clean set* A, on which the surrogate is DreamBooth-trained, and set B, which is perturbed
(VinAIResearch/Anti-DreamBooth ``scripts/attack_with_aspl.sh:3-4,17-18``: ``CLEAN_TRAIN_DIR=
set_A``, ``CLEAN_ADV_DIR=set_B``; ``attacks/aspl.py:693-702`` loads both;
``attack_with_fsmg.sh:4,13`` trains FSMG's surrogate on set A; README line 92). The setting
``reference_set`` names that set (a folder, category folder, manifest CSV or files, read by
:func:`cloakbench.core.datasets.load_dataset`); a component's identity records the set's
*content hash* (:func:`content_hash`), never its path, so moving a folder changes no cache key
and changing one pixel does. With none given the surrogate trains on the protected images
themselves, and the protection says so (:func:`describe`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch

from cloakbench.core.config import ConfigError


class ReferenceSetError(ConfigError):
    """The reference set named by ``reference_set`` cannot be read; the message says what to do."""


@dataclass(frozen=True)
class ReferenceSet:
    """The reference clean images ``(N, 3, S, S)`` in ``[0, 1]`` and the hash of their pixels."""

    images: torch.Tensor
    content_hash: str

    @property
    def count(self) -> int:
        return int(self.images.shape[0])


def content_hash(pixel_hashes: list[str]) -> str:
    """SHA-256 over the sorted per-image pixel hashes: the set's identity, whatever its path or file order."""
    digest = hashlib.sha256()
    for value in sorted(pixel_hashes):
        digest.update(value.encode())
    return "sha256:" + digest.hexdigest()


@functools.lru_cache(maxsize=8)
def load_reference_set(source: str, size: int) -> ReferenceSet:
    """The images of ``source`` at ``size`` (the working size the protected images have).

    Cached per process by (source, size): ASPL and FSMG of a compare run share one read.
    """
    from cloakbench.core.datasets import load_dataset
    from cloakbench.core.images import ImageError

    try:
        dataset = load_dataset([source], size)
    except (ImageError, OSError) as error:
        raise ReferenceSetError(f"reference_set {source!r}: {error}") from None
    if not dataset.images:
        raise ReferenceSetError(
            f"reference_set {source!r} holds no readable image; name a folder of the subject's clean photos "
            "(Anti-DreamBooth's set A), or leave reference_set empty to train on the protected images"
        )
    images = torch.stack([image.pixels for image in dataset.images])
    return ReferenceSet(images, content_hash([image.pixel_hash for image in dataset.images]))


def describe(reference: ReferenceSet | None) -> str:
    """The row note on what the surrogate trained on."""
    if reference is None:
        return (
            "surrogate trained on the protected images themselves (no reference_set given; "
            "Anti-DreamBooth trains it on a separate clean set of the subject)"
        )
    return f"surrogate trained on reference set {reference.content_hash[:19]} ({reference.count} images)"
