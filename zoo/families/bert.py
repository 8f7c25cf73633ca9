"""BERT (`BertForMaskedLM`, `BertForSequenceClassification`): masked-LM pretraining, a pooler + head to classify."""

from __future__ import annotations

from zoo.families import Family, TokenizerScheme, register
from zoo.families._shared import encoder_sizes


def bert_config(model_args, tokenizer=None, positions: int = 0, **_):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), max_position_embeddings=positions,
                      pad_token_id=tokenizer.pad_token_id, **encoder_sizes(model_args))


BERT = register(Family(
    name="bert", modality="language", model_type="bert", build_config=bert_config,
    classes={"masked_lm": "BertForMaskedLM", "sequence_classification": "BertForSequenceClassification",
             "backbone": "BertModel"},
    vocabulary_head="cls",
    encoder_attribute="bert", head_module="classifier", head_prefixes=("cls.", "pooler", "classifier"),
    layer_prefix="encoder.layer", dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    positions_key="max_position_embeddings",
    # [SEP] also ends each document when a corpus is packed into blocks
    tokenizer=TokenizerScheme({"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                               "sep_token": "[SEP]", "mask_token": "[MASK]"}, eos_token="[SEP]",
                              template=("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1")),
    new_in_classifier=("pooler",),  # the masked-LM parent has no pooler: it trains with the head
    description="BERT encoder (learned positions, post-norm, masked-LM head)",
))
