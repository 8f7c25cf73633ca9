"""GPT-2 (`GPT2LMHeadModel`, `GPT2ForSequenceClassification`): learned positions, LayerNorm, GELU MLP."""

from __future__ import annotations

from zoo.families import register
from zoo.families._shared import causal_decoder, check_heads, token_ids


def gpt2_config(model_args, tokenizer=None, positions: int = 0, **_):
    from transformers import GPT2Config

    check_heads(model_args)
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=positions, n_embd=model_args.hidden_size,
        n_layer=model_args.num_hidden_layers, n_head=model_args.num_attention_heads,
        n_inner=model_args.intermediate_size, resid_pdrop=model_args.hidden_dropout,
        embd_pdrop=model_args.hidden_dropout, attn_pdrop=model_args.attention_dropout,
        initializer_range=model_args.init_std, **token_ids(tokenizer),
        # GPT-2's tanh GELU as one fused kernel: the default `gelu_new` computes the same formula in 8 small ops
        activation_function="gelu_pytorch_tanh",
    )


GPT2 = register(causal_decoder(
    "gpt2", build_config=gpt2_config, encoder_attribute="transformer", layer_prefix="h",
    classes={"causal_lm": "GPT2LMHeadModel", "sequence_classification": "GPT2ForSequenceClassification",
             "backbone": "GPT2Model"},
    dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop"), positions_key="n_positions",
    description="GPT-2 decoder (learned positions, LayerNorm, GELU MLP)",
))
