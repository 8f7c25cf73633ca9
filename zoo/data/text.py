"""Text data: splits of `text` and `labels` (`load_texts`), tokenised into packed language-modelling blocks
(`load_lm_blocks`) or into classification inputs (`load_text_classification`)."""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict

from zoo.data import sources
from zoo.data.dumps import load_dump
from zoo.data.sources import DataError, TaskData


def load_texts(data_args, default: str) -> tuple[str, DatasetDict, list[str]]:
    """Text splits with `text` and `labels` columns, before tokenisation."""
    source, loaded = sources.load_source(data_args, default)
    if loaded is None:
        texts, labels, names = sources.load_embedded(data_args, source, ("text", "label"))
        if not isinstance(texts, list):
            raise DataError(f"dataset {source!r} holds no text")
        loaded = DatasetDict({"train": Dataset.from_dict({"text": texts, "labels": labels})})
        return source, sources.make_splits(loaded, data_args), names
    columns, names = _text_columns(sources.first_split(loaded, data_args), data_args)
    renamed = DatasetDict()
    for name, split in loaded.items():
        split = split.select_columns(list(columns))
        for old, new in columns.items():
            if old != new:
                split = split.rename_column(old, new)
        renamed[name] = split
    return source, sources.make_splits(renamed, data_args), names


def _text_columns(first: Dataset, data_args) -> tuple[dict[str, str], list[str]]:
    """The source's columns to keep, by the names they take (`text`, and `labels` when the source has a label
    column), and the label names."""
    columns = {sources.pick_column(first, data_args.text_column, sources.TEXT_COLUMNS, "text"): "text"}
    names: list[str] = []
    try:
        label_column = sources.pick_column(first, data_args.label_column, sources.LABEL_COLUMNS, "label")
        columns[label_column] = "labels"
        names = sources.label_names(first, label_column)
    except DataError:
        if data_args.label_column:
            raise
    return columns, names


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
    return TaskData(packed, [], sources.split_info(source, packed, data_args, block_size=block))


def load_text_classification(data_args, tokenizer, default: str = "embedded:rotten_tomatoes") -> TaskData:
    """Text classification data: every split tokenised (truncated at `max_length`), with `labels` checked to lie
    within the label names."""
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
    return TaskData(encoded, names, sources.split_info(source, encoded, data_args, max_length=data_args.max_length))
