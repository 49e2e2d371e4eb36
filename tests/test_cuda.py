"""GPU checks (marker ``cuda``; run by scripts/gpu_check.sh, skipped where no GPU exists).

In diffusers' style, slow GPU tests assert peak memory: SDS must keep less alive than
AdvDM, because it never backpropagates through the UNet (Xue et al., arXiv:2311.12832).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _peak_step_bytes(method: str, model, images) -> int:
    from cloakbench.protections import PROTECTIONS

    protection = PROTECTIONS.get(method).from_overrides({"steps": "2"})
    state = protection.prepare(images, model, generator=torch.Generator().manual_seed(0))
    protection.step(state)  # warm-up: kernels and allocator caches
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    protection.step(state)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@pytest.fixture(scope="module")
def cuda_model():
    from cloakbench.core.zoo import load_model

    return load_model("tiny-random", device="cuda")


def test_protections_run_on_cuda_within_budget(cuda_model):
    from cloakbench.protections import PROTECTIONS, publishable_protections

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    for name in publishable_protections():
        protected = PROTECTIONS.get(name).from_overrides({} if name in ("none", "noise") else {"steps": "2"})(
            images, cuda_model, generator=torch.Generator().manual_seed(0)
        )
        assert protected.device.type == "cuda"
        assert (protected - images).abs().max().item() <= 16 / 255 + 1e-6, name


def test_sds_step_needs_less_gpu_memory_than_advdm(cuda_model):
    images = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(0)).cuda()
    assert _peak_step_bytes("sds-", cuda_model, images) < _peak_step_bytes("advdm", cuda_model, images)


def test_runner_records_cuda_peaks(tmp_path):
    import csv

    from cloakbench.bench.compare import run_compare
    from cloakbench.bench.spec import CompareSpec

    run_compare(
        CompareSpec(
            images=["samples"],
            methods="sds-",
            attacks="sdedit",
            model="tiny-random",
            device="cuda",
            quick=True,
            out=tmp_path / "run",
            write_report=False,
        )
    )
    with open(tmp_path / "run" / "rows.csv") as handle:
        peaks = [float(r["value"]) for r in csv.DictReader(handle) if r["metric"] == "peak_cuda_allocated_bytes"]
    assert peaks and all(p > 0 for p in peaks)
