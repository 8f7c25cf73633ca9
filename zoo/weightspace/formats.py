"""A checkpoint's tensors in the three formats of `WeightDataset`, and the flat and layers formats back to a state
dict. Tensors are read one at a time from an open safetensors file, in the order of a `TensorTable`.

- flat: one float32 vector, the tensors flattened one after another (offsets and lengths in the table).
- layers: one list per module (layer) of float32 tensors in their own shapes.
- tokens: every tensor as rows of one output unit each (dim 0; a 1-D tensor or a scalar is one row), each row cut
  into chunks of `token_size` values (the last padded with zeros), stacked into `[n, token_size]`, with a mask of
  the real values and `[n, 3]` positions (layer index, tensor index within the layer, row index; the chunks of one
  row share its position and follow each other).

Statistics (tensor name -> (mean, std)) normalise each tensor as (x - mean) / std; `to_state_dict` undoes it. A state
dict from the flat or layers format casts each tensor back to its saved dtype: equal bit for bit to the checkpoint
for float32, float16 and bfloat16 tensors (and integers up to 2**24).
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import WeightSpaceError
from .tensor_layout import TensorTable

Stats = dict[str, tuple[float, float]]


def _read(handle: Any, table: TensorTable, index: int, stats: Stats | None) -> torch.Tensor:
    """Row `index` of the table as a float32 tensor, normalised when `stats` holds its name."""
    name = table.rows[index].name
    tensor = handle.get_tensor(name).to(torch.float32)
    if stats is not None and name in stats:
        mean, std = stats[name]
        tensor = (tensor - mean) / std
    return tensor


def read_flat(handle: Any, table: TensorTable, stats: Stats | None = None) -> torch.Tensor:
    """The checkpoint as one float32 vector."""
    vector = torch.empty(table.numel, dtype=torch.float32)
    for index, row in enumerate(table.rows):
        vector[row.offset:row.offset + row.length] = _read(handle, table, index, stats).reshape(-1)
    return vector


def read_layers(handle: Any, table: TensorTable, stats: Stats | None = None) -> list[list[torch.Tensor]]:
    """The checkpoint as one list of tensors per layer."""
    return [[_read(handle, table, index, stats) for index in group] for group in table.layers()]


def tensor_tokens(tensor: torch.Tensor, token_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [n, token_size], mask [n, token_size], row index [n]) of one tensor."""
    rows = tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.reshape(1, -1)
    count, width = rows.shape
    chunks = max(1, -(-width // token_size))
    padded = torch.zeros(count, chunks * token_size, dtype=rows.dtype)
    padded[:, :width] = rows
    mask = torch.zeros(count, chunks * token_size, dtype=torch.bool)
    mask[:, :width] = True
    row_index = torch.arange(count).repeat_interleave(chunks)
    return padded.reshape(-1, token_size), mask.reshape(-1, token_size), row_index


def read_tokens(handle: Any, table: TensorTable, token_size: int,
                stats: Stats | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checkpoint as (tokens [n, token_size], mask [n, token_size], positions [n, 3])."""
    tokens, masks, positions = [], [], []
    for layer, group in enumerate(table.layers()):
        for within, index in enumerate(group):
            if table.rows[index].length == 0:
                continue
            values, mask, rows = tensor_tokens(_read(handle, table, index, stats), token_size)
            tokens.append(values)
            masks.append(mask)
            positions.append(torch.stack([torch.full_like(rows, layer), torch.full_like(rows, within), rows], 1))
    if not tokens:
        return (torch.zeros(0, token_size), torch.zeros(0, token_size, dtype=torch.bool),
                torch.zeros(0, 3, dtype=torch.long))
    return torch.cat(tokens), torch.cat(masks), torch.cat(positions)


def _restored(tensor: torch.Tensor, table: TensorTable, index: int, stats: Stats | None) -> torch.Tensor:
    """A tensor of the flat or layers format as the checkpoint saved it: denormalised, shaped, its own dtype."""
    row = table.rows[index]
    tensor = tensor.detach().to("cpu", torch.float32)
    if stats is not None and row.name in stats:
        mean, std = stats[row.name]
        tensor = tensor * std + mean
    return tensor.reshape(row.shape).to(table.torch_dtype(index)).clone()


def state_dict_from_flat(vector: torch.Tensor, table: TensorTable, stats: Stats | None = None) -> dict[str, Any]:
    """{name: tensor} of a flat vector."""
    vector = torch.as_tensor(vector)
    if vector.dim() != 1 or vector.numel() != table.numel:
        raise WeightSpaceError(f"a flat vector of this dataset has {table.numel} values in one dimension, got shape "
                               f"{list(vector.shape)}")
    return {row.name: _restored(vector[row.offset:row.offset + row.length], table, index, stats)
            for index, row in enumerate(table.rows)}


def state_dict_from_layers(layers: list[list[torch.Tensor]], table: TensorTable,
                           stats: Stats | None = None) -> dict[str, Any]:
    """{name: tensor} of per-layer tensor lists."""
    groups = table.layers()
    if len(layers) != len(groups) or any(len(got) != len(group) for got, group in zip(layers, groups)):
        raise WeightSpaceError(f"layers of this dataset are {len(groups)} lists of "
                               f"{[len(group) for group in groups]} tensors; got {[len(got) for got in layers]}")
    state: dict[str, Any] = {}
    for got, group in zip(layers, groups):
        for tensor, index in zip(got, group):
            if tuple(tensor.shape) != table.rows[index].shape:
                raise WeightSpaceError(f"tensor {table.rows[index].name}: shape {list(tensor.shape)}, expected "
                                       f"{list(table.rows[index].shape)}")
            state[table.rows[index].name] = _restored(tensor, table, index, stats)
    return state
