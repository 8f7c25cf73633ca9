"""Whole data sets as tensors: a batch is one index into each column, not a list of rows stacked again.

`datasets` serves a batch row by row (Arrow -> numpy -> one dict per row) and the collator stacks the rows again;
for the zoo's fixed-shape columns (uint8 images, packed token blocks) that costs as much as a tiny model's step.
`TensorBatches` holds each column as one tensor (on the GPU when it fits) and answers the `DataLoader`'s
`__getitems__(indices)` with the finished batch, so the sampler, sharding and resume logic stay the Trainer's own
and a batch holds exactly what `default_data_collator` would have made from the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Host memory a data set may take as tensors; larger ones keep the row-by-row path (and its workers).
MAX_HOST_BYTES = 4 << 30
# Share of the free device memory a data set may take on the device.
DEVICE_SHARE = 0.25


class TensorBatches(torch.utils.data.Dataset):
    """Columns of equal length as tensors; `__getitems__` returns the collated batch."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = columns
        self._length = lengths.pop()

    def __len__(self) -> int:
        return self._length

    @property
    def device(self) -> torch.device:
        return next(iter(self.columns.values())).device

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.columns.values())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.columns.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.device.type != "cpu":
            index = index.to(self.device, non_blocking=True)
        return {k: v.index_select(0, index) for k, v in self.columns.items()}

    def to(self, device: torch.device | str) -> TensorBatches:
        return TensorBatches({k: v.to(device) for k, v in self.columns.items()})


def collate_batch(batch: Any) -> Any:
    """The `collate_fn` of a `TensorBatches` loader: the batch is already made."""
    return batch


def _column_tensor(values: Any) -> torch.Tensor | None:
    """A column as `default_data_collator` would batch it (numpy arrays keep their dtype, Python ints become
    int64, Python floats float32); None for ragged or non-numeric columns."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        array = values
    else:
        try:
            array = np.asarray(values)
        except ValueError:  # ragged
            return None
        if array.dtype == object:
            return None
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
    if array.dtype.kind not in "biuf":
        return None
    return torch.from_numpy(np.ascontiguousarray(array))


def tensor_batches(dataset, max_bytes: int = MAX_HOST_BYTES) -> TensorBatches | None:
    """A `datasets.Dataset` in the numpy format with fixed-shape numeric columns as `TensorBatches` (on the host),
    or None when it does not qualify (a custom transform, ragged or text columns, or too large)."""
    import datasets

    if not isinstance(dataset, datasets.Dataset) or len(dataset) == 0:
        return None
    if dataset.format.get("type") != "numpy" or dataset.format.get("format_kwargs", {}).get("dtype") not in (
            None, np.uint8):
        return None
    if dataset.data.nbytes > max_bytes:
        return None
    rows = dataset[:]
    columns = {}
    for name in dataset.column_names:
        tensor = _column_tensor(rows[name])
        if tensor is None:
            return None
        columns[name] = tensor
    return TensorBatches(columns)


_CACHE: dict[tuple, TensorBatches | None] = {}
CACHE_ENTRIES = 4  # data sets kept per process (a zoo's members share their splits)


def cached_tensor_batches(dataset, device: torch.device) -> TensorBatches | None:
    """`tensor_batches` of a data set, moved to `device` when it fits there; made once per process for every
    member that trains on the same splits (keyed by the data set's fingerprint and format)."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    key = (fingerprint, repr(getattr(dataset, "format", None)), len(dataset) if fingerprint else id(dataset),
           str(device))
    if fingerprint is None or key not in _CACHE:
        batches = tensor_batches(dataset)
        if batches is not None and fits_on_device(batches, device):
            batches = batches.to(device)
        if fingerprint is None:
            return batches
        while len(_CACHE) >= CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = batches
    return _CACHE[key]


def fits_on_device(batches: TensorBatches, device: torch.device) -> bool:
    """Whether a data set may live on `device`: a GPU whose free memory it uses at most `DEVICE_SHARE` of."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return batches.nbytes <= DEVICE_SHARE * free
