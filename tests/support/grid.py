"""Test-only protections and a grid entry point that a subprocess can run (and a test can kill)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cloakbench.protections.base import PROTECTIONS, Protection


class SlowNoise(Protection):
    """Test-only: seeded ±2/255 noise after a pause, so a run can be killed mid-grid."""

    analysis_only = True  # keeps it out of `--methods all`
    pause_s = 0.6

    def __call__(self, images, model, *, generator):
        time.sleep(self.pause_s)
        noise = torch.randint(-2, 3, images.shape, generator=generator, device=images.device).to(images.dtype)
        return (images + noise / 255.0).clamp(0, 1)


class OutOfMemory(Protection):
    """Test-only: fails the way a GPU does when a cell does not fit."""

    analysis_only = True

    def __call__(self, images, model, *, generator):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class Hang(Protection):
    """Test-only: never finishes on its own."""

    analysis_only = True

    def __call__(self, images, model, *, generator):
        while True:
            time.sleep(0.05)


TEST_PROTECTIONS = {"test-slow": SlowNoise, "test-oom": OutOfMemory, "test-hang": Hang}


def register_test_protections(setitem=None) -> None:
    """Register the test-only entries (through ``monkeypatch.setitem`` when given, so they vanish after)."""
    for name, cls in TEST_PROTECTIONS.items():
        cls.registry_name = name
        if setitem is not None:
            setitem(PROTECTIONS._entries, name, cls)
        elif name not in PROTECTIONS:
            PROTECTIONS.register(name)(cls)


def write_images(folder: Path, count: int = 4, size: int = 72) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"img{index}.png")
    return folder


def main(images: str, out: str) -> None:
    from cloakbench.bench.compare import run_compare
    from cloakbench.bench.spec import CompareSpec

    register_test_protections()
    spec = CompareSpec(
        images=[images],
        methods="none,test-slow",
        attacks="identity",
        metrics="psnr,ssim,linf",
        model="tiny-random",
        out=Path(out),
        write_report=False,
    )
    run_compare(spec)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
