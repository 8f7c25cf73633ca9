"""Dumps: a task's prepared splits saved to a folder with their label names and split info (`DUMP_INFO`), as
`recipes/prepare_data.py` writes them, loaded back ready to train on."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import load_from_disk

from zoo.data.sources import BUILT_COLUMNS, COLUMN_KINDS, DataError, TaskData, check_columns, set_pixel_format

DUMP_INFO = "zoo_data.json"


def load_dump(path: str | Path, data_args=None) -> TaskData:
    path = Path(path)
    if not (path / DUMP_INFO).is_file():
        raise DataError(f"dataset_dump {path}: not a dump written by recipes/prepare_data.py (no {DUMP_INFO})")
    meta = json.loads((path / DUMP_INFO).read_text())
    if data_args is not None:  # the columns were chosen when dumping: the same names, or the dump's own
        recorded = meta.get("info", {}).get("columns", {})
        allowed = {kind: (*BUILT_COLUMNS[kind], *([recorded[kind]] if kind in recorded else []))
                   for kind in COLUMN_KINDS}
        check_columns(data_args, f"dump {path}", COLUMN_KINDS, allowed)
    splits = load_from_disk(str(path))
    set_pixel_format(splits)
    return TaskData(splits, meta.get("label_names", []), meta.get("info", {}))


def save_dump(task: TaskData, path: str | Path) -> None:
    from zoo.layout import atomic_dir, atomic_write_json

    with atomic_dir(path) as tmp:
        task.splits.with_format(None).save_to_disk(str(tmp))
        atomic_write_json(tmp / DUMP_INFO, {"label_names": task.label_names, "info": task.info})
