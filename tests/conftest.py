"""Shared fixtures: a seeded tiny model and small image batches (CPU, fast)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Offline by construction: no test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# bench protect remembers this machine's rates for its first ETA (bench/protect_rates.py): tests
# write them to a folder of their own, never the user's cache.
os.environ["CLOAKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="cloakbench-test-cache-")
# Tiny models gain nothing from threads, and CI shares two cores: one thread keeps tests fast.
torch.set_num_threads(1)


def pytest_sessionstart(session):
    """The editable install is a link tree (``editable_mode=strict``, so mypy and import-linter see the
    package): a module file added since the last install is not importable until it is rebuilt. Say so
    once, up front, instead of letting tests fail on an ImportError."""
    import importlib.util

    from tests.support.package import ROOT, package_modules

    missing = [
        str(source.relative_to(ROOT)) for name, source in package_modules() if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.exit(
            f"{', '.join(missing)} not in the editable install: run `make env` (it rebuilds the install's "
            "link tree) and test again",
            returncode=4,
        )


@pytest.fixture(scope="session")
def tiny_model():
    from cloakbench.core.zoo import load_model

    return load_model("tiny-random", device="cpu", dtype="float32", seed=0)


@pytest.fixture()
def images():
    """Two seeded smooth-ish images, 64x64, in [0, 1]."""
    generator = torch.Generator().manual_seed(1234)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def clean8() -> torch.Tensor:
    """Two smooth seeded 64² images on the 8-bit grid (what the intake hands over)."""
    from cloakbench.core.images import quantize_8bit

    coarse = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1234))
    smooth = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    return quantize_8bit(smooth)
