"""Batching does not change results: a batch of images protected together, one image per network
call (core/per_image.py, what ``bench compare --batch-size`` does), is byte-identical to each
image protected alone with the same seed.

Why it holds by construction: every image draws its randomness from its own generator
(protections/engine.py, ``image_generators``: the seed's one draw mixed with the image's
pixels), and inside ``one_image_per_call`` every network call is the call the image makes
alone; what stays batched is elementwise or a per-image reduction. The control is the same
batch with shared kernels (each network called once on the batch): on toy it differs, which
is why the construction is needed (docs/PERFORMANCE.md, "Batching").
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cloakbench.bench.fullsize import protect_full_size
from cloakbench.core.images import protection_batch, quantize_8bit
from cloakbench.core.per_image import one_image_per_call
from cloakbench.core.zoo import load_model
from cloakbench.protections import PROTECTIONS

PER_IMAGE = [
    name
    for name in PROTECTIONS.names()
    # the registry's own flag: what bench compare --batch-size batches (external reads files)
    if PROTECTIONS.get(name).batches_across_cells() and name != "none"
]


def build(name: str, steps: int = 2):
    cls = PROTECTIONS.get(name)
    overrides = {"steps": str(steps)} if "steps" in {f.name for f in dataclasses.fields(cls.Config)} else {}
    return cls.from_overrides(overrides)


@pytest.fixture()
def four_images() -> torch.Tensor:
    coarse = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    smooth = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    return protection_batch(list(quantize_8bit(smooth)))  # as compare hands them over


def one_at_a_time(protection, images: torch.Tensor, model) -> torch.Tensor:
    return torch.cat(
        [protection(images[i : i + 1], model, generator=torch.Generator().manual_seed(0)) for i in range(len(images))]
    )


def batched_one_image_per_call(protection, images: torch.Tensor, model) -> torch.Tensor:
    with one_image_per_call():
        return protection(images, model, generator=torch.Generator().manual_seed(0))


def assert_identical(batched: torch.Tensor, singles: torch.Tensor, name: str) -> None:
    differing = (batched != singles).float().mean().item()
    assert torch.equal(batched, singles), f"{name}: batch of 4 differs from single runs in {differing:.4%} of values"


@pytest.mark.parametrize("name", PER_IMAGE)
def test_a_batch_of_four_is_byte_identical_to_four_single_runs(name, tiny_model, four_images):
    protection = build(name)
    assert_identical(
        batched_one_image_per_call(protection, four_images, tiny_model),
        one_at_a_time(protection, four_images, tiny_model),
        name,
    )


@pytest.fixture(scope="module")
def toy_model():
    return load_model("toy", device="cpu", dtype="float32", seed=0)


def test_on_toy_the_networks_round_a_batch_unlike_one_image_except_one_image_per_call(toy_model):
    """The control behind the construction: toy's encoder, denoiser and decoder round a batch of
    four unlike four batches of one (tiny-random's happen not to); inside one_image_per_call they
    give the single images' bytes."""
    images = protection_batch(
        list(quantize_8bit(torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))))
    )
    prompt = toy_model.encode_prompt("a photo", 4)
    steps = torch.tensor([100, 300, 500, 700])

    def networks(batch: torch.Tensor, rows: slice = slice(None)) -> list[torch.Tensor]:
        latents = toy_model.posterior(batch).mean * toy_model.scaling_factor
        return [latents, toy_model.predict(latents, steps[rows], prompt[rows]), toy_model.decode(latents)]

    with torch.no_grad():
        singles = [torch.cat(parts) for parts in zip(*(networks(images[i : i + 1], slice(i, i + 1)) for i in range(4)))]
        shared = networks(images)
        with one_image_per_call():
            per_call = networks(images)
    for name, a, b, c in zip(["encoder", "denoiser", "decoder"], shared, per_call, singles):
        assert not torch.equal(a, c), f"control: toy's batched {name} now rounds as batch 1; pick another control"
        assert torch.equal(b, c), f"{name}: one image per call differs from single images"


@pytest.mark.parametrize("name", ["sds-", "advdm"])
def test_on_toy_a_batch_of_four_is_byte_identical_to_four_single_runs(name, toy_model):
    """SDS(-) runs the encoder's backward, AdvDM the UNet's too; 8 steps on noise images is where
    toy's shared kernels already move pixels (measured: 0.014 % and 0.0005 % of values)."""
    images = protection_batch(
        list(quantize_8bit(torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))))
    )
    protection = build(name, steps=8)
    singles = one_at_a_time(protection, images, toy_model)
    assert_identical(batched_one_image_per_call(protection, images, toy_model), singles, name)


def test_tiles_in_batches_of_five_match_tiles_one_at_a_time(tiny_model):
    coarse = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    picture = quantize_8bit(torch.nn.functional.interpolate(coarse, size=(150, 200), mode="bilinear"))[0]
    protection = PROTECTIONS.get("sds-").from_overrides({"steps": "2"})
    one = protect_full_size(protection, picture, tiny_model, seed=0, max_pixels=4096, tile_batch=1)
    five = protect_full_size(protection, picture, tiny_model, seed=0, max_pixels=4096, tile_batch=5)
    assert one.plan.mode == "tiles" and len(one.plan.origins) > 5
    assert torch.equal(one.protected, five.protected)


def test_on_toy_tiles_in_batches_of_three_match_tiles_one_at_a_time(toy_model):
    """bench protect's tiles: one tile per network call, so --batch-size does not change the picture
    (with shared kernels 0.0034 % of this picture's values differ: measured when this was built)."""
    coarse = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    picture = quantize_8bit(torch.nn.functional.interpolate(coarse, size=(192, 256), mode="bilinear"))[0]
    protection = build("sds-", steps=8)
    one = protect_full_size(protection, picture, toy_model, seed=0, max_pixels=128 * 128, tile_batch=1)
    three = protect_full_size(protection, picture, toy_model, seed=0, max_pixels=128 * 128, tile_batch=3)
    assert one.plan.mode == "tiles" and len(one.plan.origins) > 3
    assert torch.equal(one.protected, three.protected)
