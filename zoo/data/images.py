"""Image classification data as uint8 (C, H, W) `pixel_values` and `labels`: embedded sets resized to the model's
size, Hub and local sets decoded once per zoo (`decode_once`) or per batch (`PilToPixels`)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features, load_from_disk

from zoo.data import sources
from zoo.data.dumps import load_dump
from zoo.data.sources import DataError, TaskData

# Decoded image sets larger than this keep decoding per batch (in the DataLoader's workers) instead of once
DECODE_ONCE_MAX_BYTES = 16 << 30


def resize_uint8(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) uint8 -> (N, channels, size, size) uint8: each channel resized by PIL's bilinear
    filter, as the saved image processor resizes (`pipeline("image-classification")` on the raw images then sees
    the pixels evaluation saw); gray is copied into every channel, colour averaged into one."""
    from PIL import Image

    batch = images[:, None] if images.ndim == 3 else images
    if batch.shape[-2:] != (size, size):
        batch = np.stack([[np.asarray(Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR))
                           for plane in image] for image in batch])
    if batch.shape[1] == channels:
        return np.ascontiguousarray(batch)
    if batch.shape[1] == 1:
        return np.ascontiguousarray(np.broadcast_to(batch, (batch.shape[0], channels, size, size)))
    return np.round(batch.mean(1, keepdims=True, dtype=np.float32)).clip(0, 255).astype(np.uint8).repeat(channels, 1)


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
    source, loaded = sources.load_source(data_args, default)
    if loaded is None:
        return _embedded_images(data_args, source, image_size, channels)
    return _loaded_images(data_args, source, loaded, image_size, channels, cache_root, stored_size)


def _embedded_images(data_args, source: str, image_size: int, channels: int) -> TaskData:
    """An embedded image set, resized to the model's `image_size`."""
    images, labels, names = sources.load_embedded(data_args, source, ("image", "label"))
    if images.ndim != 3:
        raise DataError(f"dataset {source!r} holds no images")
    pixels = resize_uint8(images, image_size, channels)
    features = Features({"pixel_values": Array3D(shape=pixels.shape[1:], dtype="uint8"),
                         "labels": ClassLabel(names=names)})
    loaded = DatasetDict({"train": Dataset.from_dict({"pixel_values": pixels, "labels": labels}, features=features)})
    splits = sources.make_splits(loaded, data_args)
    sources.set_pixel_format(splits)
    return TaskData(splits, names, sources.split_info(source, splits, data_args, image_size=image_size))


def _loaded_images(data_args, source: str, loaded: DatasetDict, image_size: int, channels: int,
                   cache_root: str | Path | None, stored_size: int | None) -> TaskData:
    """A Hub or local image set: decoded once under `cache_root` when it can be, else per batch at `stored_size`."""
    first = sources.first_split(loaded, data_args)
    image_column = sources.pick_column(first, data_args.image_column, sources.IMAGE_COLUMNS, "image")
    label_column = sources.pick_column(first, data_args.label_column, sources.LABEL_COLUMNS, "label")
    names = sources.label_names(first, label_column)
    loaded = DatasetDict({
        name: split.select_columns([image_column, label_column]).rename_column(label_column, "labels")
        for name, split in loaded.items()
    })
    splits = sources.make_splits(loaded, data_args)
    decoded = None
    if cache_root is not None:
        key = {"source": source, "dataset_config": data_args.dataset_config}
        decoded = decode_once(splits, image_column, image_size, channels, cache_root, key,
                              data_args.preprocessing_num_workers)
    if decoded is not None:
        splits, stored_size = decoded
        sources.set_pixel_format(splits)
    else:
        stored_size = stored_size or image_size
        splits.set_transform(PilToPixels(image_column, "labels", stored_size, channels))
    return TaskData(splits, names, sources.split_info(source, splits, data_args, image_size=image_size,
                                              stored_size=stored_size))
