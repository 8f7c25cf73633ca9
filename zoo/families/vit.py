"""ViT (`ViTForImageClassification`, `ViTModel`): supervised or SimCLR pretraining, and new heads for finetuning."""

from __future__ import annotations

from zoo.families import Family, register
from zoo.families._shared import encoder_sizes


def vit_config(model_args, **_):
    from transformers import ViTConfig

    if model_args.image_size % model_args.patch_size:
        raise ValueError(f"image_size {model_args.image_size} is not a multiple of patch_size {model_args.patch_size}")
    return ViTConfig(image_size=model_args.image_size, patch_size=model_args.patch_size,
                     num_channels=model_args.num_channels, **encoder_sizes(model_args))


VIT = register(Family(
    name="vit", modality="vision", model_type="vit", build_config=vit_config,
    classes={"image_classification": "ViTForImageClassification", "backbone": "ViTModel",
             "contrastive": "zoo.families._vit_simclr:ViTForSimCLR"},
    encoder_attribute="vit", head_module="classifier", head_prefixes=("classifier", "pooler"),
    layer_prefix="encoder.layer", dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    # a finetuned ViT is a new classifier around the parent's backbone (a SimCLR parent saves its backbone only)
    extra={"classifier_from_backbone": True, "backbone_kwargs": {"add_pooling_layer": False}},
    description="stock ViT (patch embeddings, pre-norm encoder, CLS token)",
))
