"""Weights as data: the checkpoints of a zoo as a PyTorch dataset of weights, in the three formats weight-space
learning uses, with each checkpoint's properties and splits by member.

    from torch.utils.data import DataLoader
    from zoo.weightspace import WeightDataset, collate_flat

    train = WeightDataset("my-zoo", format="flat", split="train", kind="vit-supervised")  # or "org/zoo"
    loader = DataLoader(train, batch_size=8, num_workers=2, collate_fn=collate_flat)

Modules: `dataset` (`WeightDataset`), `sources` (where members and checkpoints come from: `Source`, `LocalZoo`),
`hub` (a published zoo by its dataset repo id: `HubZoo`),
`selection` (filters and chosen checkpoints), `properties` (each checkpoint's properties), `splits` (splits by
member, `<zoo>/splits.json`), `tensor_layout` (the tensor order and the flat layout), `formats` (flat, layers and
tokens, and back to a state dict), `normalization` (per-tensor statistics over the train split, cached under
`<zoo>/.cache/weightspace/`), `collate` (one collate per format), `errors` (`WeightSpaceError`).

Checkpoints are read with `safetensors.safe_open` only (memory-mapped, one checkpoint at a time); nothing is
unpickled. This package sits in the studies layer: only `zoo.cli` may import it.
"""

from .collate import collate_flat, collate_layers, collate_properties, collate_tokens
from .dataset import FORMATS, WeightDataset
from .errors import WeightSpaceError
from .hub import HubZoo
from .normalization import train_stats
from .selection import CHECKPOINT_CHOICES, Filters
from .sources import LocalZoo, Source, SourceMember, as_source
from .splits import (
    DEFAULT_FRACTIONS,
    SPLIT_BY,
    SPLITS,
    SPLITS_FILE,
    SplitAssignment,
    assign_splits,
    hashed_split,
    read_splits,
)
from .tensor_layout import TensorRow, TensorTable, natural_key, tensor_order_key

__all__ = [
    "CHECKPOINT_CHOICES", "DEFAULT_FRACTIONS", "FORMATS", "SPLITS", "SPLITS_FILE", "SPLIT_BY", "Filters", "HubZoo",
    "LocalZoo", "Source", "SourceMember", "SplitAssignment", "TensorRow", "TensorTable", "WeightDataset",
    "WeightSpaceError", "as_source", "assign_splits", "collate_flat", "collate_layers", "collate_properties",
    "collate_tokens", "hashed_split", "natural_key", "read_splits", "tensor_order_key", "train_stats",
]
