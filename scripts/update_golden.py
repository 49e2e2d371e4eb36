"""Regenerate ``tests/golden/slices.json``: the golden output slices of every protection and attack.

What a slice is and how it is compared: ``tests/golden/harness.py``. By default this
writes only what needs writing, and refuses the rest:

- a registered component with no stored slice, or whose ``version`` differs from the
  stored one: its slice is (re)computed and written;
- a component whose ``version`` is unchanged: its output is recomputed and compared; if it
  no longer matches, nothing is written for it and the script exits 1 — changing a
  method's numbers needs a version bump (or, for a deliberate change of the golden setup
  itself, ``--force NAME``);
- a stored slice whose component is no longer registered is dropped.

Usage::

    python scripts/update_golden.py                 # write missing / version-bumped slices
    python scripts/update_golden.py --check         # compare only; exit 1 on any problem
    python scripts/update_golden.py --force sdedit  # rewrite one slice although its version is unchanged
    python scripts/update_golden.py --source /tmp/golden-src  # import cloakbench from another checkout

``--source DIR`` imports the ``cloakbench`` packages from the checkout ``DIR`` (its
``pyproject.toml`` folder mapping) instead of the installed editable one, so slices can be
made from a pristine ``git worktree`` while the working tree holds someone's edits.
Runs on one CPU thread (as the tests do) in about 10 s plus model loading.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Import the mapped ``cloakbench`` packages from another checkout (ahead of the editable install)."""

    def __init__(self, mapping: dict[str, Path]):
        self.mapping = mapping

    def find_spec(self, fullname, path=None, target=None):
        folder = self.mapping.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def use_source(source: Path) -> None:
    config = tomllib.loads((source / "pyproject.toml").read_text())
    package_dir = config["tool"]["setuptools"]["package-dir"]
    sys.meta_path.insert(0, _SourceFinder({name: (source / folder).resolve() for name, folder in package_dir.items()}))


def git_state(source: Path) -> str:
    """``<commit>`` of ``source``, with ``+dirty`` if its component folders have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "core",
                "bench",
                "protections",
                "mimicry",
                "metrics",
                "pyproject.toml",
            ],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only, write nothing; exit 1 on any problem")
    parser.add_argument(
        "--force", default="", help="comma list of names (or 'all') to rewrite even if their version is unchanged"
    )
    parser.add_argument("--source", type=Path, default=None, help="import cloakbench from this checkout")
    parser.add_argument("--out", type=Path, default=None, help="golden file (default tests/golden/slices.json)")
    args = parser.parse_args(argv)

    source = (args.source or ROOT).resolve()
    if args.source is not None:
        use_source(source)
    sys.path.insert(0, str(ROOT))  # tests.golden.harness, from this checkout

    import torch

    torch.set_num_threads(1)  # what the tests use: identical float rounding
    import cloakbench
    from tests.golden import harness

    if not Path(cloakbench.__file__).resolve().is_relative_to(source):
        print(f"cloakbench was imported from {cloakbench.__file__}, not from {source}", file=sys.stderr)
        return 2

    path = args.out or harness.GOLDEN_PATH
    golden = harness.load(path)
    force = {n.strip() for n in args.force.split(",") if n.strip()}
    commit = git_state(source)
    start = time.perf_counter()
    model, images = harness.golden_model(), harness.golden_images()
    problems, written = [], []

    registered = harness.all_entries()
    for section in harness.SECTIONS:
        stored_section = golden.setdefault(section, {})
        for stale in [n for n in stored_section if (section, n) not in registered]:
            print(f"{section} {stale}: no longer registered; its slice is dropped")
            if not args.check:
                del stored_section[stale]

    for section, name in registered:
        stored = golden[section].get(name)
        cls = harness.registry(section).get(name)
        forced = "all" in force or name in force
        if stored is not None and int(stored["version"]) == int(cls.version) and not forced:
            message = harness.check(section, name, golden, model, images)
            if message:
                problems.append(message)
                print(f"FAIL  {section} {name}: {message}")
            else:
                print(f"ok    {section} {name} (version {cls.version})")
            continue
        if stored is None and harness.unavailable_here(section, name):
            print(f"skip  {section} {name}: unavailable here ({harness.unavailable_here(section, name)[:120]}…)")
            continue
        if args.check:
            message = harness.check(section, name, golden, model, images)
            problems.append(message)
            print(f"FAIL  {section} {name}: {message}")
            continue
        why = (
            "forced"
            if forced and stored is not None
            else ("new" if stored is None else f"version {stored['version']} -> {cls.version}")
        )
        golden[section][name] = harness.make_entry(section, name, model, images, commit=commit)
        written.append(name)
        print(f"wrote {section} {name} ({why})")

    if not args.check and written:
        golden["meta"] = {
            "about": "golden output slices; see tests/golden/harness.py. Regenerate with scripts/update_golden.py",
            "model": harness.MODEL,
            "model_seed": harness.MODEL_SEED,
            "image_seed": harness.IMAGE_SEED,
            "seed": harness.SEED,
            "side": harness.SIDE,
            "patch": "output[0, :, 30:32, 30:32]",
            "torch": torch.__version__,
            "threads": 1,
            "last_commit": commit,
        }
        harness.dump(golden, path)
    print(f"{len(written)} written, {len(problems)} problems, {time.perf_counter() - start:.1f} s; source {commit}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
