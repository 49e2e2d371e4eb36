"""A CLIP byte-level BPE tokenizer whose vocabulary and merges this project writes itself.

The tiny and toy models cannot download CLIP's 49k-token vocabulary, so they use a
small one: the 256 byte-level symbols (each alone and as a word end ``</w>``), the
two special tokens, and merges for a short list of caption words, so common words
become single tokens while any other text still tokenizes character by character.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77

# Words that appear in prompts and in the toy model's captions.
CAPTION_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "photo",
    "picture",
    "image",
    "painting",
    "artwork",
    "portrait",
    "landscape",
    "anime",
    "style",
    "person",
    "woman",
    "man",
    "astronaut",
    "cat",
    "dog",
    "coffee",
    "cup",
    "rocket",
    "launch",
    "space",
    "sky",
    "tissue",
    "cells",
    "stained",
    "galaxy",
    "stars",
    "retina",
    "eye",
    "motorcycle",
    "street",
    "wheel",
    "colour",
    "color",
    "logo",
    "texture",
    "pattern",
    "close",
    "up",
    "outdoor",
    "indoor",
    "red",
    "green",
    "blue",
    "white",
    "black",
]


def byte_alphabet() -> list[str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _apply_bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding as CLIP applies it: merge the lowest-ranked adjacent pair, repeat."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks) + 1), i) for i, pair in enumerate(itertools.pairwise(symbols))]
        rank, index = min(pairs)
        if rank > len(ranks):
            break
        symbols = symbols[:index] + [symbols[index] + symbols[index + 1]] + symbols[index + 2 :]
    return symbols


def build_vocab_and_merges(words: tuple[str, ...] | list[str] = CAPTION_WORDS) -> tuple[dict[str, int], list[str]]:
    """The vocabulary and the merges that make each caption word a single token.

    Merges apply by rank across all words, so a word's merges are found by running
    the merges so far and adding one merge at a time for the first pair still apart
    (merges written word by word would let another word's earlier merge split it).
    """
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(set(words)):
        if len(word) < 2:
            continue
        symbols = _apply_bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(symbols) > 1:
            ranks[(symbols[0], symbols[1])] = len(ranks)
            tokens.append(symbols[0] + symbols[1])
            symbols = _apply_bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
    tokens += [START, END]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    merges = [f"{left} {right}" for (left, right), _ in sorted(ranks.items(), key=lambda item: item[1])]
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
