"""DataLoaders over whole-tensor batches (`zoo.data.device.TensorBatches`), with the Trainer's own loader options.

A data set whose batches are plain stacks of fixed-shape columns is indexed as tensors (on the GPU when it fits)
instead of row by row; everything else keeps the Trainer's row path.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch.utils.data import DataLoader, Sampler
from transformers.data.data_collator import default_data_collator
from transformers.trainer_utils import seed_worker

from zoo.data.device import TensorBatches, cached_tensor_batches, collate_batch


class TensorBatchCache:
    """Each data set's `TensorBatches` (or None where the row path stays), made once per trainer."""

    def __init__(self):
        self._batches: dict[int, tuple[Any, TensorBatches | None]] = {}  # id(dataset) -> (dataset, its batches)

    def get(self, dataset, data_collator, args) -> TensorBatches | None:
        """The data set as `TensorBatches` when its batches are plain stacks of fixed-shape columns, else None
        (custom transforms, padding or masking collators, other samplers keep the row path)."""
        if data_collator is not default_data_collator or args.train_sampling_strategy != "random" \
                or args.remove_unused_columns:
            return None
        key = id(dataset)
        if key not in self._batches:  # the dataset is kept with it so that its id stays unique
            self._batches[key] = (dataset, cached_tensor_batches(dataset, args.device))
        return self._batches[key][1]


def tensor_dataloader(batches: TensorBatches, args, batch_size: int, sampler: Sampler | None,
                      is_training: bool) -> DataLoader:
    """A DataLoader over `batches` with the options the Trainer gives its own (not yet prepared by Accelerate).
    `sampler`: the one the Trainer makes for the data set's rows, so that the order is the row path's."""
    on_host = batches.device.type == "cpu"
    workers = args.dataloader_num_workers if on_host else 0  # device tensors stay in this process
    params: dict[str, Any] = {"batch_size": batch_size, "collate_fn": collate_batch, "num_workers": workers,
                              "pin_memory": args.dataloader_pin_memory and on_host,
                              "drop_last": args.dataloader_drop_last}
    if workers:
        params.update(persistent_workers=args.dataloader_persistent_workers,
                      prefetch_factor=args.dataloader_prefetch_factor,
                      multiprocessing_context=args.dataloader_multiprocessing_context)
    if sampler is not None:
        params["sampler"] = sampler
    if is_training:
        params["worker_init_fn"] = partial(seed_worker, num_workers=workers, rank=args.process_index)
    return DataLoader(batches, **params)
