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
# Special tokens per scheme: GPT-2 style (one end-of-text token for everything) or BERT style.
BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}
SCHEMES = ("gpt2", "bert")


def train_bpe(texts: list[str], vocab_size: int, scheme: str = "gpt2") -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`. The `bert` scheme adds [CLS] text [SEP] around every encoded text,
    and its [SEP] ends each document when a corpus is packed into blocks."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing

    if scheme not in SCHEMES:
        raise ValueError(f"tokenizer scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    specials = [SPECIAL] if scheme == "gpt2" else list(BERT_SPECIALS.values())
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                            show_progress=False)
    if scheme == "gpt2":
        return PreTrainedTokenizerFast(
            tokenizer_object=bpe._tokenizer,  # the wrapped `tokenizers.Tokenizer`
            bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL,
            model_max_length=1_000_000,
        )
    tokenizer = bpe._tokenizer
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                  special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    # [SEP] also serves as the end-of-document token when packing blocks
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="[SEP]", model_max_length=1_000_000,
                                   **BERT_SPECIALS)


def build_tokenizer(data_args, vocab_size: int, cache_root: str | Path | None,
                    scheme: str = "gpt2") -> PreTrainedTokenizerFast:
    if data_args.tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(data_args.tokenizer_name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    source, splits, _ = load_texts(data_args, "embedded:bbcnews")
    texts = splits["train"]["text"]
    key = hashlib.sha256(f"{source}|{data_args.split_seed}|{vocab_size}|{len(texts)}".encode())
    if scheme != "gpt2":
        key.update(scheme.encode())
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
