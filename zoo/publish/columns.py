"""Parquet columns and files of the dataset repo: typed columns (a column keeps its values' type, else becomes
text), free column names, and parquet written with fixed settings."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.publish.common import with_path


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "other"


def text_value(value: Any) -> str | None:
    """A value as the text a text column holds (lists and dicts as JSON)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return layout.format_value(value) if isinstance(value, (bool, float)) else str(value)


def typed_column(values: list[Any]) -> Any:
    """A pyarrow array keeping the values' type (bool, int64, float64, string); a column mixing types (or holding
    lists/dicts) becomes text; missing values are null."""
    import pyarrow as pa

    kinds = {_kind(value) for value in values if value is not None}
    if not kinds:
        return pa.array([None] * len(values), pa.string())
    if kinds == {"bool"}:
        return pa.array(values, pa.bool_())
    if kinds == {"int"} and all(-(2**63) <= value < 2**63 for value in values if value is not None):
        return pa.array(values, pa.int64())
    if kinds <= {"int", "float"}:
        return pa.array([None if value is None else float(value) for value in values], pa.float64())
    return pa.array([text_value(value) for value in values], pa.string())


def arrow_table(columns: dict[str, list[Any]]) -> Any:
    """A pyarrow table of typed columns."""
    import pyarrow as pa

    return pa.table({name: typed_column(values) for name, values in columns.items()})


def sort_label(label: str) -> tuple[int, float, str]:
    """Sort key of a value label: numbers by value first, then text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def free_name(name: str, taken: Iterable[str], prefix: str) -> str:
    """`name`, or `<prefix><name>` where another column takes it."""
    return name if name not in taken else f"{prefix}{name}"


def write_parquet(table: Any, path: Path, row_group_size: int | None = None) -> None:
    """Parquet with fixed settings: the same table gives the same bytes (so an unchanged table is not re-uploaded)."""
    import pyarrow.parquet as pq

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd", row_group_size=row_group_size, write_statistics=True)
    except OSError as err:
        raise with_path(err, path) from None


