"""Llama-style decoders (`LlamaForCausalLM`, `LlamaForSequenceClassification`): rotary positions (RoPE), RMSNorm,
SwiGLU MLP, no biases, input and output embeddings tied (as in GPT-2 and small Llama-style models). There is no
dropout on hidden states in this architecture (`attention_dropout` only)."""

from __future__ import annotations

from zoo.families import register
from zoo.families._shared import causal_decoder, check_heads, token_ids


def llama_config(model_args, tokenizer=None, positions: int = 0, **_):
    from transformers import LlamaConfig

    check_heads(model_args)
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=model_args.hidden_size,
        intermediate_size=model_args.intermediate_size, num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads, num_key_value_heads=model_args.num_attention_heads,
        max_position_embeddings=positions, attention_dropout=model_args.attention_dropout,
        initializer_range=model_args.init_std, tie_word_embeddings=True, **token_ids(tokenizer),
    )


LLAMA = register(causal_decoder(
    "llama", build_config=llama_config, encoder_attribute="model", layer_prefix="layers",
    classes={"causal_lm": "LlamaForCausalLM", "sequence_classification": "LlamaForSequenceClassification",
             "backbone": "LlamaModel"},
    dropout_keys=("attention_dropout",), positions_key="max_position_embeddings",
    absent={"hidden_dropout": 0.0},  # dropout is on attention probabilities only
    description="Llama-style decoder (RoPE, RMSNorm, SwiGLU)",
))
