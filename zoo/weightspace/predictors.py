"""Two small models that read a batch of weights and predict one number per checkpoint (plain torch).

- `FlatMLP`: an MLP on the `flat` format (`batch["weights"]`, `[batch, n]`): members of one tensor layout.
- `TokenTransformer`: a transformer encoder on the `tokens` format (`weights`, `mask`, `positions` of
  `collate_tokens`), for members of any architecture. Each token is its `token_size` values projected to `width`
  plus learned embeddings of its three positions (layer index, tensor index within the layer, row; each clamped to
  its table's size). Attention runs within windows of `window` consecutive tokens: in training one random window
  per checkpoint (drawn from the model's own seeded generator), in evaluation every window in turn. The encoded
  tokens are mean-pooled over the real (unpadded) ones and a linear head maps the mean to the prediction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

POSITION_TABLES = (512, 64, 4096)  # embedding rows for layer index, tensor index within the layer, row


class FlatMLP(nn.Module):
    """`numel` weights -> `hidden` (layer norm, GELU, dropout) -> `hidden` (GELU) -> one prediction."""

    def __init__(self, numel: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(numel, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.net(batch["weights"]).squeeze(-1)


def random_windows(lengths: torch.Tensor, padded: int, window: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(token indices [batch, w], real [batch, w]) of one window of w = min(window, padded) consecutive tokens per
    sequence, starting anywhere the window fits within the sequence's `lengths` real tokens."""
    width = min(window, padded)
    room = (lengths - width).clamp(min=0)
    starts = (torch.rand(len(lengths), generator=generator) * (room + 1)).long().minimum(room)
    index = starts[:, None] + torch.arange(width)
    return index.clamp(max=padded - 1), index < lengths[:, None]


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b, i]] for a `[batch, n, k]` tensor."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[2]))


class TokenTransformer(nn.Module):
    """Weight tokens -> value and position embeddings -> encoder (attention within windows) -> masked mean -> head."""

    def __init__(self, token_size: int = 64, width: int = 64, layers: int = 2, heads: int = 4, window: int = 512,
                 dropout: float = 0.0, seed: int = 0):
        super().__init__()
        self.window = window
        self.values = nn.Linear(token_size, width)
        self.positions = nn.ModuleList(nn.Embedding(rows, width) for rows in POSITION_TABLES)
        block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))
        self.generator = torch.Generator().manual_seed(seed)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[batch, n, width]: each token's values and its three positions, embedded and summed."""
        embedded = self.values(tokens)
        for axis, table in enumerate(self.positions):
            embedded = embedded + table(positions[..., axis].clamp(0, table.num_embeddings - 1))
        return embedded

    def encode(self, tokens: torch.Tensor, positions: torch.Tensor,
               real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the encoded real tokens [batch, width], their count [batch]) of one window of tokens."""
        padding = ~real & real.any(1, keepdim=True)  # a window with no real token attends to all (then dropped)
        encoded = self.encoder(self.embed(tokens, positions), src_key_padding_mask=padding if padding.any() else None)
        weights = real.unsqueeze(-1).to(encoded.dtype)
        return (encoded * weights).sum(1), weights.sum((1, 2))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        tokens, positions = batch["weights"], batch["positions"]
        real = batch["mask"].any(-1)  # real tokens come first in each sequence, padding after
        if self.training:
            index, inside = random_windows(real.sum(1), tokens.shape[1], self.window, self.generator)
            total, count = self.encode(_gather(tokens, index), _gather(positions, index), inside)
        else:
            total, count = torch.zeros(len(tokens), self.values.out_features), torch.zeros(len(tokens))
            for start in range(0, tokens.shape[1], self.window):
                part = slice(start, start + self.window)
                window_total, window_count = self.encode(tokens[:, part], positions[:, part], real[:, part])
                total, count = total + window_total, count + window_count
        return self.head(total / count.clamp(min=1).unsqueeze(-1)).squeeze(-1)
