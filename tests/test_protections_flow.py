"""The flow forms of the PGD protections match an independent implementation on the model's own modules.

On ``tiny-random-flow`` (SD 3-shaped: 16-channel VAE with shift and scaling factors, an
``SD3Transformer2DModel``, ``FlowMatchEulerDiscreteScheduler`` with shift 3) each method's step
direction is recomputed from scratch — the VAE, the text encoder and the transformer called
directly, σ and the transformer's timestep read off the diffusers scheduler's own tables — and
must agree in direction (cosine ≥ 0.999). The check itself must be able to fail: a wrong sign,
a kept transformer Jacobian (for SDS) and the ε-family's target (for AdvDM) are each shown to
miss it.
"""

from __future__ import annotations

import pytest
import torch

from cloakbench.protections import PROTECTIONS
from cloakbench.protections.engine import StepDraws
from cloakbench.protections.targets import text_image

AGREEMENT = 0.999


@pytest.fixture(scope="module")
def flow_model():
    from cloakbench.core.zoo import load_model

    return load_model("tiny-random-flow", device="cpu", dtype="float32", seed=0)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the independent implementation (diffusers' modules and tables, not cloakbench's bundle maths) --
def encode(model, images, latent_noise=None):
    """``(E(x) − shift)·scale`` with the factors from the VAE's config (SD 3's pipeline reads them there)."""
    dist = model.vae.encode(images * 2 - 1).latent_dist
    unscaled = dist.mean if latent_noise is None else dist.mean + dist.std * latent_noise
    return (unscaled - model.vae.config.shift_factor) * model.vae.config.scaling_factor


def sigma_and_timestep(model, indices):
    """σ and the transformer's timestep from the scheduler's tables, which run from t = T down to 1."""
    sigmas = model.scheduler.sigmas.flip(0)
    timesteps = model.scheduler.timesteps.flip(0)
    return sigmas[indices].float().view(-1, 1, 1, 1), timesteps[indices].float()


def conditioning(model, prompt, batch):
    ids = model.tokenizer(
        [prompt], padding="max_length", max_length=model.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    out = model.text_encoder(ids, output_hidden_states=True)
    return out.hidden_states[-2].expand(batch, -1, -1), out.text_embeds.expand(batch, -1)


def velocity(model, latents, indices, noise, prompt="a photo"):
    sigma, timestep = sigma_and_timestep(model, indices)
    noisy = (1 - sigma) * latents + sigma * noise
    hidden, pooled = conditioning(model, prompt, latents.shape[0])
    return model.unet(noisy, encoder_hidden_states=hidden, pooled_projections=pooled, timestep=timestep).sample


def flow_loss(model, latents, indices, noise, target=None):
    """``mean ‖v_θ(z_t, t, c) − (ε − z)‖²`` per image (``target`` replaces ``ε − z``)."""
    target = noise - latents if target is None else target
    return ((velocity(model, latents, indices, noise) - target) ** 2).flatten(1).mean(1)


def draws_for(count, *, seed=11, sample=True):
    g = generator(seed)
    shape = (count, 16, 8, 8)
    return StepDraws(
        timesteps=torch.randint(0, 1000, (count,), generator=g),
        noise=torch.randn(shape, generator=g),
        latent_noise=torch.randn(shape, generator=g) if sample else None,
        target_noise=torch.randn(shape, generator=g) if sample else None,
    )


def direction_of(name, model, images, draws, **overrides):
    protection = PROTECTIONS.get(name).from_overrides({"random_start": "false", **overrides})
    state = protection.prepare(images, model, generator=generator(0))
    adversarial = state.adversarial.detach().requires_grad_(True)
    direction, _ = protection.direction(state, adversarial, draws)
    return direction


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def advdm_gradient(model, images, draws, target_of=None):
    x = images.clone().requires_grad_(True)
    latents = encode(model, x, draws.latent_noise)
    target = None if target_of is None else target_of(latents, draws.noise)
    (gradient,) = torch.autograd.grad(flow_loss(model, latents, draws.timesteps, draws.noise, target).sum(), x)
    return gradient


def sds_gradient(model, images, draws):
    """``J_Eᵀ (v̂ − (ε − z))`` with ``v̂`` a constant: the transformer's Jacobian dropped."""
    with torch.no_grad():
        latents = encode(model, images, draws.latent_noise)
        residual = velocity(model, latents, draws.timesteps, draws.noise) - (draws.noise - latents)
    _, vjp = torch.autograd.functional.vjp(lambda x: encode(model, x, draws.latent_noise), images, residual)
    return vjp


# -- the flow forms agree with it ---------------------------------------------------------
def test_the_flow_bundle_uses_the_scheduler_tables(flow_model):
    indices = torch.tensor([0, 1, 500, 999])
    sigma, timestep = sigma_and_timestep(flow_model, indices)
    z, eps = torch.ones(4, 16, 2, 2), torch.zeros(4, 16, 2, 2)
    torch.testing.assert_close(flow_model.add_noise(z, indices, eps), (1 - sigma).expand_as(z))
    torch.testing.assert_close(flow_model.noise_path.model_timesteps(indices), timestep)
    assert float(sigma[-1]) == pytest.approx(1.0) and float(sigma[0]) < 0.01  # the whole grid, t=0 nearly clean
    torch.testing.assert_close(flow_model.prediction_target(z, eps), eps - z)


@pytest.mark.parametrize("name,sign", [("advdm", 1.0), ("advdm-", -1.0)])
def test_advdm_flow_direction_is_the_gradient_of_the_flow_matching_loss(name, sign, flow_model, clean8):
    draws = draws_for(2)
    got = direction_of(name, flow_model, clean8, draws)
    expected = advdm_gradient(flow_model, clean8, draws)
    assert expected.abs().max() > 0
    assert cosine(got, sign * expected) >= AGREEMENT


@pytest.mark.parametrize("name,sign", [("sds+", 1.0), ("sds-", -1.0)])
def test_sds_flow_direction_is_the_encoder_vjp_of_the_velocity_residual(name, sign, flow_model, clean8):
    draws = draws_for(2)
    got = direction_of(name, flow_model, clean8, draws)
    expected = sds_gradient(flow_model, clean8, draws)
    assert cosine(got, sign * expected) >= AGREEMENT


def test_mist_flow_direction_is_the_gradient_of_its_objective(flow_model, clean8):
    draws = draws_for(2, sample=False)
    got = direction_of("mist", flow_model, clean8, draws, latent="mean")
    x = clean8.clone().requires_grad_(True)
    latents = encode(flow_model, x)
    with torch.no_grad():
        target = encode(flow_model, text_image(64, 64).unsqueeze(0))
    semantic = flow_loss(flow_model, latents, draws.timesteps, draws.noise)
    textural = ((latents - target) ** 2).flatten(1).sum(1)
    weight = 1e4 * latents[0].numel() / (4 * 64 * 64)  # the reference's balance at this latent size
    (expected,) = torch.autograd.grad((textural - weight * semantic).sum(), x)
    assert cosine(got, -expected) >= AGREEMENT


def test_sdst_flow_direction_adds_the_textural_gradient(flow_model, clean8):
    draws = draws_for(2, sample=False)
    got = direction_of("sdst-", flow_model, clean8, draws, latent="mean")
    with torch.no_grad():
        latents = encode(flow_model, clean8)
        residual = velocity(flow_model, latents, draws.timesteps, draws.noise) - (draws.noise - latents)
        target = encode(flow_model, text_image(64, 64).unsqueeze(0))
    x = clean8.clone().requires_grad_(True)
    z = encode(flow_model, x)
    (expected,) = torch.autograd.grad(5.0 * (z * residual).sum() + ((z - target) ** 2).sum(), x)
    assert cosine(got, -expected) >= AGREEMENT


@pytest.mark.parametrize("name,sign", [("photoguard", -1.0), ("texture", -1.0), ("encoder", 1.0)])
def test_encoder_only_methods_are_unchanged_in_the_shifted_latent(name, sign, flow_model, clean8):
    # No denoiser: the ε family's objectives, in the flow VAE's shifted and scaled latent.
    draws = draws_for(2)
    got = direction_of(name, flow_model, clean8, draws)
    x = clean8.clone().requires_grad_(True)
    z = encode(flow_model, x, draws.latent_noise)
    with torch.no_grad():
        if name == "photoguard":  # the zero latent
            target = torch.zeros_like(z)
        elif name == "texture":  # the text target's posterior sample
            target = encode(flow_model, text_image(64, 64).unsqueeze(0).expand(2, -1, -1, -1), draws.target_noise)
        else:  # away from the clean image's posterior sample
            target = encode(flow_model, clean8, draws.target_noise)
    (expected,) = torch.autograd.grad(((z - target) ** 2).sum(), x)
    assert expected.abs().max() > 0
    assert cosine(got, sign * expected) >= AGREEMENT


# -- and the check can fail ---------------------------------------------------------------
def test_a_wrong_sign_fails_the_check(flow_model, clean8):
    draws = draws_for(2)
    got = direction_of("sds-", flow_model, clean8, draws)
    assert cosine(got, sds_gradient(flow_model, clean8, draws)) < AGREEMENT  # sds- descends: −J_Eᵀr
    got = direction_of("advdm", flow_model, clean8, draws)
    assert cosine(got, -advdm_gradient(flow_model, clean8, draws)) < AGREEMENT


def test_a_kept_transformer_jacobian_fails_the_sds_check(flow_model, clean8):
    # The full gradient of the flow-matching loss keeps (1 − σ)·J_vᵀ r beside r: not SDS's direction.
    draws = draws_for(2)
    got = direction_of("sds+", flow_model, clean8, draws)
    kept = advdm_gradient(flow_model, clean8, draws)
    assert cosine(got, kept) < AGREEMENT
    assert cosine(got, sds_gradient(flow_model, clean8, draws)) >= AGREEMENT


def test_the_epsilon_target_fails_the_advdm_check(flow_model, clean8):
    # Comparing v̂ with ε (the ε family's target) instead of ε − z is a different loss and direction.
    draws = draws_for(2)
    got = direction_of("advdm", flow_model, clean8, draws)
    wrong = advdm_gradient(flow_model, clean8, draws, target_of=lambda latents, noise: noise)
    assert cosine(got, wrong) < AGREEMENT


# -- reference mode on the flow family: the reference's extra costs, the fair update ----------------
@pytest.mark.parametrize("name", ["advdm", "mist", "texture", "sdst-"])
def test_reference_mode_gives_the_fair_update_on_the_flow_family(name, flow_model, clean8):
    """The reference's extra target/image forwards condition on the first prompt's text (SD 3's
    token states and pooled vector, ``TextConditioning[:1]``); the update stays the fair one and
    the transformer leaves the step frozen, without gradients."""
    fair = PROTECTIONS.get(name).from_overrides({"steps": "2"})
    reference = PROTECTIONS.get(name).from_overrides({"steps": "2", "reference_mode": "true"})
    assert torch.equal(
        fair(clean8, flow_model, generator=generator(4)), reference(clean8, flow_model, generator=generator(4))
    )
    assert all(p.requires_grad is False and p.grad is None for p in flow_model.unet.parameters())


def test_text_conditioning_slices_batch_rows_only(flow_model):
    conditioning = flow_model.encode_prompt("a photo", 2)
    first = conditioning[:1]
    assert first.hidden.shape[0] == 1 and first.pooled.shape[0] == 1
    assert torch.equal(first.hidden, conditioning.hidden[:1]) and torch.equal(first.pooled, conditioning.pooled[:1])
    with pytest.raises(TypeError, match="slice of batch rows"):
        conditioning[0]
