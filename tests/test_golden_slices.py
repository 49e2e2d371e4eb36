"""Golden slices: each protection and attack reproduces its checked-in numbers, or bumps its version.

The slices (``tests/golden/slices.json``) and how they are compared: ``tests/golden/harness.py``.
Regenerate with ``scripts/update_golden.py`` after a deliberate change (and a version bump).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.golden import harness

ENTRIES = harness.all_entries()


@pytest.fixture(scope="module")
def golden():
    return harness.load()


@pytest.fixture(scope="module")
def golden_images():
    return harness.golden_images()


@pytest.mark.parametrize("section,name", ENTRIES, ids=[f"{s}:{n}" for s, n in ENTRIES])
def test_output_matches_its_golden_slice(section, name, golden, tiny_model, golden_images):
    message = harness.check(section, name, golden, tiny_model, golden_images)
    assert message is None, message


def test_every_stored_slice_belongs_to_a_registered_component(golden):
    stale = [
        (section, name)
        for section in harness.SECTIONS
        for name in golden.get(section, {})
        if (section, name) not in ENTRIES
    ]
    assert not stale, f"golden slices of components no longer registered: {stale}; {harness.REGENERATE}"


def test_golden_model_is_the_shared_test_model(tiny_model):
    """The slices are made with harness.golden_model(); the tests reuse conftest's tiny_model."""
    fresh = harness.golden_model()
    for (key, a), (_, b) in zip(sorted(tiny_model.unet.state_dict().items()), sorted(fresh.unet.state_dict().items())):
        assert torch.equal(a, b), key
    assert torch.equal(harness.golden_images(), harness.golden_images())


# -- the mechanism fails when it should ----------------------------------------------------


@pytest.fixture()
def noise_entry(golden):
    """A deep copy of the golden file, and the cheap entry used to prove the mechanism: protection ``noise``."""
    assert "noise" in golden["protections"], "the mechanism tests use protection 'noise'"
    return copy.deepcopy(golden)


def test_a_changed_output_with_the_same_version_is_reported(noise_entry, tiny_model, golden_images, monkeypatch):
    from cloakbench.core.images import quantize_8bit
    from cloakbench.protections import PROTECTIONS

    cls = PROTECTIONS.get("noise")
    assert harness.check("protections", "noise", noise_entry, tiny_model, golden_images) is None
    original = cls.__call__

    def shifted(self, images, model, *, generator):
        return quantize_8bit(original(self, images, model, generator=generator) + 2 / 255)

    monkeypatch.setattr(cls, "__call__", shifted)
    message = harness.check("protections", "noise", noise_entry, tiny_model, golden_images)
    assert message is not None and "output changed but version is still" in message
    assert "version bump" in message and harness.REGENERATE in message


def test_a_bumped_version_asks_for_regeneration(noise_entry, tiny_model, golden_images, monkeypatch):
    from cloakbench.protections import PROTECTIONS

    cls = PROTECTIONS.get("noise")
    monkeypatch.setattr(cls, "version", cls.version + 1)
    message = harness.check("protections", "noise", noise_entry, tiny_model, golden_images)
    assert message is not None and "version bumped" in message and harness.REGENERATE in message


def test_a_component_without_a_slice_asks_for_regeneration(noise_entry, tiny_model, golden_images):
    del noise_entry["protections"]["noise"]
    message = harness.check("protections", "noise", noise_entry, tiny_model, golden_images)
    assert message is not None and "no stored golden slice" in message and harness.REGENERATE in message


def test_a_changed_default_is_named_in_the_failure(noise_entry, tiny_model, golden_images):
    entry = noise_entry["protections"]["noise"]
    entry["overrides"] = {"eps": 8.0}  # as if the default budget had changed without a version bump
    message = harness.check("protections", "noise", noise_entry, tiny_model, golden_images)
    assert message is not None and "eps: 16.0 -> 8.0" in message


def _slice(values, eight_bit, mean=0.5, std=0.2):
    return {"shape": [2, 3, 64, 64], "eight_bit": eight_bit, "values": list(values), "mean": mean, "std": std}


def test_tolerances():
    levels = [round(k / 255, 6) for k in (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120)]
    stored = _slice(levels, eight_bit=True)
    assert harness.compare_output(stored, _slice(levels, True)) is None
    one = levels.copy()
    one[3] = round(41 / 255, 6)
    assert harness.compare_output(stored, _slice(one, True)) is None  # a .5 rounding: allowed once
    two = one.copy()
    two[7] = round(79 / 255, 6)
    assert "differs in 2 values" in harness.compare_output(stored, _slice(two, True))
    far = levels.copy()
    far[0] = round(12 / 255, 6)
    assert harness.compare_output(stored, _slice(far, True)) is not None  # 2/255 is a change
    assert harness.compare_output(stored, _slice(levels, True, mean=0.5 + 2e-5)) is not None
    assert harness.compare_output(stored, {**_slice(levels, True), "shape": [1, 3, 64, 64]}) is not None

    floats = [0.1 * i + 0.012345 for i in range(12)]
    stored = _slice(floats, eight_bit=False)
    assert harness.compare_output(stored, _slice([v + 5e-5 for v in floats], False)) is None
    moved = floats.copy()
    moved[5] += 2e-4
    assert "differs by up to" in harness.compare_output(stored, _slice(moved, False))
    assert "non-finite" in harness.compare_output(stored, _slice(floats[:-1] + [float("nan")], False))
