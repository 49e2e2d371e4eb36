"""Where a result came from: content hashes, versions, the git commit and the device.

One implementation of each, used by the run manifest, ``bench perf`` rows and the
``bench protect`` sidecar, so that the three never disagree (docs/RELIABILITY.md,
"Reproducibility").
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

import cloakbench

#: The source checkout (``core/provenance.py`` → one folder up). The shipped toy
#: models live under ``PROJECT_ROOT/models``; git state is read here.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path]) -> str:
    """One hex SHA-256 over several files: each file's name then bytes, in sorted path order.

    The identity of a model folder's weights: renaming or editing any weight file changes it.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the checkout at ``root``; ``("unknown", None)`` outside git.

    ``dirty`` counts changes to tracked files only: untracked files (a run folder, a
    scratch script) do not change what the code computes.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0 or not commit.stdout.strip():
            return "unknown", None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def versions() -> dict[str, str]:
    """Versions of Python, torch, diffusers, transformers and cloakbench."""
    import diffusers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cloakbench": cloakbench.__version__,
    }


def code_identity() -> dict[str, Any]:
    """:func:`versions` and the checkout's commit and dirty flag: what a measurement was made with."""
    commit, dirty = git_state()
    return {**versions(), "cloakbench_commit": commit, "cloakbench_dirty": dirty}


def device_name(device: torch.device | str) -> str:
    """A GPU's marketing name, or the CPU's model and the torch thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
