"""The fine-tuning attacks ``lora`` and ``dreambooth`` (mimicry/finetune.py) on the seeded tiny model."""

from __future__ import annotations

import copy

import pytest
import torch

from cloakbench.core import finetuning
from cloakbench.mimicry import MIMICRY, AttackContext
from cloakbench.mimicry.lora import ADAPTER_FILE


def state_of(model) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v.detach().clone()
        for part, module in model.modules().items()
        for k, v in module.state_dict().items()
    }


def run_attack(name: str, images, model, tmp_path, **overrides):
    work = tmp_path / "work" / name
    work.mkdir(parents=True)
    attack = MIMICRY.get(name).from_overrides({k: str(v) for k, v in overrides.items()})
    context = AttackContext(work_dir=str(work))
    output = attack(images, model, generator=torch.Generator().manual_seed(7), context=context)
    return output, context, work


def adapter_pipeline(model, folder=None):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**model.pipeline_components(unet=copy.deepcopy(model.unet)))
    pipe.set_progress_bar_config(disable=True)
    if folder is not None:
        pipe.load_lora_weights(str(folder))
    return pipe


def test_lora_learns_the_concept(tiny_model, clean8, tmp_path):
    """Training loss falls, and generated latents move toward the concept's latents.

    Measured in latent space: the tiny model's VAE is random, so its decoder maps every
    latent to near-grey pixels and a pixel distance would hide what the UNet learned.
    """
    settings = dict(steps=60, learning_rate=3e-3, prior_preservation=False, k=2, sample_steps=10)
    _, context, work = run_attack("lora", clean8, tiny_model, tmp_path, **settings)
    trace = context.notes["loss_trace"]
    assert len(trace) == 60
    assert sum(trace[-15:]) / 15 < 0.95 * sum(trace[:15]) / 15, trace
    notes = context.notes["lora"]
    with torch.no_grad():
        concept = tiny_model.encode(clean8, mode="mean").flatten(1)

    def distance(folder):
        latents = adapter_pipeline(tiny_model, folder)(
            prompt=notes["generation_prompts"],
            num_inference_steps=10,
            guidance_scale=7.5,
            generator=[torch.Generator().manual_seed(s) for s in notes["generation_seeds"]],
            output_type="latent",
        ).images
        return torch.cdist(latents.flatten(1), concept).min(dim=1).values.mean()

    trained, base = distance(work), distance(None)
    assert trained < 0.97 * base, (trained, base)


def test_lora_adapter_reloads_through_load_lora_weights(tiny_model, clean8, tmp_path):
    generations, context, work = run_attack(
        "lora", clean8, tiny_model, tmp_path, steps=5, k=2, sample_steps=4, num_class_images=1, class_sample_steps=2
    )
    assert (work / ADAPTER_FILE).is_file()
    pipe = adapter_pipeline(tiny_model, work)
    notes = context.notes["lora"]
    again = pipe(
        prompt=notes["generation_prompts"],
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=[torch.Generator().manual_seed(s) for s in notes["generation_seeds"]],
        height=64,
        width=64,
        output_type="pt",
    ).images
    base = finetuning.generate_images(
        tiny_model, notes["generation_prompts"], notes["generation_seeds"], steps=4, guidance_scale=7.5
    )
    assert torch.allclose(again, generations, atol=1e-5)
    assert not torch.allclose(base, generations, atol=1e-3)  # the adapter does something


@pytest.mark.parametrize("name", ["lora", "dreambooth"])
def test_the_shared_model_is_never_modified(name, tiny_model, clean8, tmp_path):
    before = state_of(tiny_model)
    run_attack(
        name, clean8, tiny_model, tmp_path, steps=3, k=1, sample_steps=2, num_class_images=1, class_sample_steps=2
    )
    after = state_of(tiny_model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for m in tiny_model.modules().values() for p in m.parameters())


def test_dreambooth_trains_the_text_encoder_copy_and_caches_class_images(tiny_model, clean8, tmp_path):
    _, context, work = run_attack(
        "dreambooth",
        clean8,
        tiny_model,
        tmp_path,
        steps=3,
        k=1,
        sample_steps=2,
        num_class_images=2,
        class_sample_steps=2,
        save_weights="true",
    )
    assert (work / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    cached = sorted((work.parent).glob("class-images-*/*.png"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    run_attack(
        "lora", clean8, tiny_model, tmp_path, steps=1, k=1, sample_steps=2, num_class_images=2, class_sample_steps=2
    )
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # reused, not regenerated
    assert context.notes["dreambooth"]["class_images"] == 2


def test_prior_preserving_loss_weights_the_class_half():
    per_sample = torch.tensor([1.0, 3.0, 10.0, 20.0])
    assert finetuning.prior_preserving_loss(per_sample, 2, 0.5).item() == pytest.approx(2.0 + 0.5 * 15.0)
    assert finetuning.prior_preserving_loss(per_sample[:2], 2, 0.5).item() == pytest.approx(2.0)


def test_lora_is_reproducible_whatever_the_global_rng(tiny_model, clean8, tmp_path):
    """The adapters' initial weights come from the cell's generator, not the global RNG."""
    settings = dict(steps=2, k=1, sample_steps=2, prior_preservation=False)
    torch.manual_seed(1)
    first, _, _ = run_attack("lora", clean8, tiny_model, tmp_path / "a", **settings)
    torch.manual_seed(2)
    second, _, _ = run_attack("lora", clean8, tiny_model, tmp_path / "b", **settings)
    assert torch.equal(first, second)
