"""Batched vs one-at-a-time PGD: byte equality and images/second, measured in one run.

usage: python scripts/batch_equality.py MODEL SIZE STEPS METHOD... (4 images, seed 0, one thread;
STEPS ``default``: each method's own step count)
Each image protected alone with the same seed gets the same per-image generator as in the
batch (protections/engine.py, image_generators), so any difference is kernel rounding.
"""

import dataclasses
import sys
import time

import torch

from cloakbench.core.images import quantize_8bit
from cloakbench.core.zoo import load_model
from cloakbench.protections import PROTECTIONS

torch.set_num_threads(1)
m = load_model(sys.argv[1], device="cpu", dtype="float32", seed=0)
size = int(sys.argv[2])
steps = sys.argv[3]
g = torch.Generator().manual_seed(1)
imgs = quantize_8bit(torch.rand(4, 3, size, size, generator=g))
for n in sys.argv[4:]:
    cls = PROTECTIONS.get(n)
    has_steps = "steps" in {f.name for f in dataclasses.fields(cls.Config)}
    p = cls.from_overrides({"steps": steps} if steps != "default" and has_steps else {})
    t = time.perf_counter()
    b = p(imgs, m, generator=torch.Generator().manual_seed(0))
    tb = time.perf_counter() - t
    t = time.perf_counter()
    s = torch.cat([p(imgs[i : i + 1], m, generator=torch.Generator().manual_seed(0)) for i in range(4)])
    ts = time.perf_counter() - t
    d = (b != s).float().mean().item()
    print(
        f"{n}: {'BYTE-IDENTICAL' if torch.equal(b, s) else f'differs in {d:.4%} of values, max {(b - s).abs().max().item() * 255:.0f}/255'}; img/s batched {4 / tb:.2f} single {4 / ts:.2f} ratio {ts / tb:.2f}",
        flush=True,
    )
