"""A data source opened as `datasets` splits: its columns checked or picked, its train / validation / test splits
carved by seed, and what a member records about them (`split_info`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk

import zoo.data.embedded as embedded

IMAGE_COLUMNS = ("image", "img", "pixel_values")
TEXT_COLUMNS = ("text", "sentence", "content", "review")
LABEL_COLUMNS = ("label", "labels", "fine_label", "coarse_label", "category")


COLUMN_KINDS = ("image", "text", "label")
# The columns of embedded sets and dumps, by the names a user may give them
BUILT_COLUMNS = {"image": ("image", "pixel_values"), "text": ("text",), "label": ("label", "labels")}


class DataError(ValueError):
    """A data source, split or column that does not exist."""


@dataclass
class TaskData:
    splits: DatasetDict
    label_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def check_columns(data_args, source: str, kinds: tuple[str, ...], allowed: dict[str, tuple[str, ...]]) -> None:
    """Columns named by the arguments must exist in data sets whose columns are fixed (embedded sets, dumps)."""
    for kind in kinds:
        wanted = getattr(data_args, f"{kind}_column", None)
        if wanted and wanted not in allowed.get(kind, ()):
            columns = sorted({name for names in allowed.values() for name in names})
            raise DataError(f"{kind}_column {wanted!r} not in the data set {source} (columns: {', '.join(columns)})")


def load_embedded(data_args, source: str, kinds: tuple[str, ...]) -> tuple[Any, list[int], list[str]]:
    """The (inputs, labels, label names) of embedded set `source`, after checking the columns of `kinds` named by
    the arguments."""
    check_columns(data_args, source, kinds, {kind: BUILT_COLUMNS[kind] for kind in kinds})
    return getattr(embedded, source.split(":", 1)[1])()


# ---------------------------------------------------------------- sources


def load_source(data_args, default: str) -> tuple[str, DatasetDict | None]:
    source = data_args.dataset or default
    if source.startswith("embedded:"):
        name = source.split(":", 1)[1]
        if name not in embedded.EMBEDDED:
            raise DataError(f"dataset {source!r}: unknown embedded set (choose from {', '.join(embedded.EMBEDDED)})")
        return source, None
    path = Path(source)
    try:
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            loaded = load_from_disk(str(path))
        elif path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file():
            loaded = DatasetDict({data_args.train_split: load_from_disk(str(path))})
        else:
            if not path.exists():
                _check_hub_reachable(source)
            loaded = load_dataset(source, data_args.dataset_config)
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"dataset {source!r}: not found ({str(err).splitlines()[0]})") from None
    except Exception as err:  # noqa: BLE001 - the Hub raises many kinds; report one line
        raise DataError(f"dataset {source!r}: cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0]})") \
            from None
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({data_args.train_split: loaded})
    return source, loaded


def _check_hub_reachable(source: str, timeout: float = 5.0) -> None:
    """Fail at the first connection error instead of minutes of retries when the Hub cannot be reached.
    With HF_HUB_OFFLINE set, `load_dataset` reads its cache and fails fast by itself."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise DataError(f"dataset {source!r}: not a local folder, and the Hub at {constants.ENDPOINT} cannot be "
                        f"reached ({err.strerror or err}); for a data set in the local cache set HF_HUB_OFFLINE=1"
                        ) from None


def first_split(loaded: DatasetDict, data_args) -> Dataset:
    """The split whose columns and labels stand for the whole source: the train split, else the first one."""
    return loaded[data_args.train_split] if data_args.train_split in loaded else next(iter(loaded.values()))


def pick_column(dataset: Dataset, wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    columns = dataset.column_names
    if wanted:
        if wanted not in columns:
            raise DataError(f"{what}_column {wanted!r} not in the data set (columns: {', '.join(columns)})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"no {what} column found among {', '.join(columns)}; set --{what}_column")


def label_names(dataset: Dataset, column: str) -> list[str]:
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = sorted(set(dataset[column]))
    return [str(value) for value in values]


# ---------------------------------------------------------------- splits


def make_splits(data: DatasetDict, data_args) -> DatasetDict:
    """train / validation / test: the source's own splits when named or present, else carved from train by seed."""
    if data_args.train_split not in data:
        raise DataError(f"train_split {data_args.train_split!r} not in the data set (has: {', '.join(data)})")
    train = data[data_args.train_split]
    test_name = data_args.test_split or ("test" if "test" in data and data_args.train_split != "test" else None)
    if test_name is not None and test_name not in data:
        raise DataError(f"test_split {test_name!r} not in the data set (has: {', '.join(data)})")
    if test_name is None:
        parts = train.train_test_split(test_size=data_args.test_fraction, seed=data_args.split_seed)
        train, test = parts["train"], parts["test"]
    else:
        test = data[test_name]
    if data_args.validation_split:
        if data_args.validation_split not in data:
            raise DataError(f"validation_split {data_args.validation_split!r} not in the data set")
        validation = data[data_args.validation_split]
    else:
        parts = train.train_test_split(test_size=data_args.validation_fraction, seed=data_args.split_seed + 1)
        train, validation = parts["train"], parts["test"]
    train = train.shuffle(seed=data_args.split_seed)
    if data_args.max_train_samples:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))
        test = test.select(range(min(data_args.max_eval_samples, len(test))))
    return DatasetDict(train=train, validation=validation, test=test)


def split_info(source: str, splits: DatasetDict, data_args, **extra: Any) -> dict[str, Any]:
    """What a member's config.json records about its data: enough to rebuild the same held-out splits."""
    info = {
        "source": source,
        "dataset_config": data_args.dataset_config,
        "split_seed": data_args.split_seed,
        "test_fraction": data_args.test_fraction,
        "validation_fraction": data_args.validation_fraction,
        "splits": {name: len(split) for name, split in splits.items()},
    }
    columns = {kind: getattr(data_args, f"{kind}_column", None) for kind in COLUMN_KINDS}
    if any(columns.values()):
        info["columns"] = {kind: name for kind, name in columns.items() if name}
    digest = hashlib.sha256()
    for name in ("validation", "test"):
        if "labels" in splits[name].column_names:
            digest.update(np.asarray(splits[name]["labels"], dtype=np.int64).tobytes())
    info["heldout_labels_sha256"] = digest.hexdigest()[:16]
    info.update(extra)
    return info


def set_pixel_format(splits: DatasetDict) -> None:
    """Serve `pixel_values` as uint8 arrays (the torch/numpy formats widen integers to int64: 8x the bytes to copy
    to the device); other columns stay as they are and the collator tensorises them."""
    columns = splits["train"].column_names
    if "pixel_values" in columns:
        splits.set_format("numpy", columns=["pixel_values"], dtype=np.uint8, output_all_columns=True)
    elif "attention_mask" not in columns:  # packed LM blocks; ragged text stays as lists for the padding collator
        splits.set_format("numpy")
