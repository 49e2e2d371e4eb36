"""Batched vs one-at-a-time protection: byte equality and images/second, measured in one run.

usage: python scripts/batch_equality.py MODEL SIZE STEPS METHOD... (4 images, seed 0, one thread;
STEPS ``default``: each method's own step count)

For each method, the same four images protected three ways, back to back:
- one at a time: four calls of one image (what ``bench compare`` does at ``--batch-size 1``);
- batched, one image per network call: one call of four inside ``core.per_image.one_image_per_call``
  (what ``bench compare --batch-size 4`` does);
- batched, shared kernels: one call of four, each network called once on the batch (what
  ``bench perf --batch`` measures and ``bench protect`` does with a picture's tiles).
Each image gets the generator it gets alone (protections/engine.py, image_generators), so any
difference from one at a time is kernel rounding.
"""

import dataclasses
import sys
import time

import torch

from cloakbench.core.images import protection_batch, quantize_8bit
from cloakbench.core.per_image import one_image_per_call
from cloakbench.core.zoo import load_model
from cloakbench.protections import PROTECTIONS

torch.set_num_threads(1)
m = load_model(sys.argv[1], device="cpu", dtype="float32", seed=0)
size = int(sys.argv[2])
steps = sys.argv[3]
g = torch.Generator().manual_seed(1)
# In the layout every image enters a protection (core.images.protection_batch); a row of it is one image alone.
imgs = protection_batch(list(quantize_8bit(torch.rand(4, 3, size, size, generator=g))))


def timed(call, protection):
    start = time.perf_counter()
    out = call(protection)
    return out, time.perf_counter() - start


def one_at_a_time(protection):
    return torch.cat([protection(imgs[i : i + 1], m, generator=torch.Generator().manual_seed(0)) for i in range(4)])


def shared_kernels(protection):
    return protection(imgs, m, generator=torch.Generator().manual_seed(0))


def verdict(batched: torch.Tensor, singles: torch.Tensor) -> str:
    if torch.equal(batched, singles):
        return "BYTE-IDENTICAL"
    share = (batched != singles).float().mean().item()
    return f"differs in {share:.4%} of values, max {(batched - singles).abs().max().item() * 255:.0f}/255"


def per_image_batch(protection):
    with one_image_per_call():
        return protection(imgs, m, generator=torch.Generator().manual_seed(0))


print(f"model {sys.argv[1]}, {size}², steps {steps}, 4 images, one thread, float32")
for n in sys.argv[4:]:
    cls = PROTECTIONS.get(n)
    has_steps = "steps" in {f.name for f in dataclasses.fields(cls.Config)}
    p = cls.from_overrides({"steps": steps} if steps != "default" and has_steps else {})
    singles, t1 = timed(one_at_a_time, p)
    exact, te = timed(per_image_batch, p)
    shared, ts = timed(shared_kernels, p)
    print(
        f"{n}: img/s one at a time {4 / t1:.3f}; batched one image per call {4 / te:.3f} ({t1 / te:.2f}x), "
        f"{verdict(exact, singles)}; batched shared kernels {4 / ts:.3f} ({t1 / ts:.2f}x), {verdict(shared, singles)}",
        flush=True,
    )
