"""The documented order of a checkpoint's tensors, and its tensor layout: the order of `WeightDataset`'s formats
and of the published `weights` vectors and `tensor_layouts` table.

Order: tensors sorted by their module path (the name without its last component), then by their own last
component, each compared in natural order (runs of digits as numbers: `layers.2` before `layers.10`). The tensors of
one module are thus next to each other. A layout lists them in that order with dtype, shape, and offset and length
(`numel`) in the flat vector; checkpoints with equal layouts share a `layout_id`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """`layers.10.weight` -> ('layers.', 10, '.weight'): digits compare as numbers, the rest as text."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(_DIGITS.split(text)))


def module_of(name: str) -> str:
    """The module a tensor belongs to: its name without the last component (`a.b.weight` -> `a.b`)."""
    return name.rpartition(".")[0]


def tensor_order_key(name: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The sort key of the documented tensor order: (module path, last component), both in natural order."""
    module, _, leaf = name.rpartition(".")
    return natural_key(module), natural_key(leaf)


def tensor_layout(header: dict[str, Any]) -> list[dict[str, Any]]:
    """A parsed safetensors header (`read_safetensors_header`) as its tensors in the documented order: name, dtype,
    shape, and offset and numel in the flat vector."""
    entries, offset = [], 0
    for name in sorted((key for key in header if key != "__metadata__"), key=tensor_order_key):
        shape = [int(dim) for dim in header[name]["shape"]]
        numel = 1
        for dim in shape:
            numel *= dim
        entries.append({"name": name, "dtype": header[name]["dtype"], "shape": shape, "offset": offset,
                        "numel": numel})
        offset += numel
    return entries


def layout_id(entries: list[dict[str, Any]]) -> str:
    """A short digest of a layout's names, dtypes and shapes: equal for checkpoints of equal layouts."""
    described = [[entry["name"], entry["dtype"], list(entry["shape"])] for entry in entries]
    return hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()[:16]
