"""The protection contract, its registry, and the names a protection declares.

``Protection(config)(images, model, *, generator) -> Tensor``: ``images`` is
``(N, 3, H, W)`` float in ``[0, 1]`` on the model's device; the result has the same
shape and range and ``|protected - images|∞ <= eps/255`` (budgets in 8-bit units,
docs/PROTECTIONS.md).

Instead of one boolean class flag per input, a protection declares two things:

``needs`` — what a PGD step of the method needs, beyond the image and its latent
(the engine, ``protections/engine.py``, prepares and draws exactly these):

- ``"diffusion_noise"``: each step draws, per image, a timestep ``t ~ U{0..T−1}`` and
  noise ``ε ~ N(0, I)`` for the forward diffusion ``z_t`` of the semantic loss ``L_S``;
- ``"prompt"``: the text embedding ``c`` of ``config.prompt``, encoded once;
- ``"target"``: the latent of ``config.target`` (``"pattern"``, ``"zero"`` or an image
  path, see ``protections/targets.py``), encoded once; with ``latent="sample"`` each
  step draws a fresh posterior sample of it;
- ``"clean_target"``: the same, but the target is the clean image itself (the
  untargeted encoder attack pushes away from it).

``reference_costs`` — what the reference implementation of Xue et al. pays on top
of the method when ``config.reference_mode`` is on (``protections/reference_costs.py``
runs them; docs/PROTECTIONS.md, "Fair cost"). They never change the update:

- ``"trainable_unet"``: the UNet's weights require grad during the step and the
  gradient comes from ``loss.backward()``, which builds weight gradients (dropped);
- ``"target_encode"``: the target image is re-encoded every step;
- ``"target_forward"``: the UNet runs ``L_S`` on the target's latent every step, its
  graph kept alive through the backward pass (the reference's loss module does this
  for every method it serves, even AdvDM);
- ``"image_forward"``: the same on the image's latent (texture-only's reference loss
  module computes an ``L_S`` it never uses).

``analysis_only`` marks an entry that is not a protection an artist could publish
(the latent attack ``sds-z`` has no pixel budget); ``--methods all`` leaves it out.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from cloakbench.core.component import Component
from cloakbench.core.registry import Registry

#: What a step may need; see the module docstring.
NEEDS = frozenset({"diffusion_noise", "prompt", "target", "clean_target"})
#: What reference mode may add to a step; see the module docstring.
REFERENCE_COSTS = ("trainable_unet", "target_encode", "target_forward", "image_forward")
#: What a protection is, declared by its class (``family = "sds"``): the demo's list and the
#: reference-cost model read it, so no list of names elsewhere needs a new method added to it.
FAMILIES = {
    "baseline": "no perturbation, or random noise of the same budget: the reference points",
    "denoiser": "PGD through the denoiser's loss L_S (AdvDM, Mist)",
    "encoder": "PGD on the VAE encoder alone (PhotoGuard's encoder attack, encoder, texture)",
    "sds": "score distillation: the denoiser's Jacobian dropped (Xue et al.'s SDS(+), SDS(-), SDST)",
    "fine-tuning": "made against fine-tuning, with a surrogate trained per image (Anti-DreamBooth's FSMG, ASPL)",
    "latent": "perturbs the latent, not the picture: analysis only (sds-z)",
    "amortized": "a perturbation generator trained once on a model, protecting in one forward pass (amortized)",
    "external": "computed by another tool and read from files (bench leaderboard run --protected)",
}


class ProtectionUnavailable(RuntimeError):
    """A protection that cannot run with this model here (e.g. no trained protector for it): the
    message names the missing file and how to make it; the cell is *unavailable*, not failed."""


class Protection(Component):
    """Base class of every protection; subclasses set ``Config`` and implement ``__call__``."""

    needs: ClassVar[frozenset[str]] = frozenset()
    reference_costs: ClassVar[tuple[str, ...]] = ()
    # Analysis-only entries (e.g. the latent attack ``sds-z``) are left out of ``all``.
    analysis_only: ClassVar[bool] = False
    #: Reads another tool's outputs from files (``external``): scored by the leaderboard, never run by ``all``.
    reads_files: ClassVar[bool] = False
    #: Learns from the whole batch (a surrogate fine-tuned on every image it is given), so an image's
    #: perturbation depends on the others: never batched across cells (:meth:`batches_across_cells`).
    learns_from_batch: ClassVar[bool] = False
    #: One of :data:`FAMILIES`; every registered protection declares it (a registry-wide test checks).
    family: ClassVar[str] = ""
    #: One sentence in plain words for an artist (``bench list`` shows it first, the maths with --verbose).
    plain: ClassVar[str] = ""

    @classmethod
    def plain_description(cls) -> str:
        """The plain sentence, or the docstring's first line where a protection has none."""
        return cls.plain or cls.description()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A misspelt name would otherwise be a need the engine silently never provides.
        unknown = set(cls.needs) - NEEDS
        if unknown:
            raise TypeError(f"{cls.__name__}.needs: unknown {sorted(unknown)}; known: {sorted(NEEDS)}")
        if cls.family and cls.family not in FAMILIES:
            raise TypeError(f"{cls.__name__}.family: unknown {cls.family!r}; known: {', '.join(FAMILIES)}")
        unknown = set(cls.reference_costs) - set(REFERENCE_COSTS)
        if unknown:
            raise TypeError(
                f"{cls.__name__}.reference_costs: unknown {sorted(unknown)}; known: {list(REFERENCE_COSTS)}"
            )

    def __call__(self, images: torch.Tensor, model, *, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def batches_across_cells(cls) -> bool:
        """Whether ``bench compare --batch-size`` may protect several cells' images in one call.

        It may when each image is protected as if alone: its randomness comes from its own
        generator (``generator`` may then be a list, one per image: ``protections/engine.py``,
        ``image_generators``) and nothing is learnt across the batch. Its networks then take one
        image per call (core/per_image.py), so the batch gives each image its result alone:
        docs/PERFORMANCE.md, "Batching".
        """
        return not cls.learns_from_batch and not cls.reads_files

    def row_note(self) -> str:
        """What the protect row's ``note`` says of how this protection ran (``""``: nothing to say)."""
        return ""


PROTECTIONS: Registry[type[Protection]] = Registry("protection")


def publishable_protections() -> list[str]:
    """What ``--methods all`` means: every protection an artist could publish."""
    return [name for name, cls in PROTECTIONS.items() if not cls.analysis_only and not cls.reads_files]


def demo_protections() -> list[str]:
    """What ``make demo`` runs: every publishable protection but ``none`` (the plan adds it) and the
    fine-tuning family, which trains a surrogate per image (minutes per toy image) and is judged by
    the fine-tuning attacks (docs/MIMICRY.md, "Fine-tuning")."""
    return [n for n in publishable_protections() if n != "none" and PROTECTIONS.get(n).family != "fine-tuning"]
