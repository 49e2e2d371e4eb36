"""Batching does not change results: a batch of images (or of a picture's tiles) protected
together is byte-identical to each image protected alone with the same seed.

Why it can hold exactly: every image draws its randomness from its own generator
(protections/engine.py, ``image_generators``: the seed's one draw mixed with the image's
pixels), so only the kernels see the batch. On this CPU in float32 the batched kernels of
tiny-random give bit-identical outputs for every per-image protection but sds-z (measured
by this test, not assumed; see INEXACT) -- so batching is NOT identical by construction in
general; the tolerance in tests/test_protections.py (<= 0.1 % of values) is what holds.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cloakbench.bench.fullsize import protect_full_size
from cloakbench.core.images import quantize_8bit
from cloakbench.protections import PROTECTIONS

PER_IMAGE = [
    name
    for name in PROTECTIONS.names()
    # the registry's own flag: what bench compare --batch-size batches (external reads files)
    if PROTECTIONS.get(name).batches_across_cells() and name != "none"
]


def build(name: str):
    cls = PROTECTIONS.get(name)
    overrides = {"steps": "2"} if "steps" in {f.name for f in dataclasses.fields(cls.Config)} else {}
    return cls.from_overrides(overrides)


@pytest.fixture()
def four_images() -> torch.Tensor:
    coarse = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    return quantize_8bit(torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False))


#: Measured on this CPU (float32, one thread): batched kernels round differently from batch 1,
#: and PGD's sign() turns a last-bit difference into a one-level pixel step. sds-z: 0.0163 % of
#: values differ at batch 4 on tiny-random (toy sds-: 0.0041 %, at most 2/255). Strict: if it
#: becomes exact, the mark must go.
INEXACT = {"sds-z": "float32 batched matmul rounds differently from batch 1 on CPU (0.0163 % of values)"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=INEXACT[n])) if n in INEXACT else n
        for n in PER_IMAGE
    ],
)
def test_a_batch_of_four_is_byte_identical_to_four_single_runs(name, tiny_model, four_images):
    protection = build(name)
    batched = protection(four_images, tiny_model, generator=torch.Generator().manual_seed(0))
    singles = torch.cat(
        [protection(four_images[i : i + 1], tiny_model, generator=torch.Generator().manual_seed(0)) for i in range(4)]
    )
    differing = (batched != singles).float().mean().item()
    assert torch.equal(batched, singles), f"{name}: batch of 4 differs from single runs in {differing:.4%} of values"


def test_tiles_in_batches_of_five_match_tiles_one_at_a_time(tiny_model):
    coarse = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    picture = quantize_8bit(torch.nn.functional.interpolate(coarse, size=(150, 200), mode="bilinear"))[0]
    protection = PROTECTIONS.get("sds-").from_overrides({"steps": "2"})
    one = protect_full_size(protection, picture, tiny_model, seed=0, max_pixels=4096, tile_batch=1)
    five = protect_full_size(protection, picture, tiny_model, seed=0, max_pixels=4096, tile_batch=5)
    assert one.plan.mode == "tiles" and len(one.plan.origins) > 5
    assert torch.equal(one.protected, five.protected)
