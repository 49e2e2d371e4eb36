"""The perturbation generator of the amortized protectors: a small fully convolutional U-Net.

``G(x) -> u`` with ``u ∈ (−1, 1)`` per pixel and channel (a ``tanh``), so the perturbation
``δ = (eps/255) · u`` lies strictly inside the L∞ ball by construction, whatever the weights
(``protections/amortized.py`` scales, clamps to [0, 1] and rounds to the 8-bit grid).

Architecture (a U-Net in the manner of the immunizers of DiffVax, Ozden et al., ICLR 2026,
arXiv:2411.17957, which use a UNet++; RID, Guo et al., arXiv:2412.09844, uses a DiT
with a ``scale`` = budget output in its ``train_sd_ensemble_reg.py``, ``DiT(scale=args.eps_scale)``),
scaled down to run in tens of milliseconds per 128² tile on one CPU thread:

- input ``2x − 1`` (the image in [−1, 1]), ``(N, 3, H, W)`` with ``H, W`` multiples of 4;
- three levels of ``widths`` channels (default 16, 32, 64), each two 3×3 convolutions with
  SiLU; down by a stride-2 3×3 convolution, up by nearest ×2 and a skip concatenation;
- a 1×1 convolution to 3 channels, then ``tanh``.

No normalisation layer: every output pixel depends only on a bounded neighbourhood (the
receptive field, 2·(2 + 2·2 + 2·4) + … ≈ 46 pixels across), so the generator is translation
equivariant and a picture protected in tiles matches the picture protected whole away from
the tile borders, and a batch gives exactly its single images (no batch statistics).

Saved as ``generator.safetensors`` (weights) beside ``protector.json`` (the architecture, the
budget and objective it was trained for, the model it was trained on); never a pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

#: Files of a protector folder.
WEIGHTS_FILE = "generator.safetensors"
SPEC_FILE = "protector.json"


@dataclass(frozen=True)
class GeneratorSpec:
    """The architecture: channel widths per level (the number of levels is ``len(widths)``)."""

    widths: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self):
        if len(self.widths) < 1 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (each level halves them)."""
        return 2 ** (len(self.widths) - 1)


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1), nn.SiLU(), nn.Conv2d(outputs, outputs, 3, padding=1), nn.SiLU()
    )


class PerturbationGenerator(nn.Module):
    """``forward(images in [0, 1]) -> u in (−1, 1)``, same shape; see the module docstring."""

    def __init__(self, spec: GeneratorSpec = GeneratorSpec()):
        super().__init__()
        self.spec = spec
        widths = list(spec.widths)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = 3
        for level, width in enumerate(widths):
            if level > 0:
                self.downs.append(nn.Conv2d(previous, previous, 3, stride=2, padding=1))
            self.encoders.append(_block(previous, width))
            previous = width
        self.decoders = nn.ModuleList(
            _block(widths[level + 1] + widths[level], widths[level]) for level in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 3, 1)
        # A small head: the generator starts near δ = 0, inside the ball and off tanh's flat tails.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % self.spec.multiple or width % self.spec.multiple:
            raise ValueError(
                f"the perturbation generator needs sides that are multiples of {self.spec.multiple}, "
                f"got {height}x{width}"
            )
        hidden = images * 2.0 - 1.0
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                hidden = self.downs[level - 1](hidden)
            hidden = encoder(hidden)
            skips.append(hidden)
        skips.pop()
        for decoder in self.decoders:
            hidden = F.interpolate(hidden, scale_factor=2.0, mode="nearest")
            hidden = decoder(torch.cat([hidden, skips.pop()], dim=1))
        return torch.tanh(self.head(hidden))


def seeded_generator(spec: GeneratorSpec = GeneratorSpec(), seed: int = 0) -> PerturbationGenerator:
    """A generator with seeded initial weights (the start of training; on random-weight test models, the
    stand-in ``protections/amortized.py`` labels as untrained)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # nn.Module initialisers draw from the global generator only
        generator = PerturbationGenerator(spec)
    finally:
        torch.random.set_rng_state(state)  # leave the caller's global stream as it was
    return generator


def save_generator(generator: PerturbationGenerator, folder: Path, facts: dict) -> None:
    """Write ``generator.safetensors`` and ``protector.json`` (``facts``: what it was trained for)."""
    from safetensors.torch import save_file

    from cloakbench.core.io import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in generator.state_dict().items()}
    temporary = folder / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(temporary))
    temporary.replace(folder / WEIGHTS_FILE)
    record = {"architecture": {"widths": list(generator.spec.widths)}, **facts}
    write_atomic(folder / SPEC_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def read_spec(folder: Path) -> dict:
    """``protector.json`` of a protector folder, as written by :func:`save_generator`."""
    return json.loads((folder / SPEC_FILE).read_text())


def load_generator(folder: Path) -> PerturbationGenerator:
    """The generator saved in ``folder``, in eval mode with frozen weights."""
    from safetensors.torch import load_file

    record = read_spec(folder)
    generator = PerturbationGenerator(GeneratorSpec(tuple(int(w) for w in record["architecture"]["widths"])))
    generator.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    generator.eval().requires_grad_(False)
    return generator


def spec_as_dict(spec: GeneratorSpec) -> dict:
    return {key: list(value) for key, value in asdict(spec).items()}
