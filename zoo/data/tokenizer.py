"""Tokenizers for LM members: a Hub tokenizer by name, or a byte-level BPE trained on the corpus (offline).

A trained tokenizer is cached under `<cache_root>/tokenizer-<hash of corpus and settings>` so that every member of
a zoo trained on the same corpus shares it; it is saved with every checkpoint, so members load without the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from zoo.data import load_texts
from zoo.families import TokenizerScheme
from zoo.layout import atomic_dir


def train_bpe(texts: list[str], vocab_size: int, scheme: TokenizerScheme) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts` with the special tokens of an architecture family's `scheme`; a scheme
    with a template (BERT's `[CLS] $A [SEP]`) wraps every encoded text in it."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=scheme.vocabulary,
                            show_progress=False)
    tokenizer = bpe._tokenizer  # the wrapped `tokenizers.Tokenizer`
    if scheme.template is not None:
        single, pair = scheme.template
        specials = [token for token in scheme.vocabulary if token in single]
        tokenizer.post_processor = TemplateProcessing(
            single=single, pair=pair, special_tokens=[(token, tokenizer.token_to_id(token)) for token in specials])
    tokens = {**scheme.special_tokens, "eos_token": scheme.eos_token}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=1_000_000, **tokens)


def build_tokenizer(data_args, vocab_size: int, cache_root: str | Path | None,
                    scheme: TokenizerScheme) -> PreTrainedTokenizerFast:
    if data_args.tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(data_args.tokenizer_name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    source, splits, _ = load_texts(data_args, "embedded:bbcnews")
    texts = splits["train"]["text"]
    key = hashlib.sha256(f"{source}|{data_args.split_seed}|{vocab_size}|{len(texts)}".encode())
    if scheme.template is not None:  # a scheme's tokens and template make another tokenizer
        key.update(json.dumps([scheme.special_tokens, scheme.eos_token, scheme.template]).encode())
    for text in texts[:: max(1, len(texts) // 64)]:
        key.update(text.encode())
    cache = Path(cache_root) / f"tokenizer-{key.hexdigest()[:16]}" if cache_root else None
    if cache is not None and (cache / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(cache))
    tokenizer = train_bpe(texts, vocab_size, scheme)
    if cache is not None:
        try:
            with atomic_dir(cache) as tmp:
                tokenizer.save_pretrained(str(tmp))
        except OSError:
            # the ranks of a multi-process member train the same tokenizer at once: the one that renamed its folder
            # last may find the other's in the way; that cache holds this very tokenizer
            if not (cache / "tokenizer.json").is_file():
                raise
    return tokenizer
