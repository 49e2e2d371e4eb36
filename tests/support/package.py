"""The package's modules as the tree holds them: module ``cloakbench.X.Y`` is the file ``X/Y.py``,
for every package of pyproject's explicit ``packages`` list (docs/ARCHITECTURE.md, "Layout")."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def package_folders() -> list[Path]:
    """Every folder of the installed package, in pyproject's order."""
    return [ROOT.joinpath(*name.split(".")[1:]) for name in PACKAGES]


def package_modules() -> list[tuple[str, Path]]:
    """``(module name, source file)`` of every module of the package, ``__init__`` as its package."""
    found = []
    for package, folder in zip(PACKAGES, package_folders()):
        for source in sorted(folder.glob("*.py")):
            found.append((package if source.stem == "__init__" else f"{package}.{source.stem}", source))
    return found
