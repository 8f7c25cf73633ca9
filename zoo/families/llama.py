"""Llama-style decoders (`LlamaForCausalLM`, `LlamaForSequenceClassification`): rotary positions (RoPE), RMSNorm,
SwiGLU MLP, no biases, input and output embeddings tied (as in GPT-2 and small Llama-style models). There is no
dropout on hidden states in this architecture (`attention_dropout` only)."""

from __future__ import annotations

from zoo.families import Family, TokenizerScheme, register
from zoo.families._sizes import check_heads, token_ids

END_OF_TEXT = "<|endoftext|>"


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


LLAMA = register(Family(
    name="llama", modality="language", model_type="llama", build_config=llama_config,
    classes={"causal_lm": "LlamaForCausalLM", "sequence_classification": "LlamaForSequenceClassification",
             "backbone": "LlamaModel"},
    vocabulary_head="lm_head",
    encoder_attribute="model", head_module="score", head_prefixes=("lm_head", "score"), layer_prefix="layers",
    dropout_keys=("attention_dropout",), positions_key="max_position_embeddings",
    absent={"hidden_dropout": 0.0},  # dropout is on attention probabilities only
    tokenizer=TokenizerScheme({"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT,
                               "pad_token": END_OF_TEXT}, eos_token=END_OF_TEXT),
    description="Llama-style decoder (RoPE, RMSNorm, SwiGLU)",
))
