"""Config values several families share: the recipe's sizes under the names of the BERT/ViT-style configs, and the
tokenizer's special-token ids."""

from __future__ import annotations

from typing import Any


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
