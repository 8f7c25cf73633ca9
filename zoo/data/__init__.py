"""Turn a data source (an embedded package, a Hub name, a local folder or a dump) into `datasets` splits.

Every task gets `train`, `validation` and `test` splits, fixed by `split_seed` so that a whole zoo shares them:
- images: `pixel_values` uint8 (C, H, W), `labels`: at the model's size, or (Hub and local sets, decoded once per zoo)
  at their native size when smaller; scaling and normalisation happen on the
  device in the trainer, where augmentation runs on whole batches;
- language modelling: packed blocks of `input_ids` (and `labels`, the same ids);
- text classification: `input_ids`, `attention_mask`, `labels`.

Modules: `sources` (opening a source, its columns and splits), `images`, `text`, `dumps` (prepared splits saved
to a folder), `embedded` (the data sets shipped in the package), `tokenizer`, `prepare` (a member's data,
processing class and collators), `device` (sets held as whole tensors).
"""

from __future__ import annotations

import sys

import datasets

from zoo.data import embedded
from zoo.data.dumps import DUMP_INFO, load_dump, save_dump
from zoo.data.images import (
    DECODE_ONCE_MAX_BYTES,
    NotUniform,
    PilToPixels,
    decode_once,
    load_images,
    resize_uint8,
)
from zoo.data.sources import DataError, TaskData, make_splits, set_pixel_format, split_info
from zoo.data.text import load_lm_blocks, load_text_classification, load_texts

if not sys.stderr.isatty():  # in a log, a progress bar is a new line at every refresh
    datasets.disable_progress_bars()

__all__ = [
    "DECODE_ONCE_MAX_BYTES",
    "DUMP_INFO",
    "DataError",
    "NotUniform",
    "PilToPixels",
    "TaskData",
    "set_pixel_format",
    "decode_once",
    "embedded",
    "load_dump",
    "load_images",
    "load_lm_blocks",
    "load_text_classification",
    "load_texts",
    "make_splits",
    "resize_uint8",
    "save_dump",
    "split_info",
]
