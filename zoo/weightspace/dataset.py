"""`WeightDataset`: the checkpoints of a zoo as a `torch.utils.data.Dataset` of weights and properties.

    dataset = WeightDataset("my-zoo", format="flat", split="train", modality="vision")
    item = dataset[0]   # {"weights": tensor [n], "properties": {...}, "member": relpath, "checkpoint": folder}
    state = dataset.to_state_dict(item["weights"])   # the checkpoint's tensors, bit for bit

Items are read one checkpoint at a time from memory-mapped safetensors files (`formats` says what each format
holds, `tensor_layout` the tensor order, `properties` the property keys). The flat and layers formats need one
tensor layout across the selection (`dataset.layout`, `dataset.layer_names`); tokens take members of any layout.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from .errors import WeightSpaceError
from .formats import read_flat, read_layers, read_tokens, state_dict_from_flat, state_dict_from_layers
from .normalization import train_stats
from .selection import Entry, Filters, select
from .sources import Source, as_source
from .splits import SPLITS
from .tensor_layout import TensorRow, TensorTable

FORMATS = ("flat", "layers", "tokens")


def _check_choice(what: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise WeightSpaceError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")


class WeightDataset(Dataset):
    """The selected (member, checkpoint) pairs of a zoo, one item each, in member then epoch order.

    `source`: a zoo folder or a `Source`. `format`: flat, layers or tokens. `split`: keep one split of the zoo's
    members (splits.json, assigned with the defaults when the zoo has none). `modality`, `stage`, `kind`, `parent`
    (a parent's path or name), `factors` ({name: value or list of values}): keep the complete members that match.
    `checkpoints`: "last", "all" or a list of epochs. `token_size`: values per token (tokens format).
    `normalize`: standardise each tensor by its mean and std over the train split (cached; `to_state_dict`
    undoes it).
    """

    def __init__(self, source: Source | str, format: str = "flat", split: str | None = None, modality: Any = None,
                 stage: Any = None, kind: Any = None, parent: Any = None, factors: dict[str, Any] | None = None,
                 checkpoints: Any = "last", token_size: int = 64, normalize: bool = False,
                 revision: str | None = None):
        _check_choice("format", format, FORMATS)
        _check_choice("split", split, (None, *SPLITS))
        if not isinstance(token_size, int) or token_size < 1:
            raise WeightSpaceError(f"token_size must be a positive integer, got {token_size!r}")
        self.source = as_source(source, revision)  # a zoo folder, or a published zoo's repo id (at `revision`)
        self.format, self.split, self.token_size = format, split, token_size
        self.filters = Filters(modality, stage, kind, parent, factors, checkpoints)
        splits = self.source.splits(assign=split is not None or normalize)
        selected, self.property_keys = select(self.source, self.filters, splits)
        if not selected:
            raise WeightSpaceError(f"{self.source}: no complete member has a checkpoint matching "
                                   f"{self.filters.describe()}")
        self.entries: list[Entry] = [entry for entry in selected if split in (None, entry.properties["split"])]
        if not self.entries:
            raise WeightSpaceError(f"{self.source}: none of the {len(selected)} selected checkpoints is in the "
                                   f"{split} split")
        self.table = self._shared_table()
        train = [(entry.relpath, entry.epoch) for entry in selected if entry.properties["split"] == "train"]
        self.stats = train_stats(self.source, train) if normalize else None

    def _shared_table(self) -> TensorTable | None:
        """The one tensor table of the selection (read from one checkpoint per member); None for tokens over
        members of different layouts, which the flat and layers formats refuse."""
        first: dict[TensorTable, str] = {}  # table -> the first member that has it
        seen: set[str] = set()
        for entry in self.entries:
            if entry.relpath in seen:
                continue
            seen.add(entry.relpath)
            first.setdefault(self.source.table(entry.relpath, entry.epoch), entry.relpath)
            if len(first) > 1:
                if self.format == "tokens":
                    return None
                one, other = first.values()
                raise WeightSpaceError(f"format {self.format!r} needs one tensor layout, and members {one} and "
                                       f"{other} differ in tensor names or shapes; narrow the selection (kind=, "
                                       "modality=) or use format='tokens'")
        return next(iter(first))

    @property
    def layout(self) -> list[TensorRow]:
        """(name, shape, offset, length) of each tensor in the flat vector, in order."""
        return list(self._table().rows)

    @property
    def layer_names(self) -> list[list[str]]:
        """The tensor names of each layer of the layers format."""
        return self._table().layer_names()

    def _table(self) -> TensorTable:
        if self.table is None:
            raise WeightSpaceError("the selected members have different tensor layouts: there is no one layout")
        return self.table

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        location = self.source.location(entry.relpath, entry.epoch)
        item: dict[str, Any] = {"properties": dict(entry.properties), "member": entry.relpath,
                                "checkpoint": location}
        with self.source.open_weights(entry.relpath, entry.epoch) as handle:
            table = TensorTable.from_handle(handle)
            if self.table is not None and table != self.table:
                raise WeightSpaceError(f"{location}: its tensors differ from the dataset's layout")
            if self.format == "flat":
                item["weights"] = read_flat(handle, table, self.stats)
            elif self.format == "layers":
                item["weights"] = read_layers(handle, table, self.stats)
            else:
                item["weights"], item["mask"], item["positions"] = read_tokens(handle, table, self.token_size,
                                                                               self.stats)
        return item

    def to_state_dict(self, weights: Any) -> dict[str, Any]:
        """{name: tensor} of one item's flat vector or layer lists, in the checkpoint's dtypes (normalisation
        undone): the checkpoint's own tensors, bit for bit, for weights read unchanged."""
        if self.format == "flat":
            return state_dict_from_flat(weights, self._table(), self.stats)
        if self.format == "layers":
            return state_dict_from_layers(weights, self._table(), self.stats)
        raise WeightSpaceError("to_state_dict takes the weights of the flat or layers format, not tokens")
