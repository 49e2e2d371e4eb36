"""The shipped models' file lists: ``SHA256SUMS`` written at export, and the model card's table of it.

Shared by the training scripts (``train_toy.py``, ``train_toy_pixel.py``,
``finetune_toy_decoder.py``) and the measurement scripts that render ``MODEL_CARD.md``
(``measure_toy.py``, ``measure_toy_pixel.py``), so every model folder lists its files the
same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cloakbench.core.provenance import sha256_file


def write_sha256sums(folder: Path, weights: Iterable[Path]) -> Path:
    """``SHA256SUMS`` in ``folder``: ``<sha256>  <path relative to folder>`` per weight file."""
    path = folder / "SHA256SUMS"
    path.write_text("".join(f"{sha256_file(p)}  {p.relative_to(folder)}\n" for p in weights))
    return path


def read_sha256sums(folder: Path) -> list[tuple[str, str]]:
    """``(sha256, relative path)`` pairs of ``folder/SHA256SUMS``, in file order."""
    return [tuple(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines() if line.strip()]


def files_section(folder: Path) -> list[str]:
    """The model card's "Files and SHA-256" section: one row per weight file, then the total size."""
    sums = read_sha256sums(folder)
    sizes = {name: (folder / name).stat().st_size for _, name in sums}
    return [
        "## Files and SHA-256 (also in `SHA256SUMS`)",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        *[f"| `{name}` | {sizes[name]} | `{digest}` |" for digest, name in sums],
        "",
        f"Total weights: {sum(sizes.values()) / 1e6:.1f} MB (fp32 safetensors).",
        "",
    ]
