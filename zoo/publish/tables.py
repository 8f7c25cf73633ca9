"""The dataset repo's parquet tables: `members` (with each member's `split`), `checkpoints` (with each checkpoint's
`tensor_layout`), `metrics`, `tensor_layouts` (the tensors of each distinct layout), and with `--with-weights`
`weights` (flattened parameters, sharded, the shards of each split apart) and `weights_index`. Tensors are in
`zoo.layout.tensors`' documented order, the order of `zoo.weightspace`'s flat format."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.publish.columns import arrow_table, free_name, write_parquet
from zoo.publish.common import DATA_DIR, tqdm_bar
from zoo.publish.splits import SPLITS, ZooSplits
from zoo.publish.stage import ModelRepo, Placed, Selected

WEIGHTS_MAX_PARAMS = 10_000_000  # --with-weights is for small models: one row holds a whole checkpoint
WEIGHTS_SHARD_BYTES = 256 * 1024 * 1024
_RESULT_KEYS_FIRST = ("train_loss", "train_acc", "test_loss", "test_acc", "test_perplexity")


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
    return sum(entry["numel"] for entry in layout.tensor_layout(layout.read_safetensors_header(weights)))


_MEMBER_FIXED = ["member", "member_path", "modality", "stage", "kind", "state", "parent_member", "parent_path",
                 "parent_checkpoint"]
_MEMBER_TAIL = ["epochs", "last_epoch", "num_checkpoints", "model_repo", "local_folder", "last_checkpoint",
                "num_params", "metric", "metric_value"]
_MEMBER_LAST = ["config", "split"]
_CHECKPOINT_FIXED = ["member", "member_path", "modality", "stage", "epoch", "checkpoint", "is_last", "model_repo",
                     "subfolder", "revision", "subfolder_revision", "local_folder", "weights_size", "weights_sha256",
                     "tensor_layout"]
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
                   result_keys: list[str], splits: ZooSplits) -> Any:
    """One row per member: identity, parent, factors (as `factor_<key>` where a name is taken), last checkpoint,
    final results (as `final_<key>` where taken), config and split; the split settings in the parquet metadata."""
    fixed = _MEMBER_FIXED + _MEMBER_TAIL + _MEMBER_LAST
    factor_cols = {key: free_name(key, fixed, "factor_") for key in _factor_keys(item.member for item in selected)}
    taken = set(fixed + list(factor_cols.values()))
    final_cols = {key: free_name(key, taken, "final_") for key in result_keys}
    columns = _columns(_MEMBER_FIXED + list(factor_cols.values()) + _MEMBER_TAIL + list(final_cols.values())
                       + _MEMBER_LAST)
    for item in selected:
        member = item.member
        final = member.last_result or {}
        last = placed[(member.relpath, item.epochs[-1])] if item.epochs else None
        values = _member_values(item, last, local_folder)
        values.update({column: member.factors.get(key) for key, column in factor_cols.items()})
        values.update({column: final.get(key) for key, column in final_cols.items()})
        values["split"] = splits.of(member)
        _append_row(columns, values)
    return arrow_table(columns).replace_schema_metadata(splits.metadata())


def _checkpoints_table(selected: list[Selected], placed: _Placements, heads: dict[str, str],
                       local_folder: dict[str, str], result_keys: list[str],
                       layouts: dict[str, list[dict[str, Any]]]) -> Any:
    """One row per published checkpoint: where it lives, its weights file, its tensor layout (added to `layouts`:
    id -> tensors) and its epoch's results."""
    metric_cols = {key: free_name(key, _CHECKPOINT_FIXED, "metric_") for key in result_keys}
    columns = _columns(_CHECKPOINT_FIXED + list(metric_cols.values()))
    for item in selected:
        member, by_epoch = item.member, _results_by_epoch(item.member)
        for epoch in item.epochs:
            cp = placed[(member.relpath, epoch)]
            weights = cp.records[layout.WEIGHTS]
            tensors = layout.tensor_layout(layout.read_safetensors_header(member.checkpoint_dir(epoch) /
                                                                          layout.WEIGHTS))
            layout_id = layout.layout_id(tensors)
            layouts.setdefault(layout_id, tensors)
            row = by_epoch.get(epoch, {})
            values = {
                **_member_identity(member), "epoch": epoch, "checkpoint": layout.checkpoint_name(epoch),
                "is_last": epoch == item.epochs[-1], "model_repo": cp.repo, "subfolder": cp.subfolder,
                "revision": cp.ref or heads[cp.repo], "subfolder_revision": heads[cp.repo],
                "local_folder": local_folder[cp.repo], "weights_size": weights.size,
                "weights_sha256": weights.sha256, "tensor_layout": layout_id,
            }
            values.update({column: row.get(key) for key, column in metric_cols.items()})
            _append_row(columns, values)
    return arrow_table(columns)


def _tensor_layouts_table(layouts: dict[str, list[dict[str, Any]]]) -> Any:
    """One row per tensor of each distinct layout, in the documented order: what a `checkpoints` row's
    `tensor_layout` names, without downloading the checkpoint."""
    import pyarrow as pa

    rows = [(layout_id, entry) for layout_id, tensors in layouts.items() for entry in tensors]
    return pa.table({
        "layout": pa.array([layout_id for layout_id, _ in rows], pa.string()),
        **{key: pa.array([entry[key] for _, entry in rows], pa.string()) for key in ("name", "dtype")},
        "shape": pa.array([entry["shape"] for _, entry in rows], pa.list_(pa.int64())),
        **{key: pa.array([entry[key] for _, entry in rows], pa.int64()) for key in ("offset", "numel")},
    })


def _metrics_table(selected: list[Selected], result_keys: list[str]) -> Any:
    """One row per member and result.json epoch: the learning curves."""
    metric_cols = {key: free_name(key, _CURVE_FIXED, "metric_") for key in result_keys}
    columns = _columns(_CURVE_FIXED + list(metric_cols.values()))
    for item in selected:
        member = item.member
        for epoch, row in sorted(_results_by_epoch(member).items()):
            values = {**_member_identity(member), "epoch": epoch}
            values.update({column: row.get(key) for key, column in metric_cols.items()})
            _append_row(columns, values)
    return arrow_table(columns)


def build_tables(selected: list[Selected], repos: list[ModelRepo], heads: dict[str, str],
                 splits: ZooSplits) -> dict[str, Any]:
    """The `members`, `checkpoints`, `metrics` and `tensor_layouts` tables (pyarrow), rows in zoo order. `heads`
    gives each model repo's commit (or branch, for a local folder) that holds the checkpoints at their subfolders;
    `local_folder` is the model repo's folder in a `--local-dir` publish (`models`, or `models-00`, ... when the zoo
    is sharded); `splits` gives each member's split."""
    placed = {(cp.member.relpath, cp.epoch): cp for repo in repos for cp in repo.checkpoints}
    local_folder = {repo.repo_id: repo.local_folder for repo in repos}
    result_keys = _result_keys(item.member for item in selected)
    layouts: dict[str, list[dict[str, Any]]] = {}
    return {"members": _members_table(selected, placed, local_folder, result_keys, splits),
            "checkpoints": _checkpoints_table(selected, placed, heads, local_folder, result_keys, layouts),
            "metrics": _metrics_table(selected, result_keys),
            "tensor_layouts": _tensor_layouts_table(layouts)}


def _read_flat(weights: Path) -> tuple[Any, list[dict[str, Any]]]:
    """A checkpoint's tensors (in the documented order) as one float32 vector, and where each tensor lies in it."""
    import numpy as np
    from safetensors import safe_open

    header = layout.read_safetensors_header(weights)
    index = layout.tensor_layout(header)
    parts = []
    with safe_open(str(weights), framework="numpy") as handle:
        for entry in index:
            if entry["dtype"] == "BF16":  # numpy has no bfloat16: widen the raw bits
                array = _read_bf16(weights, header[entry["name"]])
            else:
                array = handle.get_tensor(entry["name"])
            parts.append(np.ascontiguousarray(array, dtype=np.float32).reshape(-1))
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


class _WeightShards:
    """The `weights` table, written as parquet shards of about `WEIGHTS_SHARD_BYTES` of flattened checkpoints,
    numbered across splits; `finish` ends a split's shards."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.shards: list[str] = []
        self.closed = 0  # shards of the splits finished so far
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
        """Write what is pending and return the shard paths of the split it ends."""
        self.flush()
        written, self.closed = self.shards[self.closed:], len(self.shards)
        return written

    def empty(self) -> list[str]:
        """One shard of no rows, which keeps a config without any checkpoint loadable."""
        import pyarrow as pa

        self._write(pa.table({"member": pa.array([], pa.string()), "member_path": pa.array([], pa.string()),
                              "epoch": pa.array([], pa.int64()), "weights": pa.array([], pa.list_(pa.float32()))}))
        return self.finish()

    def _write(self, table: Any, row_group_size: int | None = None) -> None:
        name = f"{DATA_DIR}/weights/weights-{len(self.shards):05d}.parquet"
        write_parquet(table, self.data_dir.parent / name, row_group_size=row_group_size)
        self.shards.append(name)


_Layout = list[dict[str, Any]]  # a checkpoint's tensors: name, dtype, shape, offset, numel


def _flatten_member(item: Selected, shards: _WeightShards, bar: Any) -> _Layout | None:
    """Add a member's checkpoints to `shards` and return their tensor layout (None without checkpoints); every
    checkpoint must hold the same tensors as its first."""
    member, first_layout = item.member, None
    for epoch in item.epochs:
        weights = member.checkpoint_dir(epoch) / layout.WEIGHTS
        if (count := num_parameters(weights)) > WEIGHTS_MAX_PARAMS:
            raise ValueError(f"{weights}: {count} parameters, more than the "
                             f"{WEIGHTS_MAX_PARAMS} --with-weights takes per checkpoint")
        vector, index = _read_flat(weights)
        if first_layout is None:
            first_layout = index
        elif index != first_layout:
            raise ValueError(f"{weights}: tensors differ from the member's first published checkpoint")
        shards.add(member, epoch, vector)
        bar.update(1)
    return first_layout


def _write_index(selected: list[Selected], layouts: dict[str, _Layout], data_dir: Path) -> None:
    """`weights_index`: one row per tensor per member, in zoo order."""
    import pyarrow as pa

    rows = [(item.relpath, entry) for item in selected for entry in layouts.get(item.relpath) or []]
    index_table = pa.table({
        "member_path": pa.array([relpath for relpath, _ in rows], pa.string()),
        "name": pa.array([entry["name"] for _, entry in rows], pa.string()),
        "dtype": pa.array([entry["dtype"] for _, entry in rows], pa.string()),
        "shape": pa.array([entry["shape"] for _, entry in rows], pa.list_(pa.int64())),
        "offset": pa.array([entry["offset"] for _, entry in rows], pa.int64()),
        "numel": pa.array([entry["numel"] for _, entry in rows], pa.int64()),
    })
    write_parquet(index_table, data_dir / "weights_index.parquet")


def write_weight_tables(selected: list[Selected], data_dir: Path, splits: ZooSplits) -> dict[str, list[str]]:
    """`weights` (sharded parquet, one row per checkpoint; the shards of each split apart, split after split) and
    `weights_index` (one row per tensor per member). Returns the shard paths of each split that has checkpoints (a
    split of no rows would stop `load_dataset` from preparing the others); without any, one empty `train` shard."""
    layouts: dict[str, _Layout | None] = {}
    shards = _WeightShards(data_dir)
    files: dict[str, list[str]] = {}
    total = sum(len(item.epochs) for item in selected)
    with tqdm_bar(total=total, unit="ckpt", desc="flattening weights") as bar:
        for split in SPLITS:
            for item in selected:
                if splits.of(item.member) == split:
                    layouts[item.relpath] = _flatten_member(item, shards, bar)
            if written := shards.finish():
                files[split] = written
    _write_index(selected, layouts, data_dir)
    return files or {"train": shards.empty()}
