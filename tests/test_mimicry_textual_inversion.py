"""Textual inversion on the tiny model: one row trains, the file reloads in diffusers, generations repeat."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from cloakbench.mimicry.base import AttackContext
from cloakbench.mimicry.textual_inversion import TextualInversion, generate, train_embedding

FAST = {"steps": "6", "sample_steps": "2", "k": "2", "batch_size": "2"}


def _fingerprint(module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_only_the_new_row_trains_and_the_shared_model_is_untouched(tiny_model, images):
    vocab_before = len(tiny_model.tokenizer)
    encoder_before = _fingerprint(tiny_model.text_encoder)
    original = tiny_model.text_encoder.get_input_embeddings().weight.detach().clone()

    def train(seed):
        return train_embedding(
            tiny_model,
            images,
            token="<concept>",
            initializer="painting",
            templates=("a photo of {}", "{}"),
            steps=8,
            batch_size=2,
            learning_rate=5e-3,
            weight_decay=1e-2,
            flip_p=0.5,
            generator=torch.Generator().manual_seed(seed),
        )

    concept = train(0)
    trained = concept.text_encoder.get_input_embeddings().weight.detach()
    assert concept.token_id == original.shape[0] and trained.shape[0] == original.shape[0] + 1
    assert torch.equal(trained[:-1], original)  # bit-identical: restored after every step
    init_ids = concept.tokenizer("painting", add_special_tokens=False).input_ids
    assert not torch.allclose(trained[-1], original[init_ids].mean(0))  # the new row moved
    assert len(concept.loss_trace) == 8 and all(torch.isfinite(torch.tensor(concept.loss_trace)))
    assert torch.equal(train(0).embedding, concept.embedding)  # deterministic under the generator
    # The shared model is exactly as it was.
    assert len(tiny_model.tokenizer) == vocab_before
    assert "<concept>" not in tiny_model.tokenizer.get_vocab()
    assert _fingerprint(tiny_model.text_encoder) == encoder_before


def test_saved_embedding_reloads_in_diffusers_and_reproduces_the_generations(tmp_path, tiny_model, images):
    from cloakbench.core.zoo import load_model

    attack = TextualInversion.from_overrides(FAST)
    context = AttackContext(prompt="a photo", work_dir=str(tmp_path))
    generations = attack(images, tiny_model, generator=torch.Generator().manual_seed(11), context=context)
    assert generations.shape == (2, 3, tiny_model.resolution, tiny_model.resolution)
    assert float(generations.min()) >= 0 and float(generations.max()) <= 1
    assert len(context.notes["loss_trace"]) == 6
    path = tmp_path / "learned_embeds.safetensors"
    assert context.notes["textual-inversion"]["embedding_path"] == str(path)
    saved = load_file(str(path))
    assert list(saved) == ["<concept>"] and saved["<concept>"].shape == (1, tiny_model.text_encoder.config.hidden_size)

    notes = context.notes["textual-inversion"]
    fresh = load_model("tiny-random", seed=0)  # same seeded weights, untouched tokenizer
    pipe = fresh.text2img_pipeline()
    pipe.load_textual_inversion(str(path), token="<concept>")
    with torch.no_grad():
        again = generate(
            pipe,
            notes["generation_prompts"],
            notes["generation_seeds"],
            steps=attack.config.sample_steps,
            guidance_scale=attack.config.guidance_scale,
            resolution=fresh.resolution,
        )
    torch.testing.assert_close(again, generations, atol=1e-5, rtol=0)
    # Same seed, same everything.
    repeat = attack(images, tiny_model, generator=torch.Generator().manual_seed(11), context=AttackContext())
    assert torch.equal(repeat, generations)


def test_step_default_scales_with_the_model(tiny_model):
    assert TextualInversion().resolved_steps(tiny_model) == 200
    assert TextualInversion.from_overrides({"steps": "7"}).resolved_steps(tiny_model) == 7


def test_bad_token_and_prompts_are_refused(tiny_model, images):
    with pytest.raises(ValueError, match="already in the tokenizer"):
        TextualInversion.from_overrides({**FAST, "token": "photo</w>"})(
            images, tiny_model, generator=torch.Generator(), context=AttackContext()
        )
    with pytest.raises(ValueError, match="'{}'"):
        TextualInversion.from_overrides({**FAST, "prompts": "a photo"})(
            images, tiny_model, generator=torch.Generator(), context=AttackContext()
        )


def test_training_templates_are_diffusers_lists():
    """examples/textual_inversion/textual_inversion.py:454-505: 27 object templates (default), 19 style ones."""
    from cloakbench.mimicry import MIMICRY

    cls = MIMICRY.get("textual-inversion")
    objects = cls().training_templates()
    styles = cls.from_overrides({"learnable_property": "style"}).training_templates()
    assert len(objects) == 27 and objects[0] == "a photo of a {}" and objects[-1] == "a photo of a small {}"
    assert len(styles) == 19 and styles[0] == "a painting in the style of {}"
    assert all(t.count("{}") == 1 for t in objects + styles)
    assert cls.from_overrides({"templates": "a photo of {}"}).training_templates() == ("a photo of {}",)
