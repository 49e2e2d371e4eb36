"""The layers contract (docs/ARCHITECTURE.md, "Layers"): core -> methods -> harness, no import upward.

``lint-imports`` (import-linter) checks the contract in pyproject.toml. Its graph builder
walks one folder per package, while cloakbench maps several repository folders into one
namespace (``bench/`` -> ``cloakbench``, ``protections/`` -> ``cloakbench.protections``, ...),
so the test assembles a mirror of the installed package from pyproject's ``package-dir``
table and lints that: the very files of the repository, under their import names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def mirror(destination: Path) -> Path:
    """Copy every mapped folder's Python files to ``destination/<import path>``; return ``destination``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(config.items()):
        target = destination.joinpath(*package.split("."))
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder)
            # A sub-folder that is itself mapped (bench/ holds no protections/) is copied by its own entry.
            if any(f"{package}.{relative.parts[0]}" == other for other in config) and len(relative.parts) > 1:
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return destination


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def package_mirror(tmp_path_factory) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extra (pip install -e '.[test]')")
    return mirror(tmp_path_factory.mktemp("mirror"))


def test_the_package_keeps_its_layers(package_mirror):
    done = lint(package_mirror)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(package_mirror, tmp_path):
    broken = mirror(tmp_path / "broken")
    registry = broken / "cloakbench" / "core" / "registry.py"
    # A function-level import counts too: the core reaching up into the harness.
    registry.write_text(registry.read_text() + "\n\ndef _upward():\n    from cloakbench import compare  # noqa\n")
    done = lint(broken)
    assert done.returncode != 0
    assert "cloakbench.core.registry -> cloakbench.compare" in done.stdout


def test_methods_do_not_import_each_other(tmp_path):
    broken = mirror(tmp_path / "broken")
    sdedit = broken / "cloakbench" / "mimicry" / "sdedit.py"
    sdedit.write_text(sdedit.read_text() + "\nimport cloakbench.protections.none  # noqa\n")
    done = lint(broken)
    assert done.returncode != 0
    assert "cloakbench.mimicry.sdedit -> cloakbench.protections.none" in done.stdout


def test_every_subpackage_is_installed():
    """``[tool.setuptools] packages`` is explicit: a new sub-folder with an ``__init__.py`` must be listed,
    or a non-editable install would leave it out."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    mapped_elsewhere = {p for p in found if any(p != q and p.startswith(q + ".") and p in setuptools["package-dir"]
                                                for q in setuptools["package-dir"])}
    assert found - mapped_elsewhere <= set(setuptools["packages"]), sorted(found - set(setuptools["packages"]))
