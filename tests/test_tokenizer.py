"""The project's own CLIP tokenizer: caption words are single tokens, any text still tokenizes."""

from __future__ import annotations

import pytest

from cloakbench.core.tokenizer import CAPTION_WORDS, MODEL_MAX_LENGTH, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.mark.parametrize("word", [w for w in CAPTION_WORDS if len(w) > 1])
def test_every_caption_word_is_one_token(tokenizer, word):
    ids = tokenizer(word).input_ids
    assert len(ids) == 3, tokenizer.convert_ids_to_tokens(ids)  # start, the word, end


def test_unknown_text_falls_back_to_characters_and_round_trips(tokenizer):
    ids = tokenizer("zebra crossing!").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    # CLIP splits punctuation into its own word, so decoding puts a space before "!".
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "zebracrossing!"


def test_prompts_pad_to_clip_length(tokenizer):
    assert tokenizer.model_max_length == MODEL_MAX_LENGTH == 77
    padded = tokenizer(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt")
    assert padded.input_ids.shape == (1, 77)
