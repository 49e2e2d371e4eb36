"""The family abstraction: each bundle says its noise path, target, latent width and factors; flow folders load."""

from __future__ import annotations

import pytest
import torch

from cloakbench.core.families import FAMILIES, FLOW_TRANSFORMER, flow_sigmas
from cloakbench.core.ldm import ModelError
from cloakbench.core.zoo import ZOO, load_model, model_facts


@pytest.fixture(scope="module")
def flow_model():
    return load_model("tiny-random-flow")


def test_the_zoo_knows_the_flow_family():
    assert FLOW_TRANSFORMER in FAMILIES
    for name in ("tiny-random-flow", "sd3-arch", "toy-flow"):
        assert ZOO.get(name).family == FLOW_TRANSFORMER and ZOO.get(name).latent_channels in (16, None)
    facts = model_facts("tiny-random-flow")
    assert (facts.family, facts.latent_channels) == (FLOW_TRANSFORMER, 16)


def test_eps_family_path_is_ddpm(tiny_model):
    z, eps, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    a = tiny_model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(tiny_model.add_noise(z, t, eps), a.sqrt() * z + (1 - a).sqrt() * eps)
    assert torch.equal(tiny_model.prediction_target(z, eps), eps)
    assert tiny_model.shift_factor == 0.0 and tiny_model.latent_channels == 4


def test_flow_sigmas_are_the_schedulers_table(flow_model):
    # diffusers builds its table from t = T down to 1; ours runs up. Shift 3 as SD 3 Medium.
    torch.testing.assert_close(flow_sigmas(1000, 3.0).float(), flow_model.scheduler.sigmas.flip(0).float())


def test_flow_latents_are_shifted_then_scaled(flow_model, clean8):
    with torch.no_grad():
        mean = flow_model.vae.encode(clean8 * 2 - 1).latent_dist.mean
        z = flow_model.encode(clean8, mode="mean")
    torch.testing.assert_close(z, (mean - 0.0609) * 1.5305)
    torch.testing.assert_close(flow_model.unscale_latents(z), mean)


def test_eps_only_code_refuses_a_flow_model(flow_model):
    with pytest.raises(ModelError, match="velocity"):
        flow_model.predict_noise(torch.zeros(1, 16, 8, 8), torch.tensor([1]), flow_model.encode_prompt("a", 1))
    with pytest.raises(ModelError, match="no DDPM"):
        _ = flow_model.alphas_cumprod


def test_a_flow_folder_loads_with_model_path(flow_model, tmp_path):
    folder = flow_model.save_pretrained(tmp_path / "sd3-like")
    assert (folder / "transformer" / "config.json").exists() and not (folder / "unet").exists()
    loaded = load_model(str(folder))
    assert loaded.family == FLOW_TRANSFORMER and loaded.shift_factor == pytest.approx(0.0609)
    z, t = torch.randn(1, 16, 8, 8), torch.tensor([400])
    with torch.no_grad():
        a = flow_model.predict(z, t, flow_model.encode_prompt("a photo", 1))
        b = loaded.predict(z, t, loaded.encode_prompt("a photo", 1))
    assert torch.equal(a, b)


def test_flux_arch_is_refused_with_its_memory_estimate():
    from cloakbench.core.devices import available_memory_bytes

    with pytest.raises(ModelError) as refused:
        model_facts("flux-arch")
    if available_memory_bytes("cpu") < 80 * 2**30:
        assert "GiB" in str(refused.value) and "needs about" in str(refused.value)


def test_sd3_arch_runs_a_pgd_step_on_seeded_conditioning(monkeypatch, clean8):
    # sd3-arch's code path (seeded conditioning of SD 3's shapes instead of three text encoders)
    # on a shrunken copy of its config: the real 2 B-parameter build is for bench perf.
    from cloakbench.core import architectures
    from cloakbench.protections import PROTECTIONS

    small = {**architectures.SD3_TRANSFORMER, "sample_size": 8, "num_layers": 1, "num_attention_heads": 2}
    small |= {
        "attention_head_dim": 8,
        "caption_projection_dim": 16,
        "joint_attention_dim": 32,
        "pos_embed_max_size": 16,
    }
    monkeypatch.setattr(architectures, "SD3_TRANSFORMER", small)
    monkeypatch.setattr(architectures, "SD3_VAE", architectures.tiny_flow_configs()["vae"])
    monkeypatch.setattr(architectures, "SD3_POOLED", 2048)
    model = architectures.sd3_architecture()
    assert model.encode_prompt("ignored", 2).hidden.shape == (2, architectures.SD3_TEXT_TOKENS, 32)
    for name in ("advdm", "sds-"):
        protection = PROTECTIONS.get(name).from_overrides({"steps": "1"})
        out = protection(clean8, model, generator=torch.Generator().manual_seed(0))
        assert (out - clean8).abs().max() > 0
