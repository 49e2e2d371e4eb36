"""Golden slices: a few checked-in numbers per protection and attack, tied to its ``version``.

For every registered protection and every mimicry attack or purification, a short slice of
its output on ``tiny-random`` (fixed seeds, fixed images, quick settings) is stored in
``tests/golden/slices.json`` with the component's ``version``:

- ``values``: the 12 values ``output[0, :, 30:32, 30:32]`` (first image, 3 channels, a
  2×2 patch at the centre), rounded to 6 decimals;
- ``mean`` and ``std`` of the whole first image (float64, rounded to 8 decimals), so a
  change outside the patch is seen too;
- ``eight_bit``: whether the output was on the 8-bit grid when the slice was made.

A component whose ``version`` still equals the stored one must reproduce its slice (float
outputs within 1e-4; 8-bit outputs may differ by 1/255 in at most one value, a float
rounding landing on the other side of .5). A different ``version``, or no stored slice at
all, fails with "regenerate with scripts/update_golden.py". So changing a method's
numbers needs a version bump and a new slice, and a refactor that claims to change
nothing is held to its old numbers.

A model stage (``adapts_model``, e.g. ``encoder-harden``) passes the pixels on unchanged, so its slice is
the VAE round trip ``D(E′(x))`` through the model it hands on.

Used by ``tests/test_golden_slices.py`` and ``scripts/update_golden.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

#: The checked-in slices; ``CLOAKBENCH_GOLDEN`` points the tests at another file (the throwaway
#: component test of docs/CONTRIBUTING.md writes its slice to a copy, never to this one).
GOLDEN_PATH = Path(os.environ.get("CLOAKBENCH_GOLDEN") or Path(__file__).with_name("slices.json"))
REGENERATE = "regenerate with scripts/update_golden.py"

SECTIONS = ("protections", "mimicry")
MODEL = "tiny-random"
MODEL_SEED = 0
IMAGE_SEED = 1234
SEED = 0
SIDE = 64
PROMPT = "a photo"
# The patch: first image, every channel, rows 30:32, columns 30:32 (12 values).
PATCH = (0, slice(None), slice(30, 32), slice(30, 32))
DECIMALS = 6
STAT_DECIMALS = 8

FLOAT_ATOL = 1e-4
STAT_ATOL = 1e-5
LEVEL = 1 / 255
LEVEL_ATOL = 1e-5  # below this two stored 8-bit values are the same level (they are rounded to 1e-6)

# On top of the quick settings: what makes a component runnable and deterministic here.
# impress's default LPIPS distance needs pretrained AlexNet weights (never present in CI);
# upscale's default picks the SD x4 upscaler if one happens to be cached, so pin bicubic.
GOLDEN_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "protections": {},
    "mimicry": {
        "impress": {"distance": "l2"},
        # The SD x4 upscaler and the shipped pixel model are not what the slices pin: seeded tiny stand-ins.
        "upscale": {"upscaler_path": "tiny-random-upscaler"},
        "upscale-stock": {"upscaler_path": "tiny-random-upscaler"},
        "diffpure": {"pixel_model": "tiny-pixel-random"},
        "gridpure": {"pixel_model": "tiny-pixel-random"},
        "pdm-pure-uncond": {"pixel_model": "tiny-pixel-random"},
    },
}

# Components that only run with pretrained weights no test machine has and no seeded stand-in
# reproduces (pdm-pure: DeepFloyd IF stage II). Until a slice is stored, their golden check is
# that they refuse with AttackUnavailable; once the weights are here they must get a slice.
WEIGHTS_ONLY: dict[str, set[str]] = {"protections": set(), "mimicry": {"pdm-pure"}}


def unavailable_here(section: str, name: str) -> str | None:
    """Why a :data:`WEIGHTS_ONLY` component cannot run here (its AttackUnavailable), else ``None``."""
    if name not in WEIGHTS_ONLY.get(section, set()):
        return None
    from cloakbench.mimicry import AttackUnavailable

    try:
        build(section, name, default_overrides(section, name)).check_available()
    except AttackUnavailable as error:
        return str(error)
    return None


def registry(section: str):
    if section == "protections":
        from cloakbench.protections import PROTECTIONS

        return PROTECTIONS
    if section == "mimicry":
        from cloakbench.mimicry import MIMICRY

        return MIMICRY
    raise ValueError(f"unknown golden section {section!r}; expected one of {SECTIONS}")


def all_entries() -> list[tuple[str, str]]:
    """Every ``(section, name)`` the golden file must cover, in registry order."""
    return [
        (section, name)
        for section in SECTIONS
        for name in registry(section).names()
        if not getattr(registry(section).get(name), "reads_files", False)  # external: another tool's files
    ]


def golden_images() -> torch.Tensor:
    """Two smooth seeded 64² images on the 8-bit grid (the same as tests/conftest.py's ``clean8``)."""
    from cloakbench.core.images import quantize_8bit

    coarse = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(IMAGE_SEED))
    smooth = torch.nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    return quantize_8bit(smooth)


def golden_model():
    from cloakbench.core.zoo import load_model

    return load_model(MODEL, device="cpu", dtype="float32", seed=MODEL_SEED)


def default_overrides(section: str, name: str) -> dict[str, Any]:
    """Quick settings (``quick_component``) plus :data:`GOLDEN_OVERRIDES`, JSON-ready."""
    from cloakbench.core.quick import quick_component

    overrides = dict(quick_component(registry(section).get(name)))
    overrides.update(GOLDEN_OVERRIDES.get(section, {}).get(name, {}))
    return json.loads(json.dumps(overrides))


def build(section: str, name: str, overrides: dict[str, Any]):
    return registry(section).get(name).from_overrides(overrides)


def run(section: str, name: str, overrides: dict[str, Any], model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{setting: output}`` for one component ("" when it has no settings)."""
    component = build(section, name, overrides)
    if section == "protections":
        return {"": component(images.clone(), model, generator=torch.Generator().manual_seed(SEED))}
    from cloakbench.bench.copier import RunProtections
    from cloakbench.mimicry import AttackContext

    outputs = {}
    with tempfile.TemporaryDirectory(prefix="cloakbench-golden-") as work_dir:
        for setting in component.settings():
            context = AttackContext(
                setting=setting,
                prompt=PROMPT,
                work_dir=work_dir,
                image_names=[f"image{i}" for i in range(len(images))],
                protections=RunProtections(model, quick=True),  # what adaptive stages run (encoder-harden)
            )
            if component.adapts_model:
                # A model stage passes the pixels on unchanged; its slice is the round trip through
                # the model it hands on (a hardened encoder shows in D(E'(x))).
                adapted = component.adapt_model(model, generator=torch.Generator().manual_seed(SEED), context=context)
                with torch.no_grad():
                    outputs[setting] = adapted.decode(adapted.encode(images.clone(), mode="mean"))
                continue
            outputs[setting] = component(
                images.clone(), model, generator=torch.Generator().manual_seed(SEED), context=context
            )
    return outputs


def fingerprint(output: torch.Tensor) -> dict[str, Any]:
    """The stored slice of one output (see the module docstring)."""
    output = output.detach().cpu().float()
    first = output[0].double()
    levels = output * 255
    return {
        "shape": list(output.shape),
        "eight_bit": bool(torch.equal(levels, torch.round(levels))),
        "values": [round(float(v), DECIMALS) for v in output[PATCH].flatten()],
        "mean": round(float(first.mean()), STAT_DECIMALS),
        "std": round(float(first.std()), STAT_DECIMALS),
    }


def config_of(section: str, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from cloakbench.core.config import config_as_dict

    return config_as_dict(build(section, name, overrides).config)


def make_entry(
    section: str, name: str, model, images: torch.Tensor, overrides: dict[str, Any] | None = None, commit: str = ""
) -> dict[str, Any]:
    overrides = default_overrides(section, name) if overrides is None else overrides
    outputs = run(section, name, overrides, model, images)
    return {
        "version": int(registry(section).get(name).version),
        "overrides": overrides,
        "config": config_of(section, name, overrides),
        "commit": commit,
        "outputs": {setting: fingerprint(out) for setting, out in outputs.items()},
    }


def compare_output(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """``None`` if ``current`` reproduces ``stored`` within tolerance, else what differs."""
    if list(stored["shape"]) != list(current["shape"]):
        return f"shape {tuple(current['shape'])} != stored {tuple(stored['shape'])}"
    old, new = stored["values"], current["values"]
    if len(old) != len(new):
        return f"{len(new)} slice values != stored {len(old)}"
    differences = [abs(a - b) for a, b in zip(old, new)]
    if not all(math.isfinite(v) for v in new):
        return f"non-finite values {new}"
    if stored["eight_bit"]:
        moved = [i for i, d in enumerate(differences) if d > LEVEL_ATOL]
        if len(moved) > 1 or any(differences[i] > LEVEL + LEVEL_ATOL for i in moved):
            return (
                f"8-bit slice differs in {len(moved)} values (allowed: one, by at most 1/255); stored {old}, now {new}"
            )
    elif max(differences, default=0.0) > FLOAT_ATOL:
        return f"slice differs by up to {max(differences):.3g} (> {FLOAT_ATOL:g}); stored {old}, now {new}"
    for stat in ("mean", "std"):
        if not abs(stored[stat] - current[stat]) <= STAT_ATOL:
            return f"{stat} of the first image {current[stat]!r} != stored {stored[stat]!r} (atol {STAT_ATOL:g})"
    return None


def compare_entry(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Every setting whose output no longer matches, as messages."""
    problems = []
    if set(stored["outputs"]) != set(current["outputs"]):
        problems.append(f"settings {sorted(current['outputs'])} != stored {sorted(stored['outputs'])}")
    for setting in stored["outputs"]:
        if setting in current["outputs"]:
            problem = compare_output(stored["outputs"][setting], current["outputs"][setting])
            if problem:
                problems.append(f"setting {setting!r}: {problem}" if setting else problem)
    return problems


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    old, new = stored.get("config", {}), current
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def check(section: str, name: str, golden: dict[str, Any], model, images: torch.Tensor) -> str | None:
    """``None`` if ``name`` matches its stored slice, else the failure message (what a test reports)."""
    kind = "protection" if section == "protections" else "mimicry"
    cls = registry(section).get(name)
    stored = golden.get(section, {}).get(name)
    if stored is None:
        if unavailable_here(section, name):
            return None  # refuses, as it must without its weights (WEIGHTS_ONLY)
        return f"{kind} {name!r} (version {cls.version}) has no stored golden slice: {REGENERATE}"
    if int(cls.version) != int(stored["version"]):
        return f"{kind} {name!r}: version bumped ({stored['version']} -> {cls.version}): {REGENERATE}"
    try:
        current = make_entry(section, name, model, images, overrides=stored["overrides"])
    except Exception as error:  # a renamed field, a component that no longer runs
        return (
            f"{kind} {name!r} (version {cls.version}) no longer runs with its stored golden overrides "
            f"{stored['overrides']}: {type(error).__name__}: {error}. If that is intended, bump its version "
            f"and {REGENERATE}"
        )
    problems = compare_entry(stored, current)
    if not problems:
        return None
    changed = config_changes(stored, current["config"])
    because = f" Its config changed: {'; '.join(changed)}." if changed else ""
    return (
        f"{kind} {name!r}: output changed but version is still {cls.version}: "
        + " | ".join(problems)
        + f".{because} A change of numbers needs a version bump (then {REGENERATE}); a refactor must "
        "reproduce the stored slice."
    )


def load(path: Path = GOLDEN_PATH) -> dict[str, Any]:
    if not path.exists():
        return {"meta": {}, **{section: {} for section in SECTIONS}}
    return json.loads(path.read_text())


def dump(golden: dict[str, Any], path: Path = GOLDEN_PATH) -> None:
    ordered = {"meta": golden.get("meta", {})}
    for section in SECTIONS:
        ordered[section] = dict(golden.get(section, {}))
    text = json.dumps(ordered, indent=1)
    # One line per list of numbers (a slice reads as a row, and diffs stay small).
    text = re.sub(r"\[\s*([-0-9.e+,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    path.write_text(text + "\n")
