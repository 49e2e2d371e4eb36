"""Docstring examples run: every module of the package whose docstrings hold ``>>>`` examples."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.support.package import package_modules


def modules_with_examples() -> list[str]:
    return [name for name, source in package_modules() if ">>> " in source.read_text()]


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert {"cloakbench.core.registry", "cloakbench.core.config", "cloakbench.bench.plan"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result}"
