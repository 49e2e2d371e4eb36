"""The Anti-DreamBooth protections FSMG and ASPL (protections/fsmg.py, aspl.py, surrogate.py)."""

from __future__ import annotations

import pytest
import torch

from cloakbench.protections import PROTECTIONS
from cloakbench.protections.engine import StepDraws

QUICK = {
    "fsmg": {"steps": "2", "surrogate_steps": "2", "num_class_images": "1", "class_sample_steps": "2"},
    "aspl": {
        "steps": "2",
        "max_f_train_steps": "1",
        "max_adv_train_steps": "1",
        "num_class_images": "1",
        "class_sample_steps": "2",
    },
}


def state_of(model) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v.detach().clone()
        for part, module in model.modules().items()
        for k, v in module.state_dict().items()
    }


def independent_gradient(model, unet, text_encoder, prompt, images, draws) -> torch.Tensor:
    """``∇_x Σ_i mean ‖ε − ε_θ(√ᾱ_t z + √(1−ᾱ_t) ε, t, τ(prompt))‖²``, written out with plain autograd."""
    x = images.detach().clone().requires_grad_(True)
    dist = model.vae.encode(x * 2 - 1).latent_dist
    z = (dist.mean + dist.std * draws.latent_noise) * model.vae.config.scaling_factor
    alpha_bar = model.scheduler.alphas_cumprod[draws.timesteps].view(-1, 1, 1, 1)
    z_t = alpha_bar.sqrt() * z + (1 - alpha_bar).sqrt() * draws.noise
    ids = model.tokenizer(
        [prompt] * x.shape[0],
        padding="max_length",
        max_length=model.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    predicted = unet(z_t, draws.timesteps, encoder_hidden_states=text_encoder(ids)[0]).sample
    ((predicted - draws.noise) ** 2).flatten(1).mean(1).sum().backward()
    return x.grad


@pytest.mark.parametrize("name", ["fsmg", "aspl"])
def test_gradient_matches_an_independent_autograd_computation(name, tiny_model, clean8):
    protection = PROTECTIONS.get(name).from_overrides(QUICK[name])
    state = protection.prepare(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    if name == "aspl":  # the round's surrogate f' (trained on the clean images)
        state.round_surrogate = state.surrogate.clone()
        state.round_surrogate.train(state.clean, 1, state.training_generator, state.prior_images)
    surrogate = protection.surrogate_for_step(state)
    generator = torch.Generator().manual_seed(5)
    draws = StepDraws(
        timesteps=torch.tensor([120, 770]),
        noise=torch.randn(2, 4, 8, 8, generator=generator),
        latent_noise=torch.randn(2, 4, 8, 8, generator=generator),
    )
    adversarial = state.adversarial.detach().requires_grad_(True)
    direction, loss = protection.direction(state, adversarial, draws)
    expected = independent_gradient(
        tiny_model, surrogate.unet, surrogate.text_encoder, protection.config.instance_prompt, state.adversarial, draws
    )
    assert loss.shape == (2,)
    assert expected.abs().max() > 0
    assert torch.allclose(direction, expected, rtol=1e-4, atol=1e-7)
    # and the surrogate is not the base model: its gradient differs from the base UNet's
    base = independent_gradient(
        tiny_model,
        tiny_model.unet,
        tiny_model.text_encoder,
        protection.config.instance_prompt,
        state.adversarial,
        draws,
    )
    assert not torch.allclose(direction, base, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["fsmg", "aspl"])
def test_the_shared_model_is_bit_identical_after_protecting(name, tiny_model, clean8):
    before = state_of(tiny_model)
    protected = PROTECTIONS.get(name).from_overrides(QUICK[name])(
        clean8, tiny_model, generator=torch.Generator().manual_seed(0)
    )
    after = state_of(tiny_model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for m in tiny_model.modules().values() for p in m.parameters())
    assert protected.shape == clean8.shape


def test_aspl_stays_within_its_budget_in_8bit_units(tiny_model, clean8):
    """12 steps of 0.6375/255 would reach 7.65/255; the budget 5e-2 on [−1, 1] = 6.375/255 rounds to 6/255."""
    protection = PROTECTIONS.get("aspl").from_overrides({**QUICK["aspl"], "steps": "12", "max_adv_train_steps": "6"})
    protected = protection(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    change = ((protected - clean8).abs() * 255).round()
    assert change.max() == 6
    assert torch.equal(protected, (protected * 255).round() / 255)


def test_aspl_alternates_rounds_as_the_reference(tiny_model, clean8):
    """steps 5 in rounds of 2: three rounds, each trains f' then (after its PGD steps) f, 1 step each."""
    protection = PROTECTIONS.get("aspl").from_overrides(
        {**QUICK["aspl"], "steps": "5", "max_adv_train_steps": "2", "max_f_train_steps": "1"}
    )
    state = protection.prepare(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    trained_f = []
    for _ in range(5):
        protection.step(state)
        trained_f.append(len(state.surrogate.loss_trace))
    assert trained_f == [0, 1, 1, 2, 3]  # f trains after PGD steps 2, 4 and the last (5)
    assert state.surrogate.cursor == 3  # one image per round: f's round robin goes on across rounds


def test_lora_surrogate_trains_only_adapters(tiny_model, clean8):
    protection = PROTECTIONS.get("fsmg").from_overrides({**QUICK["fsmg"], "lora_rank": "2"})
    state = protection.prepare(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    names = [n for n, p in state.surrogate.unet.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names)
    assert not any(p.requires_grad for p in state.surrogate.text_encoder.parameters())


def test_images_larger_than_the_model_train_with_resized_class_images(tiny_model):
    """bench protect works at the image's own size: class images (made at 64²) are resized to it."""
    clean = (torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(3)) * 255).round() / 255
    protection = PROTECTIONS.get("aspl").from_overrides({**QUICK["aspl"], "num_class_images": "2"})
    state = protection.prepare(clean, tiny_model, generator=torch.Generator().manual_seed(0))
    assert state.prior_images.shape == (2, 3, 96, 96)
    protection.step(state)
    assert 0 < ((protection.finalize(state) - clean).abs().max() * 255).round() <= 6


@pytest.mark.parametrize("name,instances", [("fsmg", 2), ("aspl", 1)])
def test_surrogate_batch_is_the_references(name, instances, tiny_model, clean8, monkeypatch):
    """FSMG's surrogate steps take 2 instance + 2 class images (attack_with_fsmg.sh:22, train_dreambooth.py
    collate_fn:493-506), ASPL's 1 + 1 (attacks/aspl.py:418-421): instances first, then the class images."""
    from cloakbench.core import finetuning

    seen = []
    real = finetuning.encode_prompts

    def spy(model, prompts, **kwargs):
        seen.append(list(prompts))
        return real(model, prompts, **kwargs)

    monkeypatch.setattr(finetuning, "encode_prompts", spy)
    protection = PROTECTIONS.get(name).from_overrides({**QUICK[name], "num_class_images": "2"})
    state = protection.prepare(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    seen.clear()
    cursor = state.surrogate.cursor
    state.surrogate.train(state.clean, 1, state.training_generator, state.prior_images)
    config = protection.config
    assert seen == [[config.instance_prompt] * instances + [config.class_prompt] * instances]
    assert state.surrogate.cursor == cursor + instances


def write_pngs(folder, images):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(array).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("name", ["fsmg", "aspl"])
def test_the_surrogate_trains_on_the_reference_set(name, tiny_model, clean8, tmp_path, monkeypatch):
    """attack_with_aspl.sh:3-4,17-18 / attack_with_fsmg.sh:4,13: the surrogate learns set A, PGD perturbs set B.
    The identity names the set by content hash (a moved copy has the same), the row note says what was used."""
    from cloakbench.protections.surrogate import Surrogate

    reference = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    reference = (reference * 255).round() / 255
    folder = write_pngs(tmp_path / "set_A", reference)
    trained_on = []
    real_train = Surrogate.train

    def spy(self, images, steps, generator, prior_images):
        trained_on.append(images.detach().clone())
        return real_train(self, images, steps, generator, prior_images)

    monkeypatch.setattr(Surrogate, "train", spy)
    protection = PROTECTIONS.get(name).from_overrides({**QUICK[name], "reference_set": str(folder)})
    state = protection.prepare(clean8, tiny_model, generator=torch.Generator().manual_seed(0))
    if name == "aspl":
        protection.step(state)
    first = trained_on[0]
    assert first.shape[0] == 3 and torch.allclose(first, reference, atol=1 / 255)  # set A, not the images
    identity = protection.identity()["config"]["reference_set"]
    assert identity.startswith("sha256:") and str(folder) not in str(protection.identity())
    moved = write_pngs(tmp_path / "elsewhere", reference.flip(0))  # same pixels, other path and order
    assert (
        PROTECTIONS.get(name).from_overrides({"reference_set": str(moved)}).identity()["config"]["reference_set"]
        == identity
    )
    assert "reference set sha256:" in protection.row_note() and "3 images" in protection.row_note()
    assert "protected images themselves" in PROTECTIONS.get(name)().row_note()


def test_a_missing_reference_set_is_one_sentence(tmp_path):
    from cloakbench.core.config import ConfigError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="reference_set .* holds no readable image"):
        PROTECTIONS.get("aspl").from_overrides({"reference_set": str(empty)}).identity()


def test_the_instance_prompt_is_not_the_images_caption():
    """bench compare conditions a ``prompt`` setting on each image's caption; the instance prompt keeps "sks"."""
    from cloakbench.bench.plan import adapted, protection_adaptation

    protection = PROTECTIONS.get("aspl")()
    assert protection_adaptation(protection, "a photo of a lighthouse") == ()  # no `prompt` setting to condition
    assert adapted(protection, protection_adaptation(protection, "a photo of a lighthouse")).config.instance_prompt == (
        "a photo of sks person"
    )
