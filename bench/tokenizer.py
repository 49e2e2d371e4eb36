"""A CLIP byte-level BPE tokenizer whose vocabulary and merges this project writes itself.

The tiny and toy models cannot download CLIP's 49k-token vocabulary, so they use a
small one: the 256 byte-level symbols (each alone and as a word end ``</w>``), the
two special tokens, and merges for a short list of caption words, so common words
become single tokens while any other text still tokenizes character by character.
"""

from __future__ import annotations

import json
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77

# Words that appear in prompts and in the toy model's captions.
CAPTION_WORDS = (
    "a an the of in on with and photo picture image painting artwork portrait landscape "
    "anime style person woman man astronaut cat dog coffee cup rocket launch space sky "
    "tissue cells stained galaxy stars retina eye motorcycle street wheel colour color "
    "logo texture pattern close up outdoor indoor red green blue white black"
).split()


def byte_alphabet() -> list[str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build ``word`` (ending in ``</w>``) from its characters."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    while len(symbols) > 1:
        merges.append((symbols[0], symbols[1]))
        symbols = [symbols[0] + symbols[1]] + symbols[2:]
    return merges


def build_vocab_and_merges(words: tuple[str, ...] | list[str] = CAPTION_WORDS) -> tuple[dict[str, int], list[str]]:
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in sorted(set(words)):
        if len(word) < 2:
            continue
        for left, right in _word_merges(word):
            merge = f"{left} {right}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(left + right)
    tokens += [START, END]
    vocab = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": MODEL_MAX_LENGTH,
                "bos_token": START,
                "eos_token": END,
                "pad_token": END,
                "unk_token": END,
                "tokenizer_class": "CLIPTokenizer",
            }
        )
    )
    return folder


def build_tokenizer(folder: Path):
    """A ``transformers.CLIPTokenizer`` over the project's vocabulary written in ``folder``."""
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
