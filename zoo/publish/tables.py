"""The dataset repo's parquet tables: `members`, `checkpoints`, `metrics`, and with `--with-weights` `weights`
(flattened parameters, sharded) and `weights_index`."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.publish.common import DATA_DIR, tqdm_bar, with_path
from zoo.publish.stage import ModelRepo, Placed, Selected

WEIGHTS_MAX_PARAMS = 10_000_000  # --with-weights is for small models: one row holds a whole checkpoint
WEIGHTS_SHARD_BYTES = 256 * 1024 * 1024
_RESULT_KEYS_FIRST = ("train_loss", "train_acc", "test_loss", "test_acc", "test_perplexity")


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


def _table(columns: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    return pa.table({name: typed_column(values) for name, values in columns.items()})


def sort_label(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _free_name(name: str, taken: Iterable[str], prefix: str) -> str:
    return name if name not in taken else f"{prefix}{name}"


def _result_keys(members: Iterable[layout.MemberInfo]) -> list[str]:
    """Every key of every result.json line but `epoch`: the usual metrics first, then the others as first seen."""
    seen: dict[str, None] = {}
    for member in members:
        for row in member.results:
            for key in row:
                if key != "epoch":
                    seen.setdefault(key, None)
    return [key for key in _RESULT_KEYS_FIRST if key in seen] + [key for key in seen if key not in _RESULT_KEYS_FIRST]


def _results_by_epoch(member: layout.MemberInfo) -> dict[int, dict[str, Any]]:
    return {int(row["epoch"]): row for row in member.results if "epoch" in row}


def num_parameters(weights: str | Path) -> int:
    """The number of parameters of a safetensors file, from its header alone."""
    header = layout.read_safetensors_header(weights)
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count
    return total


_MEMBER_FIXED = ["member", "member_path", "modality", "stage", "kind", "state", "parent_member", "parent_path",
                 "parent_checkpoint"]
_MEMBER_TAIL = ["epochs", "last_epoch", "num_checkpoints", "model_repo", "local_folder", "last_checkpoint",
                "num_params", "metric", "metric_value"]
_CHECKPOINT_FIXED = ["member", "member_path", "modality", "stage", "epoch", "checkpoint", "is_last", "model_repo",
                     "subfolder", "revision", "subfolder_revision", "local_folder", "weights_size", "weights_sha256"]
_CURVE_FIXED = ["member", "member_path", "modality", "stage", "epoch"]
_Placements = dict[tuple[str, int], Placed]  # (member path, epoch) -> where that checkpoint is published


def _columns(names: Iterable[str]) -> dict[str, list[Any]]:
    return {name: [] for name in names}


def _append_row(columns: dict[str, list[Any]], values: dict[str, Any]) -> None:
    for name, column in columns.items():
        column.append(values[name])


def _member_identity(member: layout.MemberInfo) -> dict[str, Any]:
    """The columns every table starts with."""
    return {"member": member.name, "member_path": member.relpath, "modality": member.modality,
            "stage": member.stage}


def _factor_keys(members: Iterable[layout.MemberInfo]) -> list[str]:
    """Every generating factor of every member, as first seen."""
    seen: dict[str, None] = {}
    for member in members:
        for key in member.factors:
            seen.setdefault(str(key), None)
    return list(seen)


def _member_values(item: Selected, last: Placed | None, local_folder: dict[str, str]) -> dict[str, Any]:
    """A `members` row's fixed columns; `last` is the member's last published checkpoint."""
    member = item.member
    parent = member.parent or {}
    final = member.last_result or {}
    return {
        **_member_identity(member), "kind": member.config.get("kind"), "state": member.state,
        "parent_member": parent.get("member"), "parent_path": parent.get("path"),
        "parent_checkpoint": parent.get("checkpoint"), "epochs": member.planned_epochs,
        "last_epoch": final.get("epoch"), "num_checkpoints": len(item.epochs),
        "model_repo": last.repo if last else None, "local_folder": local_folder[last.repo] if last else None,
        "last_checkpoint": last.subfolder if last else None,
        "num_params": num_parameters(last.sources[layout.WEIGHTS]) if last else None,
        "metric": member.metric, "metric_value": member.final_metric(),
        "config": json.dumps(member.config, sort_keys=True, default=str),
    }


def _members_table(selected: list[Selected], placed: _Placements, local_folder: dict[str, str],
                   result_keys: list[str]) -> Any:
    """One row per member: identity, parent, factors (as `factor_<key>` where a name is taken), last checkpoint
    and final results (as `final_<key>` where taken)."""
    factor_cols = {key: _free_name(key, _MEMBER_FIXED + _MEMBER_TAIL, "factor_")
                   for key in _factor_keys(item.member for item in selected)}
    taken = set(_MEMBER_FIXED + _MEMBER_TAIL + list(factor_cols.values()))
    final_cols = {key: _free_name(key, taken, "final_") for key in result_keys}
    columns = _columns(_MEMBER_FIXED + list(factor_cols.values()) + _MEMBER_TAIL + list(final_cols.values())
                       + ["config"])
    for item in selected:
        member = item.member
        final = member.last_result or {}
        last = placed[(member.relpath, item.epochs[-1])] if item.epochs else None
        values = _member_values(item, last, local_folder)
        values.update({column: member.factors.get(key) for key, column in factor_cols.items()})
        values.update({column: final.get(key) for key, column in final_cols.items()})
        _append_row(columns, values)
    return _table(columns)


def _checkpoints_table(selected: list[Selected], placed: _Placements, heads: dict[str, str],
                       local_folder: dict[str, str], result_keys: list[str]) -> Any:
    """One row per published checkpoint: where it lives, its weights file and its epoch's results."""
    metric_cols = {key: _free_name(key, _CHECKPOINT_FIXED, "metric_") for key in result_keys}
    columns = _columns(_CHECKPOINT_FIXED + list(metric_cols.values()))
    for item in selected:
        member, by_epoch = item.member, _results_by_epoch(item.member)
        for epoch in item.epochs:
            cp = placed[(member.relpath, epoch)]
            weights = cp.records[layout.WEIGHTS]
            row = by_epoch.get(epoch, {})
            values = {
                **_member_identity(member), "epoch": epoch, "checkpoint": layout.checkpoint_name(epoch),
                "is_last": epoch == item.epochs[-1], "model_repo": cp.repo, "subfolder": cp.subfolder,
                "revision": cp.ref or heads[cp.repo], "subfolder_revision": heads[cp.repo],
                "local_folder": local_folder[cp.repo],
                "weights_size": weights.size, "weights_sha256": weights.sha256,
            }
            values.update({column: row.get(key) for key, column in metric_cols.items()})
            _append_row(columns, values)
    return _table(columns)


def _metrics_table(selected: list[Selected], result_keys: list[str]) -> Any:
    """One row per member and result.json epoch: the learning curves."""
    metric_cols = {key: _free_name(key, _CURVE_FIXED, "metric_") for key in result_keys}
    columns = _columns(_CURVE_FIXED + list(metric_cols.values()))
    for item in selected:
        member = item.member
        for epoch, row in sorted(_results_by_epoch(member).items()):
            values = {**_member_identity(member), "epoch": epoch}
            values.update({column: row.get(key) for key, column in metric_cols.items()})
            _append_row(columns, values)
    return _table(columns)


def build_tables(selected: list[Selected], repos: list[ModelRepo], heads: dict[str, str]) -> dict[str, Any]:
    """The `members`, `checkpoints` and `metrics` tables (pyarrow), rows in zoo order. `heads` gives each model
    repo's commit (or branch, for a local folder) that holds the checkpoints at their subfolders; `local_folder` is
    the model repo's folder in a `--local-dir` publish (`models`, or `models-00`, ... when the zoo is sharded)."""
    placed = {(cp.member.relpath, cp.epoch): cp for repo in repos for cp in repo.checkpoints}
    local_folder = {repo.repo_id: repo.local_folder for repo in repos}
    result_keys = _result_keys(item.member for item in selected)
    return {"members": _members_table(selected, placed, local_folder, result_keys),
            "checkpoints": _checkpoints_table(selected, placed, heads, local_folder, result_keys),
            "metrics": _metrics_table(selected, result_keys)}


def _read_flat(weights: Path) -> tuple[Any, list[dict[str, Any]]]:
    """A checkpoint's tensors (sorted by name) as one float32 vector, and where each tensor lies in it."""
    import numpy as np
    from safetensors import safe_open

    header = layout.read_safetensors_header(weights)
    names = sorted(name for name in header if name != "__metadata__")
    parts, index, offset = [], [], 0
    with safe_open(str(weights), framework="numpy") as handle:
        for name in names:
            info = header[name]
            if info["dtype"] == "BF16":  # numpy has no bfloat16: widen the raw bits
                array = _read_bf16(weights, info)
            else:
                array = handle.get_tensor(name)
            flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
            parts.append(flat)
            index.append({"name": name, "dtype": info["dtype"], "shape": [int(d) for d in info["shape"]],
                          "offset": offset, "numel": int(flat.size)})
            offset += int(flat.size)
    vector = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return vector, index


def _read_bf16(weights: Path, info: dict[str, Any]) -> Any:
    import numpy as np

    with open(weights, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        start, end = info["data_offsets"]
        handle.seek(8 + header_len + start)
        raw = np.frombuffer(handle.read(end - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32)


_INDEX_KEYS = ("name", "dtype", "shape", "offset", "numel")


class _WeightShards:
    """The `weights` table, written as parquet shards of about `WEIGHTS_SHARD_BYTES` of flattened checkpoints."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.shards: list[str] = []
        self.rows: list[tuple[str, str, int, Any]] = []
        self.pending_bytes = 0

    def add(self, member: layout.MemberInfo, epoch: int, vector: Any) -> None:
        self.rows.append((member.name, member.relpath, epoch, vector))
        self.pending_bytes += vector.nbytes
        if self.pending_bytes >= WEIGHTS_SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        import numpy as np
        import pyarrow as pa

        rows = self.rows
        if not rows:
            return
        lengths = [len(vector) for *_, vector in rows]
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), pa.int64())
        values = pa.array(np.concatenate([vector for *_, vector in rows]), pa.float32())
        table = pa.table({
            "member": pa.array([row[0] for row in rows], pa.string()),
            "member_path": pa.array([row[1] for row in rows], pa.string()),
            "epoch": pa.array([row[2] for row in rows], pa.int64()),
            "weights": pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.float32())),
        })
        group = max(1, (64 << 20) // max(1, 4 * max(lengths)))
        self._write(table, row_group_size=group)
        self.rows, self.pending_bytes = [], 0

    def finish(self) -> list[str]:
        """Write what is pending and return the shard paths; with no checkpoint at all, an empty shard keeps the
        config loadable."""
        import pyarrow as pa

        self.flush()
        if not self.shards:
            self._write(pa.table({"member": pa.array([], pa.string()), "member_path": pa.array([], pa.string()),
                                  "epoch": pa.array([], pa.int64()),
                                  "weights": pa.array([], pa.list_(pa.float32()))}))
        return self.shards

    def _write(self, table: Any, row_group_size: int | None = None) -> None:
        name = f"{DATA_DIR}/weights/weights-{len(self.shards):05d}.parquet"
        write_parquet(table, self.data_dir.parent / name, row_group_size=row_group_size)
        self.shards.append(name)


def _flatten_member(item: Selected, shards: _WeightShards, index_cols: dict[str, list[Any]], bar: Any) -> None:
    """Add a member's checkpoints to `shards` and its tensor layout to `index_cols`; every checkpoint must hold the
    same tensors as its first."""
    member, first_layout = item.member, None
    for epoch in item.epochs:
        weights = member.checkpoint_dir(epoch) / layout.WEIGHTS
        if num_parameters(weights) > WEIGHTS_MAX_PARAMS:
            raise ValueError(f"{weights}: {num_parameters(weights)} parameters, more than the "
                             f"{WEIGHTS_MAX_PARAMS} --with-weights takes per checkpoint")
        vector, index = _read_flat(weights)
        if first_layout is None:
            first_layout = index
            for entry in index:
                index_cols["member_path"].append(member.relpath)
                for key in _INDEX_KEYS:
                    index_cols[key].append(entry[key])
        elif index != first_layout:
            raise ValueError(f"{weights}: tensors differ from the member's first published checkpoint")
        shards.add(member, epoch, vector)
        bar.update(1)


def write_weight_tables(selected: list[Selected], data_dir: Path) -> list[str]:
    """`weights` (sharded parquet, one row per checkpoint) and `weights_index` (one row per tensor per member)."""
    import pyarrow as pa

    index_cols = _columns(("member_path", *_INDEX_KEYS))
    shards = _WeightShards(data_dir)
    total = sum(len(item.epochs) for item in selected)
    with tqdm_bar(total=total, unit="ckpt", desc="flattening weights") as bar:
        for item in selected:
            _flatten_member(item, shards, index_cols, bar)
    written = shards.finish()
    index_table = pa.table({
        "member_path": pa.array(index_cols["member_path"], pa.string()),
        "name": pa.array(index_cols["name"], pa.string()),
        "dtype": pa.array(index_cols["dtype"], pa.string()),
        "shape": pa.array(index_cols["shape"], pa.list_(pa.int64())),
        "offset": pa.array(index_cols["offset"], pa.int64()),
        "numel": pa.array(index_cols["numel"], pa.int64()),
    })
    write_parquet(index_table, data_dir / "weights_index.parquet")
    return written


def write_parquet(table: Any, path: Path, row_group_size: int | None = None) -> None:
    """Parquet with fixed settings: the same table gives the same bytes (so an unchanged table is not re-uploaded)."""
    import pyarrow.parquet as pq

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd", row_group_size=row_group_size, write_statistics=True)
    except OSError as err:
        raise with_path(err, path) from None


