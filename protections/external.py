"""``external``: a protection computed by another tool (Glaze, Mist's app, ``bench protect`` elsewhere), read from files.

Not a method: the scoring of files a submitter made (``bench leaderboard run --protected DIR``,
docs/LEADERBOARD.md, "External tools"). It lets the one compare harness score them exactly as
it scores a built-in protection: the protect cell publishes the file's pixels, the attacks and
metrics read that PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cloakbench.core.config import bounded
from cloakbench.core.images import ImageError, check_images, from_uint8_array, quantize_8bit
from cloakbench.core.provenance import sha256_files
from cloakbench.protections.base import PROTECTIONS, Protection

#: The files looked at in a budget folder (a bench protect sidecar, ``*.json``, is not an image).
IMAGE_SUFFIXES = (".png", ".webp")


@dataclass(frozen=True)
class ExternalConfig:
    """folder: one sub-folder per budget, named by it (``4/``, ``8/``, ``16/``), searched recursively for PNG or
    lossless WebP files; eps: the budget in 8-bit units (the sub-folder read, and the L∞ bound each file must
    keep); tool: the tool's name and version as the submitter states it (shown in the entry)."""

    folder: str = ""
    eps: float = bounded(16.0, 0, 255, low_open=True)
    tool: str = "external"


def budget_folder(folder: str, eps: float) -> Path:
    return Path(folder).expanduser() / f"{eps:g}"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@PROTECTIONS.register("external")
class ExternalFiles(Protection):
    """Files another tool protected: each clean image is replaced by the one file within ``eps`` of it in L∞.

    No update rule: the tool is not run here. For each clean image ``x`` (8-bit, at the working
    size), the protected image is the file ``x̃`` of ``folder/<eps>/`` of the same size with
    ``max|x̃ − x| ≤ eps`` levels (8-bit, ``eps/255`` on ``[0, 1]``). So files are matched by their
    pixels, not their names: ``bench protect``'s ``a.png.png``, a tool's ``a_glazed.png`` and a
    renamed file all work. No file within the budget, or two, is an error naming the folder
    (a file outside the budget is not this image's protection at this budget: it is never
    clipped into it). Only lossless files are read (PNG, WebP): a JPEG's compression would
    change the pixels the tool published.

    The identity replaces ``folder`` by the SHA-256 over the budget folder's image files
    (:func:`cloakbench.core.provenance.sha256_files`), so a cell key names the submitted bytes,
    never a path, and changing a file recomputes its cells.
    """

    family = "external"
    reads_files = True
    plain = "Pictures another tool protected, read from a folder (bench leaderboard run --protected)."
    Config = ExternalConfig
    version = 1

    def identity(self) -> dict:
        identity = super().identity()
        folder = budget_folder(self.config.folder, self.config.eps)
        files = image_files(folder) if folder.is_dir() else []
        identity["config"] = {**identity["config"], "folder": sha256_files(files) if files else ""}
        return identity

    def __call__(self, images: torch.Tensor, model=None, *, generator=None) -> torch.Tensor:
        check_images(images, self.name, multiple_of=8)
        folder = budget_folder(self.config.folder, self.config.eps)
        if not self.config.folder or not folder.is_dir():
            raise ImageError(
                f"external.folder: no budget folder {folder} (give --protected DIR holding one sub-folder per "
                "budget, e.g. DIR/8/, docs/LEADERBOARD.md)"
            )
        candidates = [(path, self._read(path)) for path in image_files(folder)]
        return torch.stack(
            [self._match(image, candidates, folder) for image in quantize_8bit(images.detach().cpu())]
        ).to(images.device)

    @staticmethod
    def _read(path: Path) -> torch.Tensor:
        with Image.open(path) as opened:
            return from_uint8_array(np.asarray(opened.convert("RGB")))

    def _match(self, clean: torch.Tensor, candidates: list[tuple[Path, torch.Tensor]], folder: Path) -> torch.Tensor:
        levels = torch.round(clean * 255)
        within = [
            (path, pixels)
            for path, pixels in candidates
            if pixels.shape == clean.shape and (torch.round(pixels * 255) - levels).abs().max() <= self.config.eps
        ]
        side = f"{clean.shape[2]}x{clean.shape[1]}"
        if not within:
            raise ImageError(
                f"{folder}: no {side} file within {self.config.eps:g}/255 of one of the protocol's images "
                f"({len(candidates)} file(s) looked at); protect the protocol's images at the working size "
                "(bench leaderboard images) and keep the budget"
            )
        if len(within) > 1:
            raise ImageError(
                f"{folder}: {', '.join(p.name for p, _ in within)} are all within the budget of one image; "
                "keep one protected file per image"
            )
        return within[0][1]
