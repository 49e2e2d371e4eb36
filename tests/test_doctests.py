"""Docstring examples run: every module of the package whose docstrings hold ``>>>`` examples."""

from __future__ import annotations

import doctest
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for source in sorted(ROOT.joinpath(*package.split(".")[1:]).glob("*.py")):
            if ">>> " in source.read_text():
                found.append(package if source.stem == "__init__" else f"{package}.{source.stem}")
    return found


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert {"cloakbench.core.registry", "cloakbench.core.config", "cloakbench.bench.plan"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result}"
