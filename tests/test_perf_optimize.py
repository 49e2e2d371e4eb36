"""Optimisation flags: parsing, what each does to the model, and that exact ones keep the maths."""

from __future__ import annotations

import copy

import pytest
import torch

from cloakbench.bench.perf.optimisations import (
    DEFAULT_SIGN_AGREEMENT,
    DEVICE_DEFAULTS,
    OptimisationError,
    apply_optimisations,
    device_default,
    parse_optimisations,
    parse_variants,
)
from cloakbench.bench.perf.strength import EXACT_SIGN_AGREEMENT, direction_agreement, first_step_direction
from cloakbench.core.zoo import load_model


def test_parse_and_label_round_trip():
    options = parse_optimisations("bf16+channels-last")
    assert options.channels_last and options.autocast == "bf16"
    assert parse_optimisations(options.label) == options
    assert parse_optimisations("none").label == "none"
    assert [v.label for v in parse_variants("none,sdpa,channels-last+vae-ckpt,none")] == [
        "none",
        "sdpa",
        "channels-last+vae-ckpt",
    ]


def test_unknown_and_contradictory_flags_are_refused():
    with pytest.raises(OptimisationError, match="did you mean 'channels-last'"):
        parse_optimisations("channel-last")
    with pytest.raises(OptimisationError, match="both sdpa and classic"):
        parse_optimisations("sdpa+classic-attn")
    with pytest.raises(OptimisationError, match="both bf16 and fp16"):
        parse_optimisations("bf16+fp16")


@pytest.fixture(scope="module")
def plain():
    return load_model("tiny-random", seed=0)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(7)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def plain_directions(plain, images):
    return {method: first_step_direction(method, plain, images, seed=3)[0] for method in ("advdm", "sds-")}


def fresh(plain):
    """An independent copy of the plain model (options change a model in place)."""
    return copy.deepcopy(plain)


def test_flags_change_the_model_as_named(plain):
    from diffusers.models.attention_processor import AttnProcessor

    model = fresh(plain)
    applied = apply_optimisations(model, "channels-last+classic-attn+vae-ckpt")
    assert applied["attention"] == "AttnProcessor"
    assert all(isinstance(p, AttnProcessor) for p in model.unet.attn_processors.values())
    conv = model.vae.encoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model.vae.is_gradient_checkpointing and not model.unet.is_gradient_checkpointing
    with pytest.raises(OptimisationError, match="already has"):
        apply_optimisations(model, "sdpa")


@pytest.mark.parametrize("flags", ["channels-last", "classic-attn", "vae-ckpt", "unet-ckpt"])
def test_exact_options_keep_the_first_step(flags, plain, images, plain_directions):
    """Same maths, other kernels: the PGD direction agrees to floating-point error."""
    model = fresh(plain)
    apply_optimisations(model, flags)
    for method, reference in plain_directions.items():
        agreement = direction_agreement(reference, first_step_direction(method, model, images, seed=3)[0])
        assert agreement["cosine"] > 0.99999, (flags, method, agreement)
        assert agreement["sign_agreement"] >= EXACT_SIGN_AGREEMENT, (flags, method, agreement)


def test_bf16_autocast_is_close_but_not_exact(plain, images, plain_directions):
    model = fresh(plain)
    apply_optimisations(model, "bf16")
    direction, loss = first_step_direction("advdm", model, images, seed=3)
    assert direction.dtype == torch.float32 and loss.dtype == torch.float32
    agreement = direction_agreement(plain_directions["advdm"], direction)
    assert 0.9 < agreement["cosine"] < 0.999999  # bf16 has 8 mantissa bits: visibly different, same direction
    # the UNet really ran in bf16 inside the wrapper, and handed back fp32
    latents = torch.zeros(1, 4, 8, 8)
    out = model.unet(latents, torch.tensor([10]), encoder_hidden_states=model.encode_prompt("a photo", 1)).sample
    assert out.dtype == torch.float32


def test_device_defaults_resolve_and_are_refused_for_an_unknown_device():
    assert device_default("cpu").label == "channels-last"
    assert device_default("cuda:1").label == "channels-last+bf16"
    assert [v.label for v in parse_variants("none,default", "cuda")] == ["none", "channels-last+bf16"]
    with pytest.raises(OptimisationError, match="no default optimisations for device 'mps'"):
        parse_variants("default", "mps")


@pytest.mark.parametrize("device", sorted(DEVICE_DEFAULTS))
def test_device_defaults_keep_the_first_step_direction_of_sds_minus(device, plain, images, plain_directions):
    """Each device's default set, applied here on the CPU (bf16 autocast runs on CPU too), keeps SDS(−)'s
    first-step direction (cloakbench.bench.perf.strength)."""
    model = fresh(plain)
    apply_optimisations(model, device_default(device))
    agreement = direction_agreement(plain_directions["sds-"], first_step_direction("sds-", model, images, seed=3)[0])
    assert agreement["sign_agreement"] >= DEFAULT_SIGN_AGREEMENT, (device, agreement)
    assert agreement["cosine"] > 0.99, (device, agreement)
