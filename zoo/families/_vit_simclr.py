"""The training model of SimCLR pretraining: a ViT backbone and a projection head; a member saves the backbone."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import ViTConfig, ViTModel
from transformers.models.vit.modeling_vit import ViTPreTrainedModel


class ViTForSimCLR(ViTPreTrainedModel):
    """A ViT backbone and a SimCLR projection head; only the backbone (`saved_model`) goes into a checkpoint."""

    def __init__(self, config: ViTConfig, projection_dim: int = 64):
        super().__init__(config)
        self.vit = ViTModel(config, add_pooling_layer=False)
        hidden = config.hidden_size
        self.projector = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, projection_dim))
        self.post_init()

    @property
    def saved_model(self) -> ViTModel:
        return self.vit

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        cls = self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]
        return self.projector(cls)
