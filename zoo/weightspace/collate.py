"""Batches of `WeightDataset` items, one collate per format (`DataLoader(dataset, collate_fn=collate_flat)`).

Every batch is a dict: `weights` batched as the format says, `properties` as {key: values} (an int64 tensor when
every value is an int, a float64 tensor when all are numbers or None (NaN), else a list), and `member` and
`checkpoint` as lists.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _property_values(values: list[Any]) -> Any:
    """One property across a batch: a tensor where its values are numbers, else the list of values."""
    numbers = [value for value in values if value is not None]
    if not numbers or not all(isinstance(value, (int, float)) for value in numbers):
        return values
    if all(isinstance(value, bool) for value in values):
        return torch.tensor(values, dtype=torch.bool)
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return torch.tensor(values, dtype=torch.int64)
    return torch.tensor([math.nan if value is None else float(value) for value in values], dtype=torch.float64)


def collate_properties(properties: list[dict[str, Any]]) -> dict[str, Any]:
    """{key: batched values} of the items' property dicts."""
    keys = properties[0] if properties else {}
    return {key: _property_values([item.get(key) for item in properties]) for key in keys}


def _batch(items: list[dict[str, Any]], weights: Any) -> dict[str, Any]:
    return {"weights": weights, "properties": collate_properties([item["properties"] for item in items]),
            "member": [item["member"] for item in items], "checkpoint": [item["checkpoint"] for item in items]}


def collate_flat(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat vectors stacked into `[batch, n]`."""
    return _batch(items, torch.stack([item["weights"] for item in items]))


def collate_layers(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Each tensor of each layer stacked across the batch: a list of per-layer lists of `[batch, *shape]`."""
    layers = [item["weights"] for item in items]
    stacked = [[torch.stack([item_layers[layer][index] for item_layers in layers])
                for index in range(len(layers[0][layer]))] for layer in range(len(layers[0]))]
    return _batch(items, stacked)


def collate_tokens(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Token sequences padded to the longest: weights and mask `[batch, n, token_size]` (mask false where padded)
    and positions `[batch, n, 3]` (zeros where padded)."""
    longest = max(item["weights"].shape[0] for item in items)
    token_size = items[0]["weights"].shape[1]
    weights = torch.zeros(len(items), longest, token_size)
    mask = torch.zeros(len(items), longest, token_size, dtype=torch.bool)
    positions = torch.zeros(len(items), longest, 3, dtype=torch.long)
    for index, item in enumerate(items):
        count = item["weights"].shape[0]
        weights[index, :count] = item["weights"]
        mask[index, :count] = item["mask"]
        positions[index, :count] = item["positions"]
    batch = _batch(items, weights)
    batch.update(mask=mask, positions=positions)
    return batch
