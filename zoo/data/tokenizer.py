"""Tokenizers for LM members: a Hub tokenizer by name, or a byte-level BPE trained on the corpus (offline).

A trained tokenizer is cached under `<cache_root>/tokenizer-<hash of corpus and settings>` so that every member of
a zoo trained on the same corpus shares it; it is saved with every checkpoint, so members load without the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from zoo.data import load_texts
from zoo.layout import atomic_dir

SPECIAL = "<|endoftext|>"


def train_bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[SPECIAL],
                            show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,  # the wrapped `tokenizers.Tokenizer`
        bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL,
        model_max_length=1_000_000,
    )


def build_tokenizer(data_args, vocab_size: int, cache_root: str | Path | None) -> PreTrainedTokenizerFast:
    if data_args.tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(data_args.tokenizer_name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    source, splits, _ = load_texts(data_args, "embedded:bbcnews")
    texts = splits["train"]["text"]
    key = hashlib.sha256(f"{source}|{data_args.split_seed}|{vocab_size}|{len(texts)}".encode())
    for text in texts[:: max(1, len(texts) // 64)]:
        key.update(text.encode())
    cache = Path(cache_root) / f"tokenizer-{key.hexdigest()[:16]}" if cache_root else None
    if cache is not None and (cache / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(cache))
    tokenizer = train_bpe(texts, vocab_size)
    if cache is not None:
        with atomic_dir(cache) as tmp:
            tokenizer.save_pretrained(str(tmp))
    return tokenizer
