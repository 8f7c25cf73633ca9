"""The order and layout of a checkpoint's tensors, the same for every format of `WeightDataset`.

Order: `zoo.layout.tensors`'s documented one (by module path, then by the tensor's own last component, each in
natural order), so the tensors of one module are next to each other, and a module's group is one layer of the
`layers` and `tokens` formats. A `TensorTable` lists the tensors in that order with their shape, dtype, and offset
and length in the flat vector."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from zoo.layout import module_of, natural_key, tensor_order_key

from .errors import WeightSpaceError

__all__ = ["TORCH_DTYPES", "TensorRow", "TensorTable", "module_of", "natural_key", "tensor_order_key"]

# safetensors dtype names -> torch dtypes
TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class TensorRow(NamedTuple):
    """One tensor of a layout: its name, shape, and where it lies in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    length: int


@dataclass(frozen=True)
class TensorTable:
    """The tensors of a checkpoint in the documented order; two checkpoints with equal tables have the same names,
    shapes and dtypes."""

    rows: tuple[TensorRow, ...]
    dtypes: tuple[str, ...]  # safetensors dtype names (`F32`, `BF16`, ...), one per row

    @classmethod
    def from_tensors(cls, tensors: Iterable[tuple[str, Sequence[int], str]]) -> TensorTable:
        """The table of (name, shape, dtype) triples, in any order."""
        rows, dtypes, offset = [], [], 0
        for name, shape, dtype in sorted(tensors, key=lambda item: tensor_order_key(item[0])):
            shape = tuple(int(dim) for dim in shape)
            length = 1
            for dim in shape:
                length *= dim
            rows.append(TensorRow(name, shape, offset, length))
            dtypes.append(str(dtype))
            offset += length
        return cls(tuple(rows), tuple(dtypes))

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> TensorTable:
        """The table of a parsed safetensors header (`layout.read_safetensors_header`)."""
        return cls.from_tensors((name, info["shape"], info["dtype"]) for name, info in header.items()
                                if name != "__metadata__")

    @classmethod
    def from_handle(cls, handle: Any) -> TensorTable:
        """The table of an open `safetensors.safe_open` file."""
        slices = ((name, handle.get_slice(name)) for name in handle.keys())
        return cls.from_tensors((name, part.get_shape(), part.get_dtype()) for name, part in slices)

    @property
    def numel(self) -> int:
        """The length of the flat vector."""
        return self.rows[-1].offset + self.rows[-1].length if self.rows else 0

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def layers(self) -> list[list[int]]:
        """Row indices grouped by module, in order: one list per layer."""
        groups: list[list[int]] = []
        previous = None
        for index, row in enumerate(self.rows):
            module = module_of(row.name)
            if module != previous or not groups:
                groups.append([])
                previous = module
            groups[-1].append(index)
        return groups

    def layer_names(self) -> list[list[str]]:
        """The tensor names of each layer."""
        return [[self.rows[index].name for index in group] for group in self.layers()]

    def torch_dtype(self, index: int) -> torch.dtype:
        """The torch dtype of row `index`."""
        try:
            return TORCH_DTYPES[self.dtypes[index]]
        except KeyError:
            raise WeightSpaceError(f"tensor {self.rows[index].name}: dtype {self.dtypes[index]} is not supported "
                                   f"(supported: {', '.join(TORCH_DTYPES)})") from None
