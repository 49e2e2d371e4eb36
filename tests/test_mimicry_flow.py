"""Attacks on the flow-matching family (tiny-random-flow, SD 3-shaped), each checked against what it claims."""

from __future__ import annotations

import pytest
import torch

from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable


@pytest.fixture(scope="module")
def flow_model():
    from cloakbench.core.zoo import load_model

    return load_model("tiny-random-flow", device="cpu", dtype="float32", seed=0)


def attack(name, **overrides):
    return MIMICRY.get(name).from_overrides({k: str(v) for k, v in overrides.items()})


def conditioning(model, prompt, batch):
    ids = model.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    out = model.text_encoder(ids, output_hidden_states=True)
    return out.hidden_states[-2].expand(batch, -1, -1), out.text_embeds.expand(batch, -1)


def velocity(model, z, timestep, prompt="a photo"):
    hidden, pooled = conditioning(model, prompt, z.shape[0])
    t = torch.full((z.shape[0],), float(timestep))
    return model.unet(z, encoder_hidden_states=hidden, pooled_projections=pooled, timestep=t).sample


def decode(model, z):
    config = model.vae.config
    return ((model.vae.decode(z / config.scaling_factor + config.shift_factor).sample + 1) / 2).clamp(0, 1)


@torch.no_grad()
def test_sdedit_is_euler_on_the_flow_from_the_kept_sigma(flow_model, clean8):
    steps, strength = 10, 0.3
    got = attack("sdedit", steps=steps, latent="mean")(
        clean8, flow_model, generator=torch.Generator().manual_seed(3), context=AttackContext(setting="0.3")
    )
    # From scratch: SD 3's scheduler grid, noised straight to the first kept σ, Euler to σ = 0.
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(flow_model.scheduler.config)
    scheduler.set_timesteps(steps)
    start = int(steps - steps * strength)
    z0 = (flow_model.vae.encode(clean8 * 2 - 1).latent_dist.mean - 0.0609) * 1.5305
    noise = randn_tensor(z0.shape, generator=torch.Generator().manual_seed(3))
    sigmas, timesteps = scheduler.sigmas[start:], scheduler.timesteps[start:]
    z = (1 - sigmas[0]) * z0 + sigmas[0] * noise
    for i, t in enumerate(timesteps):
        z = z + (sigmas[i + 1] - sigmas[i]) * velocity(flow_model, z, t)
    torch.testing.assert_close(got, decode(flow_model, z), atol=2e-4, rtol=0)
    # ... and the check can fail: one Euler step fewer is a different edit.
    z_short = (1 - sigmas[1]) * z0 + sigmas[1] * noise
    for i, t in enumerate(timesteps[1:], start=1):
        z_short = z_short + (sigmas[i + 1] - sigmas[i]) * velocity(flow_model, z_short, t)
    assert (got - decode(flow_model, z_short)).abs().max() > 1e-3


@torch.no_grad()
def test_one_step_sdedit_decodes_the_straight_path_end(flow_model, clean8):
    got = attack("sdedit-1step", latent="mean")(
        clean8, flow_model, generator=torch.Generator().manual_seed(5), context=AttackContext(setting="0.3")
    )
    index = 300
    sigma = float(flow_model.scheduler.sigmas.flip(0)[index])
    z0 = (flow_model.vae.encode(clean8 * 2 - 1).latent_dist.mean - 0.0609) * 1.5305
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
    z = (1 - sigma) * z0 + sigma * noise
    clean = z - sigma * velocity(flow_model, z, flow_model.scheduler.timesteps.flip(0)[index])
    torch.testing.assert_close(got, decode(flow_model, clean), atol=2e-4, rtol=0)


@torch.no_grad()
def test_inpaint_runs_sd3s_pipeline_and_keeps_the_unmasked_pixels(flow_model, clean8):
    context = AttackContext(prompt="a photo")
    out = attack("inpaint", steps=4)(clean8, flow_model, generator=torch.Generator().manual_seed(0), context=context)
    assert context.notes["inpaint"]["loop"].startswith("diffusers StableDiffusion3InpaintPipeline")
    keep = torch.ones_like(clean8, dtype=torch.bool)
    keep[..., 16:48, 16:48] = False  # the centre box (0.5 of each side) is repainted
    assert torch.equal(out[keep], clean8[keep])
    assert (out[~keep] - clean8[~keep]).abs().max() > 0


def test_lora_trains_the_transformers_attention_and_saves_an_sd3_adapter(flow_model, clean8, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    context = AttackContext(prompt="a photo", work_dir=str(tmp_path))
    lora = attack("lora", **MIMICRY.get("lora").QUICK)
    out = lora(clean8, flow_model, generator=torch.Generator().manual_seed(0), context=context)
    assert out.shape == (2, 3, 64, 64)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "pytorch_lora_weights.safetensors"))
    projections = {key.split(".attn.")[1].rsplit(".lora", 1)[0] for key in saved}
    assert projections == {"to_q", "to_k", "to_v", "to_out.0"}  # train_dreambooth_lora_sd3.py's targets
    assert all(key.startswith("transformer.") for key in saved)
    pipe = StableDiffusion3Pipeline(**flow_model.flow_pipeline_components(transformer=_copy(flow_model.unet)))
    pipe.load_lora_weights(str(tmp_path))  # diffusers reads it back


def _copy(module):
    import copy

    return copy.deepcopy(module)


def test_textual_inversion_learns_one_row_on_the_flow_model(flow_model, clean8, tmp_path):
    context = AttackContext(prompt="a photo", work_dir=str(tmp_path))
    ti = attack("textual-inversion", **MIMICRY.get("textual-inversion").QUICK)
    out = ti(clean8, flow_model, generator=torch.Generator().manual_seed(0), context=context)
    assert out.shape == (2, 3, 64, 64)
    trace = context.notes["loss_trace"]
    assert len(trace) == 10 and all(value > 0 for value in trace)


def test_ddim_only_purification_is_unavailable_with_the_reason(flow_model, clean8):
    with pytest.raises(AttackUnavailable, match="flow transformer"):
        attack("diffpure-latent")(clean8, flow_model, generator=torch.Generator().manual_seed(0), context=None)
