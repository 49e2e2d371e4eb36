"""Amortized protection: a trained perturbation generator protects a picture in one forward pass.

The per-image protections run 100 PGD steps per picture; an amortized protector pays that
cost once, in training (``bench train-protector``, ``protections/amortized_training.py``), and
then protects any picture with one forward pass of a small U-Net
(``protections/perturbation_generator.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from cloakbench.core.config import bounded, check_ranges
from cloakbench.core.images import check_images
from cloakbench.core.provenance import PROJECT_ROOT, sha256_file
from cloakbench.protections.base import PROTECTIONS, Protection, ProtectionUnavailable
from cloakbench.protections.engine import round_within_budget
from cloakbench.protections.perturbation_generator import (
    SPEC_FILE,
    WEIGHTS_FILE,
    PerturbationGenerator,
    load_generator,
    read_spec,
    seeded_generator,
)

#: Where ``bench train-protector`` puts, and this protection looks for, a model's shipped protector.
MODELS_FOLDER = PROJECT_ROOT / "models"

#: Tiles of this many pixels at most per forward pass (memory: the generator's activations at
#: 16 channels are 64 bytes per pixel per layer, so a 2400x1600 picture whole would hold ~250 MB).
MAX_PIXELS_PER_PASS = 1024 * 1024


def default_protector(model_name: str) -> Path:
    """``models/protector-<model>``: the shipped protector of a model (``models/protector-toy``)."""
    return MODELS_FOLDER / f"protector-{model_name}"


def training_command(model_name: str, folder: Path) -> str:
    return f"bench train-protector --objective sds- --model {model_name} --images DIR --out {folder}"


@dataclass(frozen=True)
class AmortizedConfig:
    """eps: L∞ budget in 8-bit units, ``eps/255`` (default 16, the PGD protections' budget); the
    generator's ``tanh`` output is scaled to it, so a protector trained at 16 used at 8 gives half its
    perturbation. protector: the protector folder (``generator.safetensors`` + ``protector.json``);
    ``""`` (default) means ``models/protector-<model>``, the one shipped for the model in use."""

    eps: float = bounded(16.0, 0, 255, low_open=True)
    protector: str = ""

    def __post_init__(self):
        check_ranges(self)


@PROTECTIONS.register("amortized")
class AmortizedProtection(Protection):
    """Amortized protector: one forward pass of a trained U-Net, x ← round_8bit(clip(x + eps·tanh(G(x)))).

    The amortized family of FastProtect (Ahn et al., "Nearly Zero-Cost Protection Against
    Mimicry by Personalized Diffusion Models", CVPR 2025, arXiv:2412.11423), DiffVax (Ozden et
    al., "DiffVax: Optimization-Free Image Immunization Against Diffusion-Based Editing", ICLR
    2026, arXiv:2411.17957) and RID (Guo et al., "Real-time Identity Defenses against Malicious
    Personalization of Diffusion Models", arXiv:2412.09844): learn the perturbation once, on a
    model and a set of pictures, then protect in one forward pass.

    What the literature trains on, and what is adopted here (docs/PROTECTIONS.md, "Amortized"):
    FastProtect pre-trains a mixture of perturbations against the VAE encoder's latent (a
    textural, Mist/PhotoGuard-style loss over several VAE feature layers); DiffVax trains a
    UNet++ immunizer through the editing pipeline itself (a "make the edit fail" loss plus a
    perturbation-size term); RID trains a DiT generator with score distillation (Adv-SDS, the
    UNet's Jacobian dropped) plus a regression to PGD perturbations. Here the generator is
    trained on any PGD protection's own ``direction`` (``--objective sds-``: RID's choice and Xue
    et al.'s best method; ``--objective encoder``: FastProtect's encoder target),
    through the score-distillation chain rule (``protections/amortized_training.py``).

    Threat model: an L∞ perturbation of at most ``eps/255`` on ``[0, 1]`` images (8-bit units),
    made without the model at protection time (the model was used once, in training).

    Update, in one shot, with ``G`` the protector's generator (``tanh`` output in (−1, 1))::

        x ← round_within_budget(clip_[0,1](x + (eps/255) · G(x)))

    inside the ball by construction, then the 8-bit grid and clamp every protection uses
    (``protections/engine.py:round_within_budget``). Fully convolutional: any size whose sides
    are multiples of 8; pictures above ``MAX_PIXELS_PER_PASS`` pixels run in overlapping tiles
    (the generator's receptive field is local, so tiles agree away from their borders).
    Deterministic: the seed is not used (the protector holds all its randomness in its weights).

    Which protector: ``protector=PATH``, else ``models/protector-<model>`` (``models/protector-toy``
    ships). A model without one is *unavailable*, naming the file and the command that trains it.
    A random-weights test model (``tiny-random``) gets a seeded **untrained** generator, labelled
    so in the row note: it exercises the contract (budget, 8-bit, batching), it protects nothing.

    Config (:class:`AmortizedConfig`): eps 16, protector "".

    Example::

        protection = PROTECTIONS.get("amortized").from_overrides({"protector": "models/protector-toy"})
        protected = protection(images, model, generator=torch.Generator().manual_seed(0))
    """

    family = "amortized"
    plain = "A network trained once makes the protection in a single pass: seconds instead of minutes per picture."

    Config = AmortizedConfig
    version = 1
    #: What the protect row's note says; set when the protector is resolved.
    _note: str = ""
    _cache: ClassVar[dict[tuple, PerturbationGenerator]] = {}

    # -- which generator ------------------------------------------------------------------
    def protector_folder(self, model) -> Path:
        return Path(self.config.protector) if self.config.protector else default_protector(model.name)

    def check_available(self, model) -> None:
        """Raise :class:`ProtectionUnavailable` naming the file when the model has no protector."""
        self.generator_for(model)

    def generator_for(self, model) -> PerturbationGenerator:
        folder = self.protector_folder(model)
        weights = folder / WEIGHTS_FILE
        if weights.is_file() and (folder / SPEC_FILE).is_file():
            digest = sha256_file(weights)
            key = (str(weights.resolve()), digest, str(model.device))
            if key not in self._cache:
                self._cache[key] = load_generator(folder).to(model.device)
            trained_on = read_spec(folder).get("model", {}).get("name", "?")
            self._note = f"protector {folder.name} (sha256 {digest[:12]}, trained on {trained_on})"
            return self._cache[key]
        if not self.config.protector and _random_weights(model.name):
            key = ("untrained", model.name, str(model.device))
            if key not in self._cache:
                self._cache[key] = seeded_generator(seed=0).eval().requires_grad_(False).to(model.device)
            self._note = f"UNTRAINED seeded generator (random-weights test model {model.name}): protects nothing"
            return self._cache[key]
        raise ProtectionUnavailable(
            f"amortized: no protector for model {model.name} ({weights} is missing); train one with "
            f"`{training_command(model.name, folder)}`, or pass --set amortized.protector=PATH"
        )

    def row_note(self) -> str:
        return self._note

    # -- protecting -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, images: torch.Tensor, model, *, generator: object = None) -> torch.Tensor:
        check_images(images, self.name, multiple_of=8)  # the sides every protection takes
        network = self.generator_for(model)
        clean = images.detach().to(device=model.device, dtype=torch.float32)
        unit = torch.cat([_in_tiles(network, image[None]) for image in clean])
        adversarial = (clean + (self.config.eps / 255.0) * unit).clamp(0.0, 1.0)
        return round_within_budget(adversarial, clean, self.config.eps)


def _random_weights(model_name: str) -> bool:
    """Whether ``model_name`` is a zoo entry with seeded random weights (a test model)."""
    from cloakbench.core.zoo import ZOO

    return model_name in ZOO.names() and ZOO.get(model_name).weights == "random"


def _in_tiles(network: PerturbationGenerator, image: torch.Tensor, max_pixels: int = MAX_PIXELS_PER_PASS):
    """``G(image)`` for one ``(1, 3, H, W)`` image, whole when it fits in ``max_pixels``, else in
    overlapping square tiles whose centres are kept (the overlap covers the receptive field)."""
    height, width = image.shape[-2:]
    if height * width <= max_pixels:
        return network(image)
    margin = 64  # beyond the receptive field's half-width (~46 / 2): interiors are exact
    tile = int(max_pixels**0.5) // 8 * 8
    core = tile - 2 * margin
    output = torch.empty_like(image)
    for top in range(0, height, core):
        for left in range(0, width, core):
            low_y, low_x = max(0, top - margin), max(0, left - margin)
            high_y, high_x = min(height, top + core + margin), min(width, left + core + margin)
            # Sides stay multiples of 8: every start and end is one, or the picture's own side.
            piece = network(image[:, :, low_y:high_y, low_x:high_x])
            rows, cols = slice(top, min(height, top + core)), slice(left, min(width, left + core))
            output[:, :, rows, cols] = piece[
                :, :, rows.start - low_y : rows.stop - low_y, cols.start - low_x : cols.stop - low_x
            ]
    return output
