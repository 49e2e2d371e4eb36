"""Per-step cost of each protection on tiny-random (pytest-benchmark; out of the default run).

Run: ``.venv/bin/pytest tests/benchmarks -m benchmark --benchmark-enable``
(add ``--benchmark-autosave`` / ``--benchmark-compare`` to keep and compare runs, and
``--benchmark-compare-fail=min:25%`` to fail on a slowdown, as pytest-benchmark documents).

One PGD step through the engine's step API (``protection.step(state)``), timed by
pytest-benchmark in this process; ``bench perf`` is the tool for memory, fresh
processes and ratios. Each benchmark carries the bytes saved for backward by one step
in ``extra_info`` (parameters excluded), which does not depend on the machine.
"""

from __future__ import annotations

import pytest
import torch

from cloakbench.bench.profiling import count_saved_bytes, parameter_storages

pytestmark = pytest.mark.benchmark

METHODS = ("advdm", "advdm-", "mist", "photoguard", "texture", "encoder", "sds+", "sds-", "sdst-")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core CPU two threads made steps up to 40x slower and erratic."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model():
    from cloakbench.core.zoo import load_model

    return load_model("tiny-random", device="cpu", dtype="float32", seed=0)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("reference_mode", [False, True], ids=["fair", "reference"])
@pytest.mark.parametrize("method", METHODS)
def test_step_cost(benchmark, method, reference_mode, model, images):
    from cloakbench.protections import PROTECTIONS

    cls = PROTECTIONS.get(method)
    protection = cls.from_overrides({"reference_mode": reference_mode})
    state = protection.prepare(images, model, generator=torch.Generator().manual_seed(0))
    protection.step(state)  # warm-up: allocator and kernel caches
    with count_saved_bytes(exclude=parameter_storages(*model.modules().values())) as saved:
        protection.step(state)
    benchmark.extra_info.update(
        method=method,
        reference_mode=reference_mode,
        saved_bytes=saved.bytes,
        arch=model.name,
        resolution=int(images.shape[-1]),
    )
    losses = benchmark.pedantic(protection.step, args=(state,), rounds=5, iterations=1, warmup_rounds=1)
    assert losses.shape == (images.shape[0],) and torch.isfinite(losses).all()
