"""What several families share: the recipe's sizes under the names of the BERT/ViT-style configs, the tokenizer's
special-token ids, and the GPT-2-style tokenizer scheme (one end-of-text token for everything)."""

from __future__ import annotations

from typing import Any

from zoo.families import Family, TokenizerScheme

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_SCHEME = TokenizerScheme({"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT,
                                      "pad_token": END_OF_TEXT}, eos_token=END_OF_TEXT)


def check_heads(model_args) -> None:
    if model_args.hidden_size % model_args.num_attention_heads:
        raise ValueError(f"hidden_size {model_args.hidden_size} is not a multiple of num_attention_heads "
                         f"{model_args.num_attention_heads}")


def encoder_sizes(model_args) -> dict[str, Any]:
    """Sizes and dropout in the config names that ViT and BERT share."""
    check_heads(model_args)
    return {"hidden_size": model_args.hidden_size, "num_hidden_layers": model_args.num_hidden_layers,
            "num_attention_heads": model_args.num_attention_heads, "intermediate_size": model_args.intermediate_size,
            "hidden_dropout_prob": model_args.hidden_dropout,
            "attention_probs_dropout_prob": model_args.attention_dropout, "initializer_range": model_args.init_std}


def token_ids(tokenizer) -> dict[str, Any]:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def causal_decoder(name: str, **fields: Any) -> Family:
    """A decoder-only language family as transformers lays them out: the vocabulary head `lm_head`, a `score`
    head to classify a sequence (from its last token), a GPT-2-style tokenizer scheme; `fields` give the rest."""
    return Family(name=name, modality="language", model_type=name, vocabulary_head="lm_head", head_module="score",
                  head_prefixes=("lm_head", "score"), tokenizer=END_OF_TEXT_SCHEME, **fields)
