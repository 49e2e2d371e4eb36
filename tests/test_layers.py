"""The layers contracts (docs/ARCHITECTURE.md, "Layers"): core -> methods -> harness, no import upward.

The tree is the import graph (module ``cloakbench.X.Y`` is the file ``X/Y.py``), so ``lint-imports``
runs from the checkout as it is. The tests that break a contract on purpose lint a plain copy of the
package folder, so the repository's own files are never edited.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.package import package_folders, package_modules

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extra (pip install -e '.[test]')")
    env = {"PATH": "/usr/bin:/bin"} | ({"PYTHONPATH": str(pythonpath)} if pythonpath else {})
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_of_package(destination: Path) -> Path:
    """``destination/cloakbench``: the package's Python files, copied as they are; returns ``destination``."""
    for folder in package_folders():
        target = destination / "cloakbench" / folder.relative_to(ROOT)
        target.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            shutil.copy2(source, target / source.name)
    return destination


def test_the_package_keeps_its_layers():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    broken = copy_of_package(tmp_path)
    registry = broken / "cloakbench" / "core" / "registry.py"
    # A function-level import counts too: the core reaching up into the harness.
    registry.write_text(registry.read_text() + "\n\ndef _upward():\n    from cloakbench.bench import compare\n")
    done = lint(broken, pythonpath=broken)
    assert done.returncode != 0
    assert "cloakbench.core.registry -> cloakbench.bench.compare" in done.stdout


def test_methods_do_not_import_each_other(tmp_path):
    broken = copy_of_package(tmp_path)
    sdedit = broken / "cloakbench" / "mimicry" / "sdedit.py"
    sdedit.write_text(sdedit.read_text() + "\nimport cloakbench.protections.none\n")
    done = lint(broken, pythonpath=broken)
    assert done.returncode != 0
    assert "cloakbench.mimicry.sdedit -> cloakbench.protections.none" in done.stdout


def test_the_harness_keeps_its_inner_layers(tmp_path):
    broken = copy_of_package(tmp_path)
    store = broken / "cloakbench" / "bench" / "store.py"
    store.write_text(store.read_text() + "\n\ndef _upward():\n    from cloakbench.bench import execute\n")
    done = lint(broken, pythonpath=broken)
    assert done.returncode != 0
    assert "cloakbench.bench.store -> cloakbench.bench.execute" in done.stdout


def test_every_package_folder_is_installed():
    """``packages`` is explicit: a new folder with an ``__init__.py`` must be listed, or a wheel would
    leave it out. Folders that are not part of the package (tests, scripts, the venv) are excluded."""
    outside = {"tests", "scripts", "configs", "docs", "models", "benchmarks", "build", "runs"}
    found = {
        ".".join(["cloakbench", *init.parent.relative_to(ROOT).parts])
        for init in ROOT.rglob("__init__.py")
        if not (init.relative_to(ROOT).parts[0] in outside or init.relative_to(ROOT).parts[0].startswith("."))
    }
    assert found == set(SETUPTOOLS["packages"]), sorted(found ^ set(SETUPTOOLS["packages"]))


def test_module_names_are_file_paths():
    """The rule of the layout: ``cloakbench.X.Y`` is ``X/Y.py`` for every module of the package."""
    import importlib.util

    for name, source in package_modules():
        spec = importlib.util.find_spec(name)  # finds the file without running the module
        assert spec is not None and spec.origin is not None, name
        assert Path(spec.origin).resolve() == source.resolve(), name
