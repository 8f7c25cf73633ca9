"""Turn a data source (an embedded package, a Hub name, a local folder or a dump) into `datasets` splits.

Every task gets `train`, `validation` and `test` splits, fixed by `split_seed` so that a whole zoo shares them:
- images: `pixel_values` uint8 (C, H, W), `labels`: at the model's size, or (Hub and local sets, decoded once per zoo)
  at their native size when smaller; scaling and normalisation happen on the
  device in the trainer, where augmentation runs on whole batches;
- language modelling: packed blocks of `input_ids` (and `labels`, the same ids);
- text classification: `input_ids`, `attention_mask`, `labels`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features, load_dataset, load_from_disk

from zoo.data import embedded

if not sys.stderr.isatty():  # in a log, a progress bar is a new line at every refresh
    datasets.disable_progress_bars()

DUMP_INFO = "zoo_data.json"
_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_TEXT_COLUMNS = ("text", "sentence", "content", "review")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "coarse_label", "category")


_COLUMN_KINDS = ("image", "text", "label")
# The columns of embedded sets and dumps, by the names a user may give them
_BUILT_COLUMNS = {"image": ("image", "pixel_values"), "text": ("text",), "label": ("label", "labels")}


class DataError(ValueError):
    """A data source, split or column that does not exist."""


def _check_columns(data_args, source: str, kinds: tuple[str, ...], allowed: dict[str, tuple[str, ...]]) -> None:
    """Columns named by the arguments must exist in data sets whose columns are fixed (embedded sets, dumps)."""
    for kind in kinds:
        wanted = getattr(data_args, f"{kind}_column", None)
        if wanted and wanted not in allowed.get(kind, ()):
            columns = sorted({name for names in allowed.values() for name in names})
            raise DataError(f"{kind}_column {wanted!r} not in the data set {source} (columns: {', '.join(columns)})")


@dataclass
class TaskData:
    splits: DatasetDict
    label_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------- sources and splits


def _load_source(data_args, default: str) -> tuple[str, DatasetDict | None]:
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


def _pick_column(dataset: Dataset, wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    columns = dataset.column_names
    if wanted:
        if wanted not in columns:
            raise DataError(f"{what}_column {wanted!r} not in the data set (columns: {', '.join(columns)})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"no {what} column found among {', '.join(columns)}; set --{what}_column")


def _label_names(dataset: Dataset, column: str) -> list[str]:
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = sorted(set(dataset[column]))
    return [str(value) for value in values]


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
    columns = {kind: getattr(data_args, f"{kind}_column", None) for kind in _COLUMN_KINDS}
    if any(columns.values()):
        info["columns"] = {kind: name for kind, name in columns.items() if name}
    digest = hashlib.sha256()
    for name in ("validation", "test"):
        if "labels" in splits[name].column_names:
            digest.update(np.asarray(splits[name]["labels"], dtype=np.int64).tobytes())
    info["heldout_labels_sha256"] = digest.hexdigest()[:16]
    info.update(extra)
    return info


def _set_pixel_format(splits: DatasetDict) -> None:
    """Serve `pixel_values` as uint8 arrays (the torch/numpy formats widen integers to int64: 8x the bytes to copy
    to the device); other columns stay as they are and the collator tensorises them."""
    columns = splits["train"].column_names
    if "pixel_values" in columns:
        splits.set_format("numpy", columns=["pixel_values"], dtype=np.uint8, output_all_columns=True)
    elif "attention_mask" not in columns:  # packed LM blocks; ragged text stays as lists for the padding collator
        splits.set_format("numpy")


def load_dump(path: str | Path, data_args=None) -> TaskData:
    path = Path(path)
    if not (path / DUMP_INFO).is_file():
        raise DataError(f"dataset_dump {path}: not a dump written by recipes/prepare_data.py (no {DUMP_INFO})")
    meta = json.loads((path / DUMP_INFO).read_text())
    if data_args is not None:  # the columns were chosen when dumping: the same names, or the dump's own
        recorded = meta.get("info", {}).get("columns", {})
        allowed = {kind: (*_BUILT_COLUMNS[kind], *([recorded[kind]] if kind in recorded else []))
                   for kind in _COLUMN_KINDS}
        _check_columns(data_args, f"dump {path}", _COLUMN_KINDS, allowed)
    splits = load_from_disk(str(path))
    _set_pixel_format(splits)
    return TaskData(splits, meta.get("label_names", []), meta.get("info", {}))


def save_dump(task: TaskData, path: str | Path) -> None:
    from zoo.layout import atomic_dir, atomic_write_json

    with atomic_dir(path) as tmp:
        task.splits.with_format(None).save_to_disk(str(tmp))
        atomic_write_json(tmp / DUMP_INFO, {"label_names": task.label_names, "info": task.info})


# ---------------------------------------------------------------- images


def resize_uint8(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) uint8 -> (N, channels, size, size) uint8, bilinear."""
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(images)
    if batch.ndim == 3:
        batch = batch[:, None]
    out = []
    for chunk in batch.split(1024):
        chunk = chunk.float()
        if chunk.shape[-1] != size or chunk.shape[-2] != size:
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if chunk.shape[1] != channels:
            chunk = chunk.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).numpy()


class NotUniform(ValueError):
    """An image whose size differs from the size the data set is being stored at without resizing."""


class PilToPixels:
    """PIL images -> uint8 (C, size, size) tensors: the `with_transform` of Hub image data sets, and the decoder of
    `decode_once`. With `strict`, images are not resized: one of another size raises `NotUniform`."""

    def __init__(self, image_column: str, label_column: str, size: int, channels: int, strict: bool = False,
                 as_numpy: bool = False):
        self.image_column, self.label_column, self.size, self.channels = image_column, label_column, size, channels
        self.strict, self.as_numpy = strict, as_numpy

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        import torch
        from PIL import Image

        mode = "RGB" if self.channels == 3 else "L"
        pixels = []
        for image in batch[self.image_column]:
            image = image.convert(mode)
            if image.size != (self.size, self.size):
                if self.strict:
                    raise NotUniform(f"an image of {image.size[0]}x{image.size[1]} pixels, not {self.size}")
                image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
            pixels.append(array.reshape(self.size, self.size, -1).transpose(2, 0, 1))
        if self.as_numpy:  # for Arrow
            return {"pixel_values": np.stack(pixels), "labels": np.asarray(batch[self.label_column])}
        return {"pixel_values": torch.from_numpy(np.stack(pixels)), "labels": torch.as_tensor(batch[self.label_column])}


# Decoded image sets larger than this keep decoding per batch (in the DataLoader's workers) instead of once
DECODE_ONCE_MAX_BYTES = 16 << 30


def _native_size(split: Dataset, image_column: str, image_size: int) -> int:
    """The size to store a data set's images at: their own when the first one is square and no larger than the
    model's input (the batched augmentation resizes on the device), else the model's."""
    width, height = split[0][image_column].size
    return width if width == height and width <= image_size else image_size


def decode_once(splits: DatasetDict, image_column: str, image_size: int, channels: int, cache_root: str | Path,
                key: dict[str, Any], num_proc: int | None = None) -> tuple[DatasetDict, int] | None:
    """Decode every image of `splits` once into uint8 (C, S, S) arrays under `<cache_root>/images-<hash>`, for every
    member of a zoo to reuse (memory-mapped, and whole on the GPU when it fits). S is the images' native size when
    they all share one (no larger than the model's), else the model's `image_size`. None when too large."""
    from zoo.layout import atomic_dir

    rows = sum(len(split) for split in splits.values())
    if rows == 0 or rows * channels * image_size * image_size > DECODE_ONCE_MAX_BYTES:
        return None
    key = {**key, "image_size": image_size, "channels": channels, "image_column": image_column,
           "splits": {name: [len(split), split._fingerprint] for name, split in splits.items()}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    final = Path(cache_root) / f"images-{digest}"
    if not (final / "dataset_dict.json").is_file():
        sizes = list(dict.fromkeys([_native_size(splits["train"], image_column, image_size), image_size]))
        for size in sizes:
            features = Features({"pixel_values": Array3D(shape=(channels, size, size), dtype="uint8"),
                                 "labels": splits["train"].features["labels"]})
            decoder = PilToPixels(image_column, "labels", size, channels, strict=size != image_size, as_numpy=True)
            try:
                with atomic_dir(final) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as scratch:
                    decoded = DatasetDict({
                        name: split.map(decoder, batched=True, batch_size=256, remove_columns=split.column_names,
                                        features=features, num_proc=num_proc, desc=f"decoding {name} images once",
                                        cache_file_name=str(Path(scratch) / f"{name}.arrow"))
                        for name, split in splits.items()})
                    decoded.save_to_disk(str(tmp))
                break
            except NotUniform:
                continue
    stored = load_from_disk(str(final))
    return stored, int(stored["train"].features["pixel_values"].shape[-1])


def load_images(data_args, image_size: int, channels: int = 3, default: str = "embedded:mnist5k",
                cache_root: str | Path | None = None, stored_size: int | None = None) -> TaskData:
    """Image classification data as uint8 (C, H, W) `pixel_values` and `labels`. Embedded sets come at the model's
    `image_size`. Hub and local image sets are decoded once under `cache_root` (see `decode_once`), possibly at
    their native size; without a cache they are decoded per batch at `stored_size` (what a member's config
    recorded), by default the model's size."""
    if data_args.dataset_dump:
        return load_dump(data_args.dataset_dump, data_args)
    source, loaded = _load_source(data_args, default)
    if loaded is None:
        _check_columns(data_args, source, ("image", "label"), {k: _BUILT_COLUMNS[k] for k in ("image", "label")})
        images, labels, names = getattr(embedded, source.split(":", 1)[1])()
        if images.ndim != 3:
            raise DataError(f"dataset {source!r} holds no images")
        pixels = resize_uint8(images, image_size, channels)
        features = Features({"pixel_values": Array3D(shape=pixels.shape[1:], dtype="uint8"),
                             "labels": ClassLabel(names=names)})
        loaded = DatasetDict({"train": Dataset.from_dict({"pixel_values": pixels, "labels": labels},
                                                         features=features)})
        splits = make_splits(loaded, data_args)
        _set_pixel_format(splits)
        return TaskData(splits, names, split_info(source, splits, data_args, image_size=image_size))
    first = loaded[data_args.train_split] if data_args.train_split in loaded else next(iter(loaded.values()))
    image_column = _pick_column(first, data_args.image_column, _IMAGE_COLUMNS, "image")
    label_column = _pick_column(first, data_args.label_column, _LABEL_COLUMNS, "label")
    names = _label_names(first, label_column)
    loaded = DatasetDict({
        name: split.select_columns([image_column, label_column]).rename_column(label_column, "labels")
        for name, split in loaded.items()
    })
    splits = make_splits(loaded, data_args)
    decoded = None
    if cache_root is not None:
        key = {"source": source, "dataset_config": data_args.dataset_config}
        decoded = decode_once(splits, image_column, image_size, channels, cache_root, key,
                              data_args.preprocessing_num_workers)
    if decoded is not None:
        splits, stored_size = decoded
        _set_pixel_format(splits)
    else:
        stored_size = stored_size or image_size
        splits.set_transform(PilToPixels(image_column, "labels", stored_size, channels))
    return TaskData(splits, names, split_info(source, splits, data_args, image_size=image_size,
                                              stored_size=stored_size))


# ---------------------------------------------------------------- text


def load_texts(data_args, default: str) -> tuple[str, DatasetDict, list[str]]:
    """Text splits with `text` and `labels` columns, before tokenisation."""
    source, loaded = _load_source(data_args, default)
    if loaded is None:
        _check_columns(data_args, source, ("text", "label"), {k: _BUILT_COLUMNS[k] for k in ("text", "label")})
        texts, labels, names = getattr(embedded, source.split(":", 1)[1])()
        if not isinstance(texts, list):
            raise DataError(f"dataset {source!r} holds no text")
        loaded = DatasetDict({"train": Dataset.from_dict({"text": texts, "labels": labels})})
        return source, make_splits(loaded, data_args), names
    first = loaded[data_args.train_split] if data_args.train_split in loaded else next(iter(loaded.values()))
    text_column = _pick_column(first, data_args.text_column, _TEXT_COLUMNS, "text")
    columns = {text_column: "text"}
    names: list[str] = []
    try:
        label_column = _pick_column(first, data_args.label_column, _LABEL_COLUMNS, "label")
        columns[label_column] = "labels"
        names = _label_names(first, label_column)
    except DataError:
        if data_args.label_column:
            raise
    renamed = DatasetDict()
    for name, split in loaded.items():
        split = split.select_columns(list(columns))
        for old, new in columns.items():
            if old != new:
                split = split.rename_column(old, new)
        renamed[name] = split
    return source, make_splits(renamed, data_args), names


def load_lm_blocks(data_args, tokenizer, default: str = "embedded:bbcnews") -> TaskData:
    """Causal LM data: every split tokenised, joined with EOS and cut into `block_size` blocks."""
    if data_args.dataset_dump:
        return load_dump(data_args.dataset_dump, data_args)
    source, splits, _ = load_texts(data_args, default)
    block = data_args.block_size
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id

    def pack(batch: dict[str, list]) -> dict[str, list]:
        ids: list[int] = []
        for encoded in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            ids.extend(encoded + [eos])
        usable = (len(ids) // block) * block
        blocks = [ids[i : i + block] for i in range(0, usable, block)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    packed = DatasetDict({
        name: split.map(pack, batched=True, batch_size=256, remove_columns=split.column_names,
                        num_proc=data_args.preprocessing_num_workers, desc=f"packing {name}")
        for name, split in splits.items()
    })
    for name, split in packed.items():
        if len(split) == 0:
            raise DataError(f"split {name!r} has fewer than block_size={block} tokens")
    packed.set_format("numpy")
    return TaskData(packed, [], split_info(source, packed, data_args, block_size=block))


def load_text_classification(data_args, tokenizer, default: str = "embedded:rotten_tomatoes") -> TaskData:
    if data_args.dataset_dump:
        return load_dump(data_args.dataset_dump, data_args)
    source, splits, names = load_texts(data_args, default)
    if "labels" not in splits["train"].column_names:
        raise DataError(f"dataset {source!r} has no label column; set --label_column")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], truncation=True, max_length=data_args.max_length)

    encoded = DatasetDict({
        name: split.map(encode, batched=True, remove_columns=["text"], num_proc=data_args.preprocessing_num_workers,
                        desc=f"tokenising {name}")
        for name, split in splits.items()
    })
    for name, split in encoded.items():
        labels = np.asarray(split["labels"])
        if labels.size and (labels.min() < 0 or labels.max() >= max(len(names), 1)):
            raise DataError(f"split {name!r} has labels outside 0..{len(names) - 1} (unlabelled test split? "
                            "set --test_split)")
    return TaskData(encoded, names, split_info(source, encoded, data_args, max_length=data_args.max_length))
