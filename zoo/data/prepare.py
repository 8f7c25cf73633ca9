"""A member's prepared data: splits, the processing class saved with its checkpoints, and its collators.

`prepare(kind, args, family, parent)` dispatches on the kind's `data` (images, LM blocks, text classification) and
returns a `Prepared` record; nothing else is changed. The processing class describes the model for stock
`pipeline(...)`: an image processor that does what evaluation does to an image, or a tokenizer that cuts and pads
as training did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.data import DataError, TaskData, load_images, load_lm_blocks, load_text_classification
from zoo.data.tokenizer import build_tokenizer


@dataclass
class Prepared:
    data: TaskData
    processing_class: Any = None  # saved with every checkpoint: an image processor or a tokenizer
    collator: Any = None  # None: the Trainer's default collator
    eval_collator: Callable[[], Any] | None = None  # a factory, where evaluation collates differently (seeded masks)
    image_size: int = 0
    channels: int = 0

    @property
    def tokenizer(self):
        """The processing class the Trainer gets (a tokenizer; image processors are saved by the member writer)."""
        return None if self.image_size else self.processing_class


def prepare(kind, args, family, parent: dict[str, Any] | None, cache_root: Path) -> Prepared:
    """The data of a member of `kind` built with `family`; `parent` is the parent checkpoint's model config."""
    if kind.data not in PREPARERS:
        raise DataError(f"kind {kind.name}: no data preparation {kind.data!r} (known: {', '.join(PREPARERS)})")
    return PREPARERS[kind.data](kind, args, family, parent, cache_root)


def _images(kind, args, family, parent, cache_root) -> Prepared:
    source = parent or {"image_size": args.model.image_size, "num_channels": args.model.num_channels}
    image_size, channels = int(source["image_size"]), int(source.get("num_channels", 3))
    # Hub and local image sets are decoded once per zoo (or output folder), for all its members
    data = load_images(args.data, image_size, channels, kind.default_dataset, cache_root=cache_root)
    if not data.label_names:
        raise DataError("the image data set has no labels")
    processor = image_processor(args.data, image_size, channels, data.info)
    return Prepared(data, processor, image_size=image_size, channels=channels)


def image_processor(data_args, image_size: int, channels: int, info: dict[str, Any]):
    """What evaluation does to an image, for `pipeline("image-classification")` on raw images. Grayscale or RGB ->
    the model's channels (`do_convert_rgb` copies gray into RGB, as training does), resized to the model's size with
    the filter the data path used (bilinear for the embedded sets and for images stored below the model's size,
    bicubic where Hub images were resized when decoded), scaled to [0, 1], normalised with the training mean/std."""
    try:  # transformers 5: the PIL/numpy processor (the default one needs torchvision)
        from transformers import ViTImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import ViTImageProcessor as ImageProcessor
    from PIL import Image

    decoded_at_size = (not str(info.get("source", "")).startswith("embedded:")
                       and info.get("stored_size", image_size) >= image_size)
    resample = Image.Resampling.BICUBIC if decoded_at_size else Image.Resampling.BILINEAR
    return ImageProcessor(size={"height": image_size, "width": image_size}, resample=resample,
                          do_convert_rgb=channels == 3, image_mean=[data_args.image_mean] * channels,
                          image_std=[data_args.image_std] * channels)


def fit_tokenizer(tokenizer, max_length: int, padding_side: str) -> None:
    """Make the tokenizer saved with every checkpoint describe its model, for stock `pipeline(...)`:
    `truncation=True` cuts at the length the model was trained and evaluated at (never beyond its positions: a
    tokenizer trained here says 1,000,000), padding goes on the side its task needs, with a pad token."""
    tokenizer.model_max_length = max_length
    tokenizer.padding_side = padding_side
    tokenizer.init_kwargs["padding_side"] = padding_side  # saved with tokenizer_config.json only as an init kwarg
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _lm_blocks(kind, args, family, parent, cache_root) -> Prepared:
    tokenizer = build_tokenizer(args.data, args.model.vocab_size, cache_root, family.tokenizer)
    data = load_lm_blocks(args.data, tokenizer, kind.default_dataset)
    fit_tokenizer(tokenizer, args.data.block_size, kind.padding_side)  # the model has block_size positions
    prepared = Prepared(data, tokenizer)
    collators = COLLATORS.get(kind.objective)
    if collators is not None:
        prepared.collator, prepared.eval_collator = collators(tokenizer, args)
    return prepared


def _masked_lm_collators(tokenizer, args):
    """Random masking in training; evaluation masks with a fixed seed, so a checkpoint's test metrics repeat."""
    from transformers import DataCollatorForLanguageModeling

    probability = args.zoo.mlm_probability
    return (DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability),
            lambda: DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=1234))


def _text_classification(kind, args, family, parent, cache_root) -> Prepared:
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from zoo.arguments import ConfigError

    tokenizer = AutoTokenizer.from_pretrained(str(args.zoo.pretrained))
    positions = family.positions(parent or {})
    if positions and args.data.max_length > positions:
        raise ConfigError(f"max_length {args.data.max_length} exceeds the parent's {positions} positions")
    # texts are cut at max_length in training and evaluation; the classifier pads on the right
    fit_tokenizer(tokenizer, args.data.max_length, "right")
    data = load_text_classification(args.data, tokenizer, kind.default_dataset)
    return Prepared(data, tokenizer, collator=DataCollatorWithPadding(tokenizer))


def _decode_images(splits):
    """Hub images are decoded lazily: materialise them as uint8 arrays for a dump."""
    import numpy as np

    columns = list(next(iter(splits.values())).column_names)
    return splits.map(lambda batch: {k: np.asarray(v) for k, v in batch.items()}, batched=True,
                      remove_columns=columns, desc="decoding")


def dump_splits(kind, splits):
    """Splits as a dump stores them (`recipes/prepare_data.py`)."""
    transform = DUMP_TRANSFORMS.get(kind.data)
    return transform(splits) if transform is not None else splits


PREPARERS = {"images": _images, "lm_blocks": _lm_blocks, "text_classification": _text_classification}
COLLATORS = {"masked_lm": _masked_lm_collators}
DUMP_TRANSFORMS = {"images": _decode_images}
