"""SDXL as a family: the tiny-random-sdxl bundle, SDXL folders, and the UNet's added conditioning.

SDXL's UNet (``addition_embed_type="text_time"``) reads, beside the token states of its two CLIP
encoders, ``added_cond_kwargs``: the second encoder's pooled vector and six size ids
``original_size + crops_coords_top_left + target_size`` (diffusers ``pipeline_stable_diffusion_xl.py``
lines 731–734, 1126, 1208). The bundle computes both in one place (``LDM.condition``,
``LDM.unet_conditioning``); here they are recomputed from scratch — the two encoders called
directly, the size ids written out for 64² images — and the AdvDM and SDS(−) directions must agree
with a from-scratch gradient (cosine ≥ 0.999), while the same computation with the added
conditioning dropped (zeros, as an SD 1.x-shaped call would give) must not.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cloakbench.core.ldm import ModelError, TextConditioning
from cloakbench.protections import PROTECTIONS
from cloakbench.protections.engine import StepDraws

AGREEMENT = 0.999
SIZE_IDS_64 = [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]  # (H, W) + crop (0, 0) + (H, W) for 64² images


@pytest.fixture(scope="module")
def sdxl_model():
    from cloakbench.core.zoo import load_model

    return load_model("tiny-random-sdxl", device="cpu", dtype="float32", seed=0)


@pytest.fixture(scope="module")
def saved_sdxl(sdxl_model, tmp_path_factory):
    return sdxl_model.save_pretrained(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


@pytest.fixture(scope="module")
def diffusers_sdxl(sdxl_model, tmp_path_factory):
    """The folder diffusers' own ``StableDiffusionXLPipeline.save_pretrained`` writes: SDXL's layout and
    model_index.json exactly as a downloaded SDXL has them, no cloakbench keys."""
    folder = tmp_path_factory.mktemp("sdxl") / "diffusers-sdxl"
    sdxl_model.text2img_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


# -- the independent implementation (the modules called directly) ---------------------------------
def token_ids(tokenizer, prompt):
    return tokenizer(
        [prompt], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids


def sdxl_conditioning(model, prompt, batch):
    """Both encoders' penultimate states concatenated, and the second's projected pooled vector."""
    first = model.text_encoder(token_ids(model.tokenizer, prompt), output_hidden_states=True)
    second = model.text_encoder_2(token_ids(model.tokenizer_2, prompt), output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return hidden.expand(batch, -1, -1), second.text_embeds.expand(batch, -1)


def epsilon(model, latents, timesteps, noise, *, added=True, prompt="a photo"):
    alpha_bar = model.scheduler.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    hidden, pooled = sdxl_conditioning(model, prompt, latents.shape[0])
    time_ids = torch.tensor([SIZE_IDS_64]).expand(latents.shape[0], -1)
    if not added:  # the added conditioning dropped: what a call without SDXL's extras amounts to
        pooled, time_ids = torch.zeros_like(pooled), torch.zeros_like(time_ids)
    conditions = {"text_embeds": pooled, "time_ids": time_ids}
    return model.unet(noisy, timesteps, encoder_hidden_states=hidden, added_cond_kwargs=conditions).sample


def encode(model, images, latent_noise):
    """``s·E(x)`` with the scale from the VAE's config (SDXL's pipelines read it there: 0.13025)."""
    dist = model.vae.encode(images * 2 - 1).latent_dist
    return (dist.mean + dist.std * latent_noise) * model.vae.config.scaling_factor


def advdm_gradient(model, images, draws, *, added=True):
    x = images.clone().requires_grad_(True)
    latents = encode(model, x, draws.latent_noise)
    loss = ((epsilon(model, latents, draws.timesteps, draws.noise, added=added) - draws.noise) ** 2).flatten(1).mean(1)
    (gradient,) = torch.autograd.grad(loss.sum(), x)
    return gradient


def sds_gradient(model, images, draws, *, added=True):
    """``J_Eᵀ (ε̂ − ε)`` with ``ε̂`` a constant: the UNet's Jacobian dropped."""
    with torch.no_grad():
        latents = encode(model, images, draws.latent_noise)
        residual = epsilon(model, latents, draws.timesteps, draws.noise, added=added) - draws.noise
    _, vjp = torch.autograd.functional.vjp(lambda x: encode(model, x, draws.latent_noise), images, residual)
    return vjp


def draws_for(count, seed=11):
    g = torch.Generator().manual_seed(seed)
    shape = (count, 4, 8, 8)
    return StepDraws(
        timesteps=torch.randint(0, 1000, (count,), generator=g),
        noise=torch.randn(shape, generator=g),
        latent_noise=torch.randn(shape, generator=g),
    )


def direction_of(name, model, images, draws):
    protection = PROTECTIONS.get(name).from_overrides({"random_start": "false"})
    state = protection.prepare(images, model, generator=torch.Generator().manual_seed(0))
    direction, _ = protection.direction(state, state.adversarial.detach().requires_grad_(True), draws)
    return direction


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


# -- the bundle ------------------------------------------------------------------------------------
def test_tiny_random_sdxl_has_sdxl_base_layout(sdxl_model):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    assert isinstance(sdxl_model.unet, UNet2DConditionModel) and sdxl_model.is_sdxl
    assert sdxl_model.unet.config.addition_embed_type == "text_time"
    assert type(sdxl_model.text_encoder) is CLIPTextModel
    assert isinstance(sdxl_model.text_encoder_2, CLIPTextModelWithProjection)
    widths = sdxl_model.text_encoder.config.hidden_size + sdxl_model.text_encoder_2.config.hidden_size
    assert sdxl_model.unet.config.cross_attention_dim == widths
    assert sdxl_model.family == "eps-unet" and sdxl_model.can_inpaint and sdxl_model.inpaint_unet is None


def test_conditioning_is_diffusers_sdxl_encode_prompt(sdxl_model):
    """The bundle's conditioning equals StableDiffusionXLPipeline.encode_prompt's, zeros for the negative."""
    pipe = sdxl_model.text2img_pipeline()
    hidden, negative, pooled, negative_pooled = pipe.encode_prompt("a photo", do_classifier_free_guidance=True)
    ours = sdxl_model.encode_prompt("a photo", 1)
    assert isinstance(ours, TextConditioning)
    torch.testing.assert_close(ours.hidden, hidden)
    torch.testing.assert_close(ours.pooled, pooled)
    empty = sdxl_model.negative_conditioning(1)
    torch.testing.assert_close(empty.hidden, negative)
    torch.testing.assert_close(empty.pooled, negative_pooled)
    assert float(negative.abs().max()) == 0.0  # SDXL base's force_zeros_for_empty_prompt


def test_size_ids_follow_the_working_size(sdxl_model):
    assert sdxl_model.add_time_ids(torch.zeros(2, 4, 8, 8)).tolist() == [SIZE_IDS_64] * 2
    assert sdxl_model.add_time_ids(torch.zeros(1, 4, 16, 12)).tolist() == [[128.0, 96.0, 0.0, 0.0, 128.0, 96.0]]


def test_the_unet_refuses_token_states_without_the_pooled_vector(sdxl_model):
    with pytest.raises(ModelError, match="pooled text vector"):
        sdxl_model.predict(torch.zeros(1, 4, 8, 8), torch.tensor([10]), sdxl_model.encode_prompt("a").hidden)


# -- the protections agree with the from-scratch computation ----------------------------------------
@pytest.mark.parametrize("name,sign", [("advdm", 1.0), ("advdm-", -1.0)])
def test_advdm_direction_carries_the_added_conditioning(name, sign, sdxl_model, clean8):
    draws = draws_for(2)
    got = direction_of(name, sdxl_model, clean8, draws)
    expected = advdm_gradient(sdxl_model, clean8, draws)
    assert expected.abs().max() > 0
    assert cosine(got, sign * expected) >= AGREEMENT


@pytest.mark.parametrize("name,sign", [("sds+", 1.0), ("sds-", -1.0)])
def test_sds_direction_carries_the_added_conditioning(name, sign, sdxl_model, clean8):
    draws = draws_for(2)
    got = direction_of(name, sdxl_model, clean8, draws)
    assert cosine(got, sign * sds_gradient(sdxl_model, clean8, draws)) >= AGREEMENT


def test_dropping_the_added_conditioning_fails_the_check(sdxl_model, clean8):
    """AdvDM's direction and the UNet's prediction miss the from-scratch ones without the added
    conditioning. (SDS's direction ``J_Eᵀ(ε̂ − ε)`` on a random UNet is dominated by ``−ε``, so the
    prediction ``ε̂`` it is built from is what is checked for it.)"""
    draws = draws_for(2)
    got = direction_of("advdm", sdxl_model, clean8, draws)
    assert cosine(got, advdm_gradient(sdxl_model, clean8, draws)) >= AGREEMENT
    assert cosine(got, advdm_gradient(sdxl_model, clean8, draws, added=False)) < AGREEMENT
    with torch.no_grad():
        latents = encode(sdxl_model, clean8, draws.latent_noise)
        noisy = sdxl_model.add_noise(latents, draws.timesteps, draws.noise)
        ours = sdxl_model.predict(noisy, draws.timesteps, sdxl_model.encode_prompt("a photo", 2))
        with_added = epsilon(sdxl_model, latents, draws.timesteps, draws.noise)
        dropped = epsilon(sdxl_model, latents, draws.timesteps, draws.noise, added=False)
    assert cosine(ours, with_added) >= AGREEMENT
    assert cosine(ours, dropped) < AGREEMENT


# -- an SDXL folder --------------------------------------------------------------------------------
def test_saved_sdxl_folder_has_sdxl_layout_and_loads_back(saved_sdxl, sdxl_model):
    from cloakbench.core.zoo import load_model, model_facts

    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (saved_sdxl / part).is_dir(), part
    index = json.loads((saved_sdxl / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    loaded = load_model(str(saved_sdxl))
    assert loaded.is_sdxl and loaded.force_zeros_for_empty_prompt and loaded.scaling_factor == pytest.approx(0.13025)
    latents, steps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([300])
    with torch.no_grad():
        expected = sdxl_model.predict(latents, steps, sdxl_model.encode_prompt("a photo"))
        got = loaded.predict(latents, steps, loaded.encode_prompt("a photo"))
    torch.testing.assert_close(got, expected)
    facts = model_facts(str(saved_sdxl))
    assert (
        facts.can_inpaint
        and not facts.inpaint_unet
        and facts.inpaints_by_blending
        and facts.latent_channels == 4
        and facts.family == "eps-unet"
    )


def test_a_folder_saved_by_diffusers_sdxl_pipeline_loads(diffusers_sdxl, sdxl_model):
    from cloakbench.core.zoo import load_model

    index = json.loads((diffusers_sdxl / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and not any(k.startswith("cloakbench") for k in index)
    loaded = load_model(str(diffusers_sdxl))
    assert loaded.is_sdxl and loaded.force_zeros_for_empty_prompt and loaded.resolution == 64
    latents, steps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([300])
    with torch.no_grad():
        expected = sdxl_model.predict(latents, steps, sdxl_model.encode_prompt("a photo"))
        torch.testing.assert_close(loaded.predict(latents, steps, loaded.encode_prompt("a photo")), expected)


def test_an_sdxl_folder_without_its_second_encoder_is_named(saved_sdxl, tmp_path):
    import shutil

    from cloakbench.core.zoo import load_model

    broken = tmp_path / "no-second-encoder"
    shutil.copytree(saved_sdxl, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(ModelError, match="text_encoder_2"):
        load_model(str(broken))


def test_bench_protect_runs_on_an_sdxl_folder(diffusers_sdxl, tmp_path):
    from cloakbench.bench.cli.app import app

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(pictures / "cat.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "protect",
            "--method",
            "sds-",
            "--images",
            str(pictures),
            "--model",
            str(diffusers_sdxl),
            "--quick",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert list(out.rglob("*.png")), result.output


# -- the attacks run through diffusers' SDXL pipelines -----------------------------------------------
def test_sdedit_is_diffusers_sdxl_img2img_with_its_own_prompt_encoding(sdxl_model, clean8):
    """SDEdit's output equals StableDiffusionXLImg2ImgPipeline called with the prompt string (the
    pipeline encodes it and computes the size ids itself), same generator, same latents."""
    from cloakbench.mimicry import MIMICRY
    from cloakbench.mimicry.base import AttackContext

    attack = MIMICRY.get("sdedit").from_overrides({"steps": "10", "strengths": "0.3", "guidance_scale": "3"})
    got = attack(
        clean8, sdxl_model, generator=torch.Generator().manual_seed(5), context=AttackContext(prompt="a photo")
    )
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        latents = sdxl_model.encode(clean8, mode="sample", generator=generator)
        expected = sdxl_model.img2img_pipeline()(
            prompt=["a photo"] * 2,
            image=latents,
            strength=0.3,
            num_inference_steps=10,
            guidance_scale=3.0,
            eta=0.0,
            generator=generator,
            output_type="pt",
        ).images
    assert type(sdxl_model.img2img_pipeline()).__name__ == "StableDiffusionXLImg2ImgPipeline"
    torch.testing.assert_close(got, expected)


def test_lora_adapts_only_the_unet_attention_projections(sdxl_model, clean8, tmp_path):
    """train_dreambooth_lora_sdxl.py's defaults: adapters on the UNet's to_k/to_q/to_v/to_out.0, the text
    encoders frozen; the adapter file loads into StableDiffusionXLPipeline."""
    from safetensors.torch import load_file

    from cloakbench.mimicry import MIMICRY
    from cloakbench.mimicry.base import AttackContext
    from cloakbench.mimicry.lora import ADAPTER_FILE

    attack = MIMICRY.get("lora").from_overrides(
        {"steps": "2", "k": "1", "sample_steps": "2", "num_class_images": "1", "class_sample_steps": "2"}
    )
    before = [p.detach().clone() for p in sdxl_model.text_encoder_2.parameters()]
    out = attack(
        clean8, sdxl_model, generator=torch.Generator().manual_seed(0), context=AttackContext(work_dir=str(tmp_path))
    )
    assert out.shape == (1, 3, 64, 64)
    keys = list(load_file(str(tmp_path / ADAPTER_FILE)))
    assert keys and all(k.startswith("unet.") for k in keys)
    assert {k.split(".lora")[0].rsplit(".", 1)[-1] for k in keys} <= {"to_q", "to_k", "to_v", "0"}
    assert all(torch.equal(a, b) for a, b in zip(before, sdxl_model.text_encoder_2.parameters()))
    pipe = sdxl_model.text2img_pipeline()
    pipe.load_lora_weights(str(tmp_path), weight_name=ADAPTER_FILE)
