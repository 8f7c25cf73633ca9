"""Publish a zoo to the Hugging Face Hub, and verify a published zoo.

`zoo publish ZOO --repo-id org/name` makes two repos:

- the dataset repo `org/name`: parquet tables under `data/` (configs `members`, `checkpoints`, `metrics`, and with
  `--with-weights` `weights` and `weights_index`), declared in the card's YAML `configs:` so `load_dataset(repo, name)`
  works without a script; the card (README.md, from `hub_card/dataset_card.md`), performance plots under `plots/`,
  `spec.yaml` (the zoo spec) and `manifest.json` (size and sha256 of every file of both repos);
- the model repo (`org/name-models` by default): every published checkpoint folder at
  `<member relpath>/checkpoint_<epoch>/`, so `AutoModel.from_pretrained(repo, subfolder=...)` loads it.

Both repos are staged in full on disk first (a temp folder, or `--local-dir/{dataset,models}` written atomically),
byte-for-byte deterministic, then pushed with `HfApi.upload_folder`: unchanged files are skipped by huggingface_hub,
so a rerun after an interruption, or after new members were added, uploads only what changed. The model repo is
pushed first and the tables name its commit, so they never point at checkpoints that are not there yet. The folders
the publisher owns (`vision/`, `language/` in the model repo; `data/`, `plots/` in the dataset repo) mirror the
zoo: files there that are no longer staged are deleted by the same commit.

`zoo verify REPO_ID` (or a `--local-dir` folder) checks every file of both repos against the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import __version__, layout

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "transformer-zoo/manifest/v1"
CARD = "README.md"
SPEC = "spec.yaml"
DATA_DIR = "data"
PLOTS_DIR = "plots"
TEMPLATES = Path(__file__).resolve().parent.parent / "hub_card"  # the source tree; installed: zoo/hub_card
if not TEMPLATES.is_dir():
    TEMPLATES = Path(__file__).resolve().parent / "hub_card"
DATASET_TEMPLATE = "dataset_card.md"
MODEL_TEMPLATE = "model_card.md"
DEFAULT_LICENSE = "apache-2.0"
LICENSE_NAMES = {"apache-2.0": "Apache License 2.0", "mit": "MIT License", "cc-by-4.0": "CC BY 4.0"}
# Folders of each repo that the publisher owns: remote files there that are not staged any more get deleted.
MODEL_OWNED = [f"{modality}/*" for modality in layout.MODALITIES]
DATASET_OWNED = [f"{DATA_DIR}/*", f"{PLOTS_DIR}/*"]
WEIGHTS_MAX_PARAMS = 10_000_000  # --with-weights is for small models: one row holds a whole checkpoint
WEIGHTS_SHARD_BYTES = 256 * 1024 * 1024
MODEL_CARD_MAX_MEMBERS = 200
HUB_MAX_FILES = 100_000
HUB_MAX_FOLDER_ENTRIES = 10_000
# Trainer and tool leftovers that may sit in a checkpoint folder and must never be published (pickles included).
_SKIP_SUFFIXES = (".tmp", ".lock", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")
_SKIP_NAMES = {"trainer_state.json", "training_args.json"}
_SKIP_PREFIXES = ("rng_state", "optimizer", "scheduler")
_RESULT_KEYS_FIRST = ("train_loss", "train_acc", "test_loss", "test_acc", "test_perplexity")


# ---------------------------------------------------------------- small helpers


@dataclass(frozen=True)
class FileRecord:
    """One staged file: its path in the repo, size and sha256."""

    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def sha256_file(path: str | Path, chunk: int = 1 << 20, progress: Any = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if progress is not None:
                progress.update(len(block))
    return digest.hexdigest()


def _tqdm(**kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def _link_or_copy(source: Path, target: Path, link: bool) -> None:
    """Hard-link `source` into a private staging folder (zoo files are replaced by rename, never rewritten in
    place), or copy it (always, for a folder the user keeps)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> str:
    """`repo_id` when it is a valid `<namespace>/<name>`, else a one-line ValueError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"{flag} {repo_id!r}: expected <namespace>/<name>, e.g. org/transformer-zoo")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{flag} {repo_id!r}: not a valid repo id ({str(err).splitlines()[0]})") from None
    return repo_id


def default_model_repo_id(repo_id: str) -> str:
    return f"{repo_id}-models"


def _short_list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _hub_errors() -> tuple[type[Exception], ...]:
    """What a failed Hub call raises: HTTP errors, and transport errors (refused connection, timeout)."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[Exception]] = [HfHubHTTPError, OSError]
    try:
        import httpx2  # huggingface_hub's HTTP client

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _hf_error(action: str, err: Exception) -> ValueError:
    """A one-line ValueError for a failed Hub call (the token is never part of the message)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return ValueError(f"{action}: {first}")


# ---------------------------------------------------------------- what gets published


@dataclass
class Selected:
    """A member to publish and the epochs of its checkpoints that verify."""

    member: layout.MemberInfo
    epochs: list[int]

    @property
    def relpath(self) -> str:
        return self.member.relpath


def select_members(zoo_dir: str | Path, allow_incomplete: bool = False) -> list[Selected]:
    """The zoo's members with their publishable checkpoints. Without `allow_incomplete`, a member that is not
    complete (incomplete, failed, pending) is a ValueError naming them all."""
    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise ValueError(f"{zoo_dir}: not a folder")
    members = layout.scan_members(zoo_dir)
    if not members:
        raise ValueError(f"{zoo_dir}: no zoo members found")
    not_complete = [member for member in members if member.state != "complete"]
    if not_complete and not allow_incomplete:
        names = [f"{member.relpath} ({member.state})" for member in not_complete]
        raise ValueError(f"{zoo_dir}: {len(names)} member(s) not complete: {_short_list(names)}; finish them, or "
                         "publish what verifies with --allow-incomplete")
    return [
        Selected(member, [epoch for epoch in member.checkpoints
                          if layout.verify_checkpoint(member.checkpoint_dir(epoch)) is None])
        for member in members
    ]


def checkpoint_files(checkpoint_dir: str | Path) -> list[str]:
    """The publishable files of a checkpoint folder (relative, sorted): no hidden or temporary file, no trainer
    state, no pickle."""
    checkpoint_dir = Path(checkpoint_dir)
    found = []
    for path in sorted(checkpoint_dir.rglob("*")):
        rel = path.relative_to(checkpoint_dir)
        name = path.name
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if name.endswith(_SKIP_SUFFIXES) or name in _SKIP_NAMES or name.startswith(_SKIP_PREFIXES):
            continue
        if layout.TRAINER_STATE_DIR in rel.parts:
            continue
        found.append(rel.as_posix())
    return found


def subfolder(member: layout.MemberInfo, epoch: int) -> str:
    return f"{member.relpath}/{layout.checkpoint_name(epoch)}"


# ---------------------------------------------------------------- staging the model repo


def stage_models(selected: list[Selected], out: Path, link: bool = False) -> list[FileRecord]:
    """Copy (or hard-link) every published checkpoint folder into `out` at `<relpath>/checkpoint_<epoch>/` and
    hash it."""
    jobs: list[tuple[Path, str]] = []
    for item in selected:
        for epoch in item.epochs:
            source = item.member.checkpoint_dir(epoch)
            jobs += [(source / rel, f"{subfolder(item.member, epoch)}/{rel}") for rel in checkpoint_files(source)]
    records = []
    with _tqdm(total=sum(src.stat().st_size for src, _ in jobs), unit="B", unit_scale=True,
               desc="staging checkpoints") as bar:
        for source, repo_path in jobs:
            target = out / repo_path
            _link_or_copy(source, target, link)
            records.append(FileRecord(repo_path, target.stat().st_size, sha256_file(target, progress=bar)))
    return records


# ---------------------------------------------------------------- tables


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


def _text(value: Any) -> str | None:
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
    return pa.array([_text(value) for value in values], pa.string())


def _table(columns: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    return pa.table({name: typed_column(values) for name, values in columns.items()})


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


def _final_result(member: layout.MemberInfo) -> dict[str, Any]:
    rows = _results_by_epoch(member)
    return rows[max(rows)] if rows else {}


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


def primary_metric(member: layout.MemberInfo) -> str | None:
    metric = member.config.get("metric")
    if metric:
        return str(metric)
    final = _final_result(member)
    return next((key for key in ("test_acc", "test_perplexity", "test_loss") if key in final), None)


def build_tables(selected: list[Selected], model_records: list[FileRecord], model_repo_id: str,
                 revision: str) -> dict[str, Any]:
    """The `members`, `checkpoints` and `metrics` tables (pyarrow), rows in zoo order."""
    records = {record.path: record for record in model_records}
    members = [item.member for item in selected]
    factor_keys: dict[str, None] = {}
    for member in members:
        for key in member.factors:
            factor_keys.setdefault(str(key), None)
    result_keys = _result_keys(members)

    fixed = ["member", "member_path", "modality", "stage", "kind", "state", "parent_member", "parent_path",
             "parent_checkpoint"]
    tail = ["epochs", "last_epoch", "num_checkpoints", "last_checkpoint", "num_params", "metric", "metric_value"]
    factor_cols = {key: _free_name(key, fixed + tail, "factor_") for key in factor_keys}
    taken = set(fixed + tail + list(factor_cols.values()))
    final_cols = {key: _free_name(key, taken, "final_") for key in result_keys}
    member_cols: dict[str, list[Any]] = {name: [] for name in fixed + list(factor_cols.values())}
    member_cols.update({name: [] for name in tail + list(final_cols.values()) + ["config"]})
    for item in selected:
        member = item.member
        parent = member.parent or {}
        final = _final_result(member)
        metric = primary_metric(member)
        last = item.epochs[-1] if item.epochs else None
        values = {
            "member": member.name, "member_path": member.relpath, "modality": member.modality,
            "stage": member.stage, "kind": member.config.get("kind"), "state": member.state,
            "parent_member": parent.get("member"), "parent_path": parent.get("path"),
            "parent_checkpoint": parent.get("checkpoint"), "epochs": member.planned_epochs,
            "last_epoch": final.get("epoch"), "num_checkpoints": len(item.epochs),
            "last_checkpoint": subfolder(member, last) if last is not None else None,
            "num_params": num_parameters(member.checkpoint_dir(last) / layout.WEIGHTS) if last is not None else None,
            "metric": metric, "metric_value": final.get(metric) if metric else None,
            "config": json.dumps(member.config, sort_keys=True, default=str),
        }
        values.update({column: member.factors.get(key) for key, column in factor_cols.items()})
        values.update({column: final.get(key) for key, column in final_cols.items()})
        for name, column in member_cols.items():
            column.append(values[name])

    ckpt_fixed = ["member", "member_path", "modality", "stage", "epoch", "checkpoint", "is_last", "model_repo",
                  "subfolder", "revision", "weights_size", "weights_sha256"]
    metric_cols = {key: _free_name(key, ckpt_fixed, "metric_") for key in result_keys}
    ckpt_cols: dict[str, list[Any]] = {name: [] for name in ckpt_fixed + list(metric_cols.values())}
    for item in selected:
        member, by_epoch = item.member, _results_by_epoch(item.member)
        for epoch in item.epochs:
            weights = records[f"{subfolder(member, epoch)}/{layout.WEIGHTS}"]
            row = by_epoch.get(epoch, {})
            values = {
                "member": member.name, "member_path": member.relpath, "modality": member.modality,
                "stage": member.stage, "epoch": epoch, "checkpoint": layout.checkpoint_name(epoch),
                "is_last": epoch == item.epochs[-1], "model_repo": model_repo_id,
                "subfolder": subfolder(member, epoch), "revision": revision, "weights_size": weights.size,
                "weights_sha256": weights.sha256,
            }
            values.update({column: row.get(key) for key, column in metric_cols.items()})
            for name, column in ckpt_cols.items():
                column.append(values[name])

    curve_fixed = ["member", "member_path", "modality", "stage", "epoch"]
    curve_cols_map = {key: _free_name(key, curve_fixed, "metric_") for key in result_keys}
    curve_cols: dict[str, list[Any]] = {name: [] for name in curve_fixed + list(curve_cols_map.values())}
    for item in selected:
        member = item.member
        for epoch, row in sorted(_results_by_epoch(member).items()):
            values = {"member": member.name, "member_path": member.relpath, "modality": member.modality,
                      "stage": member.stage, "epoch": epoch}
            values.update({column: row.get(key) for key, column in curve_cols_map.items()})
            for name, column in curve_cols.items():
                column.append(values[name])

    return {"members": _table(member_cols), "checkpoints": _table(ckpt_cols), "metrics": _table(curve_cols)}


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


def write_weight_tables(selected: list[Selected], data_dir: Path) -> list[str]:
    """`weights` (sharded parquet, one row per checkpoint) and `weights_index` (one row per tensor per member)."""
    import numpy as np
    import pyarrow as pa

    index_cols: dict[str, list[Any]] = {key: [] for key in ("member_path", "name", "dtype", "shape", "offset",
                                                            "numel")}
    shards: list[str] = []
    rows: list[tuple[str, str, int, Any]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal rows, pending_bytes
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
        name = f"{DATA_DIR}/weights/weights-{len(shards):05d}.parquet"
        group = max(1, (64 << 20) // max(1, 4 * max(lengths)))
        write_parquet(table, data_dir.parent / name, row_group_size=group)
        shards.append(name)
        rows, pending_bytes = [], 0

    total = sum(len(item.epochs) for item in selected)
    with _tqdm(total=total, unit="ckpt", desc="flattening weights") as bar:
        for item in selected:
            member, layout_seen = item.member, None
            for epoch in item.epochs:
                weights = member.checkpoint_dir(epoch) / layout.WEIGHTS
                if num_parameters(weights) > WEIGHTS_MAX_PARAMS:
                    raise ValueError(f"{weights}: {num_parameters(weights)} parameters, more than the "
                                     f"{WEIGHTS_MAX_PARAMS} --with-weights takes per checkpoint")
                vector, index = _read_flat(weights)
                if layout_seen is None:
                    layout_seen = index
                    for entry in index:
                        index_cols["member_path"].append(member.relpath)
                        for key in ("name", "dtype", "shape", "offset", "numel"):
                            index_cols[key].append(entry[key])
                elif index != layout_seen:
                    raise ValueError(f"{weights}: tensors differ from the member's first published checkpoint")
                rows.append((member.name, member.relpath, epoch, vector))
                pending_bytes += vector.nbytes
                if pending_bytes >= WEIGHTS_SHARD_BYTES:
                    flush()
                bar.update(1)
    flush()
    if not shards:  # no checkpoint at all: an empty shard keeps the config loadable
        rows_empty = pa.table({"member": pa.array([], pa.string()), "member_path": pa.array([], pa.string()),
                               "epoch": pa.array([], pa.int64()), "weights": pa.array([], pa.list_(pa.float32()))})
        name = f"{DATA_DIR}/weights/weights-00000.parquet"
        write_parquet(rows_empty, data_dir.parent / name)
        shards.append(name)
    index_table = pa.table({
        "member_path": pa.array(index_cols["member_path"], pa.string()),
        "name": pa.array(index_cols["name"], pa.string()),
        "dtype": pa.array(index_cols["dtype"], pa.string()),
        "shape": pa.array(index_cols["shape"], pa.list_(pa.int64())),
        "offset": pa.array(index_cols["offset"], pa.int64()),
        "numel": pa.array(index_cols["numel"], pa.int64()),
    })
    write_parquet(index_table, data_dir / "weights_index.parquet")
    return shards


def write_parquet(table: Any, path: Path, row_group_size: int | None = None) -> None:
    """Parquet with fixed settings: the same table gives the same bytes (so an unchanged table is not re-uploaded)."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", row_group_size=row_group_size, write_statistics=True)


# ---------------------------------------------------------------- plots


def _summaries(selected: list[Selected]) -> list[dict[str, Any]]:
    out = []
    for item in selected:
        member = item.member
        metric = primary_metric(member)
        curve = [(epoch, row.get(metric)) for epoch, row in sorted(_results_by_epoch(member).items())]
        curve = [(epoch, value) for epoch, value in curve if isinstance(value, (int, float))]
        final = _final_result(member).get(metric) if metric else None
        out.append({"modality": member.modality, "stage": member.stage, "metric": metric, "curve": curve,
                    "value": final if isinstance(final, (int, float)) and not isinstance(final, bool) else None,
                    "factors": {"kind": member.config.get("kind"), **member.factors}})
    return out


def render_plots(selected: list[Selected], max_factors: int = 6) -> list[dict[str, Any]]:
    """One PNG per (modality, stage): the metric's curves over epochs, its final value across members, and the
    final value against each generating factor that varies. PNGs carry no metadata, so they are reproducible."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summaries = _summaries(selected)
    plots = []
    for modality in layout.MODALITIES:
        for stage in layout.STAGES:
            group = [s for s in summaries if s["modality"] == modality and s["stage"] == stage and s["metric"]]
            if not group:
                continue
            metric = Counter(s["metric"] for s in group).most_common(1)[0][0]
            group = [s for s in group if s["metric"] == metric]
            values = [s["value"] for s in group if s["value"] is not None]
            if not values:
                continue
            factors: dict[str, None] = {}
            for s in group:
                for key in s["factors"]:
                    factors.setdefault(key, None)
            varying = [key for key in factors
                       if len({_text(s["factors"].get(key)) for s in group if s["value"] is not None}) > 1]
            varying = varying[:max_factors]
            panels = 2 + len(varying)
            columns = min(panels, 4)
            rows = -(-panels // columns)
            fig = Figure(figsize=(3.4 * columns, 2.9 * rows + 0.4), dpi=90)
            FigureCanvasAgg(fig)
            axes = fig.subplots(rows, columns, squeeze=False).reshape(-1)
            for ax in axes[panels:]:
                ax.set_axis_off()
            for s in group:
                if s["curve"]:
                    axes[0].plot(*zip(*s["curve"]), marker=".", alpha=0.6, linewidth=1)
            axes[0].set(title="over training", xlabel="epoch", ylabel=metric)
            ranked = sorted(values)
            axes[1].plot(range(1, len(ranked) + 1), ranked, "o")
            axes[1].set(title=f"{len(ranked)} members", xlabel="rank", ylabel=metric)
            for ax, key in zip(axes[2:], varying):
                points = [(_text(s["factors"].get(key)) or "null", s["value"]) for s in group if s["value"] is not None]
                labels = sorted({label for label, _ in points}, key=_sort_label)
                where = {label: pos for pos, label in enumerate(labels)}
                ax.plot([where[label] for label, _ in points], [value for _, value in points], "o", alpha=0.7)
                means = [sum(v for lab, v in points if lab == label) / sum(1 for lab, _ in points if lab == label)
                         for label in labels]
                ax.plot(range(len(labels)), means, "_", markersize=20, color="black")
                ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
                ax.set(title=f"by {key}", xlabel=key, ylabel=metric)
            fig.suptitle(f"{modality} {stage}: {metric}")
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", metadata={"Software": None})
            plots.append({"path": f"{PLOTS_DIR}/{modality}_{stage}.png", "data": buffer.getvalue(),
                          "title": f"{modality.capitalize()} {stage}: {metric} across members and factors"})
    return plots


def _sort_label(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


# ---------------------------------------------------------------- cards, spec, manifest


def _template(name: str) -> str:
    path = TEMPLATES / name
    if not path.is_file():
        raise ValueError(f"{path}: card template not found (hub_card/ of the transformer-zoo source tree)")
    return str(path)


def citation(repo_id: str, title: str) -> str:
    key = repo_id.replace("/", "-")
    return (f"@misc{{{key},\n  title = {{{{{title}}}: a transformer model zoo}},\n"
            f"  author = {{{repo_id.split('/')[0]}}},\n  howpublished = {{Hugging Face dataset {repo_id}}},\n"
            f"  note = {{Generated with transformer-zoo; in the spirit of model zoos and soups of transformer "
            f"models}}\n}}")


def _zoo_info(zoo_dir: Path) -> tuple[dict[str, Any], str | None]:
    try:
        data = layout.read_zoo_file(zoo_dir)
    except layout.LayoutError as err:
        raise ValueError(str(err)) from None
    if not data:
        return {}, None
    return data.get("spec") or {}, data.get("spec_hash")


def _grid(selected: list[Selected]) -> dict[str, list[str]]:
    values: dict[str, set[str]] = {}
    for item in selected:
        for key, value in item.member.factors.items():
            values.setdefault(str(key), set()).add(_text(value) or "null")
    return {key: sorted(found, key=_sort_label) for key, found in values.items()}


def _counts(selected: list[Selected]) -> list[dict[str, Any]]:
    counts = Counter((item.member.modality, item.member.stage, item.member.state) for item in selected)
    order = {name: pos for pos, name in enumerate(layout.MODALITIES + layout.STAGES + layout.STATES)}
    return [{"modality": m, "stage": s, "state": st, "count": n}
            for (m, s, st), n in sorted(counts.items(), key=lambda kv: tuple(order.get(k, 99) for k in kv[0]))]


def _table_docs(tables: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {"members": "member", "checkpoints": "checkpoint", "metrics": "member and epoch",
            "weights": "checkpoint", "weights_index": "tensor of a member"}
    return [{"name": name, "row": rows.get(name, "row"), "columns": [f"`{c}`" for c in schema]}
            for name, schema in tables.items()]


def render_dataset_card(*, repo_id: str, model_repo_id: str, title: str, description: str, license_id: str,
                        selected: list[Selected], table_files: dict[str, list[str]],
                        table_columns: dict[str, list[str]], spec_yaml: str, spec_hash: str | None,
                        plots: list[dict[str, Any]], with_weights: bool, endpoint: str) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    configs = [
        {"config_name": name, "data_files": [{"split": "train", "path": paths if len(paths) > 1 else paths[0]}],
         **({"default": True} if name == "members" else {})}
        for name, paths in table_files.items()
    ]
    n_checkpoints = sum(len(item.epochs) for item in selected)
    card_data = DatasetCardData(
        license=license_id, pretty_name=title, tags=["model-zoo", "transformer-zoo", "weight-space-learning"],
        size_categories=[_size_category(len(selected))], configs=configs,
    )
    card = DatasetCard.from_template(
        card_data, template_path=_template(DATASET_TEMPLATE), title=title, description=description,
        repo_id=repo_id, model_repo_id=model_repo_id, model_repo_url=f"{endpoint}/{model_repo_id}",
        n_members=len(selected), n_checkpoints=n_checkpoints, counts=_counts(selected),
        tables=_table_docs(table_columns), with_weights=with_weights, spec_yaml=spec_yaml, spec_hash=spec_hash,
        grid=_grid(selected), plots=[{"path": p["path"], "title": p["title"]} for p in plots],
        license_name=LICENSE_NAMES.get(license_id, license_id), citation=citation(repo_id, title),
    )
    return str(card).rstrip("\n") + "\n"


def render_model_card(*, repo_id: str, model_repo_id: str, title: str, license_id: str,
                      selected: list[Selected], endpoint: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    # No `base_model`: the repo holds a whole population; a finetuned member's base is another subfolder of this
    # same repo, which the metadata field cannot express.
    card_data = ModelCardData(license=license_id, library_name="transformers", datasets=[repo_id],
                              tags=["model-zoo", "transformer-zoo"])
    published = [item for item in selected if item.epochs]
    shown = [{"name": item.member.name, "modality": item.member.modality, "stage": item.member.stage,
              "kind": item.member.config.get("kind") or "", "epochs": item.epochs,
              "last": subfolder(item.member, item.epochs[-1])} for item in published[:MODEL_CARD_MAX_MEMBERS]]
    card = ModelCard.from_template(
        card_data, template_path=_template(MODEL_TEMPLATE), title=title, repo_id=repo_id,
        model_repo_id=model_repo_id, dataset_url=f"{endpoint}/datasets/{repo_id}", n_members=len(published),
        n_checkpoints=sum(len(item.epochs) for item in published), members=shown,
        members_left_out=max(0, len(published) - len(shown)),
        license_name=LICENSE_NAMES.get(license_id, license_id), citation=citation(repo_id, title),
    )
    return str(card).rstrip("\n") + "\n"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def hash_folder(folder: Path, desc: str) -> list[FileRecord]:
    """Size and sha256 of every file under `folder` (repo paths, sorted)."""
    paths = sorted(path for path in folder.rglob("*") if path.is_file())
    records = []
    with _tqdm(total=sum(p.stat().st_size for p in paths), unit="B", unit_scale=True, desc=desc) as bar:
        for path in paths:
            records.append(FileRecord(path.relative_to(folder).as_posix(), path.stat().st_size,
                                      sha256_file(path, progress=bar)))
    return records


def build_manifest(repo_id: str, model_repo_id: str, model_revision: str, dataset_files: list[FileRecord],
                   model_files: list[FileRecord]) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "generator": f"transformer-zoo {__version__}",
        "dataset_repo": repo_id,
        "model_repo": model_repo_id,
        "model_revision": model_revision,
        "files": {
            "dataset": [record.as_dict() for record in sorted(dataset_files, key=lambda r: r.path)],
            "model": [record.as_dict() for record in sorted(model_files, key=lambda r: r.path)],
        },
    }


# ---------------------------------------------------------------- staging the dataset repo


def stage_dataset(zoo_dir: Path, selected: list[Selected], out: Path, *, repo_id: str, model_repo_id: str,
                  model_revision: str, model_files: list[FileRecord], with_weights: bool, endpoint: str) -> list[
                      FileRecord]:
    """Write the dataset repo into `out`: tables, plots, spec, card and (last) the manifest. Returns its files."""
    import yaml

    spec, spec_hash = _zoo_info(zoo_dir)
    title = str(spec.get("name") or zoo_dir.resolve().name)
    description = str(spec.get("description") or "")
    license_id = str(spec.get("license") or DEFAULT_LICENSE).lower()

    data_dir = out / DATA_DIR
    tables = build_tables(selected, model_files, model_repo_id, model_revision)
    table_files: dict[str, list[str]] = {}
    table_columns: dict[str, list[str]] = {}
    for name, table in tables.items():
        write_parquet(table, data_dir / f"{name}.parquet")
        table_files[name] = [f"{DATA_DIR}/{name}.parquet"]
        table_columns[name] = table.column_names
    if with_weights:
        table_files["weights"] = write_weight_tables(selected, data_dir)
        table_columns["weights"] = ["member", "member_path", "epoch", "weights"]
        table_files["weights_index"] = [f"{DATA_DIR}/weights_index.parquet"]
        table_columns["weights_index"] = ["member_path", "name", "dtype", "shape", "offset", "numel"]

    plots = render_plots(selected)
    for plot in plots:
        _write(out / plot["path"], plot["data"])
    spec_yaml = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True) if spec else "{}\n"
    _write(out / SPEC, spec_yaml.encode())
    card = render_dataset_card(
        repo_id=repo_id, model_repo_id=model_repo_id, title=title, description=description, license_id=license_id,
        selected=selected, table_files=table_files, table_columns=table_columns, spec_yaml=spec_yaml,
        spec_hash=spec_hash, plots=plots, with_weights=with_weights, endpoint=endpoint)
    _write(out / CARD, card.encode())
    records = hash_folder(out, "hashing dataset files")
    manifest = build_manifest(repo_id, model_repo_id, model_revision, records, model_files)
    _write(out / MANIFEST, _dump_json(manifest))
    return records


def stage_model_card(out: Path, zoo_dir: Path, selected: list[Selected], *, repo_id: str, model_repo_id: str,
                     endpoint: str) -> FileRecord:
    spec, _ = _zoo_info(zoo_dir)
    title = str(spec.get("name") or zoo_dir.resolve().name)
    license_id = str(spec.get("license") or DEFAULT_LICENSE).lower()
    card = render_model_card(repo_id=repo_id, model_repo_id=model_repo_id, title=title, license_id=license_id,
                             selected=selected, endpoint=endpoint).encode()
    _write(out / CARD, card)
    return FileRecord(CARD, len(card), hashlib.sha256(card).hexdigest())


# ---------------------------------------------------------------- publish


@dataclass
class PublishReport:
    dataset_repo: str
    model_repo: str
    members: int
    checkpoints: int
    not_complete: list[str]
    dataset_files: list[FileRecord] = field(default_factory=list)
    model_files: list[FileRecord] = field(default_factory=list)
    model_revision: str = ""
    dataset_commit: str | None = None
    local_dir: Path | None = None


def publish(zoo_dir: str | Path, repo_id: str, *, model_repo_id: str | None = None,
            local_dir: str | Path | None = None, with_weights: bool = False, allow_incomplete: bool = False,
            private: bool = False, revision: str | None = None, api: Any = None) -> PublishReport:
    """Stage the zoo's dataset and model repos and push them (or, with `local_dir`, write them there: nothing is
    pushed and no network call is made). See the module docstring."""
    zoo_dir = Path(zoo_dir)
    check_repo_id(repo_id)
    model_repo_id = check_repo_id(model_repo_id, "--model-repo-id") if model_repo_id else default_model_repo_id(
        repo_id)
    if model_repo_id == repo_id:
        raise ValueError(f"--model-repo-id {model_repo_id!r} must differ from --repo-id")
    branch = revision or "main"
    selected = select_members(zoo_dir, allow_incomplete)
    report = PublishReport(repo_id, model_repo_id, len(selected), sum(len(item.epochs) for item in selected),
                           [item.relpath for item in selected if item.member.state != "complete"])
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT.rstrip("/")
    if local_dir is not None:
        local_dir = Path(local_dir)
        if local_dir.exists() and not local_dir.is_dir():
            raise ValueError(f"--local-dir {local_dir}: exists and is not a folder")
        with ExitStack() as stack:
            models_tmp = stack.enter_context(layout.atomic_dir(local_dir / "models"))
            dataset_tmp = stack.enter_context(layout.atomic_dir(local_dir / "dataset"))
            report.model_files = _stage_model_repo(zoo_dir, selected, models_tmp, repo_id, model_repo_id, endpoint)
            report.model_revision = branch
            report.dataset_files = stage_dataset(
                zoo_dir, selected, dataset_tmp, repo_id=repo_id, model_repo_id=model_repo_id, model_revision=branch,
                model_files=report.model_files, with_weights=with_weights, endpoint=endpoint)
        report.local_dir = local_dir
        return report

    from huggingface_hub import HfApi

    hub_errors = _hub_errors()
    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix=".publish_staging.", dir=_staging_parent(zoo_dir)) as tmp:
        models_dir, dataset_dir = Path(tmp) / "models", Path(tmp) / "dataset"
        report.model_files = _stage_model_repo(zoo_dir, selected, models_dir, repo_id, model_repo_id, endpoint,
                                               link=True)
        message = f"transformer-zoo: {report.members} members, {report.checkpoints} checkpoints"
        try:
            model_commit = _push(api, model_repo_id, "model", models_dir, branch, private, message, MODEL_OWNED)
        except hub_errors as err:
            raise _hf_error(f"push to model repo {model_repo_id}", err) from None
        report.model_revision = model_commit
        report.dataset_files = stage_dataset(
            zoo_dir, selected, dataset_dir, repo_id=repo_id, model_repo_id=model_repo_id,
            model_revision=model_commit, model_files=report.model_files, with_weights=with_weights,
            endpoint=endpoint)
        try:
            report.dataset_commit = _push(api, repo_id, "dataset", dataset_dir, branch, private, message,
                                          DATASET_OWNED)
        except hub_errors as err:
            raise _hf_error(f"push to dataset repo {repo_id}", err) from None
    return report


def _stage_model_repo(zoo_dir: Path, selected: list[Selected], out: Path, repo_id: str, model_repo_id: str,
                      endpoint: str, link: bool = False) -> list[FileRecord]:
    records = stage_models(selected, out, link)
    warn_hub_limits(model_repo_id, [record.path for record in records])
    card = stage_model_card(out, zoo_dir, selected, repo_id=repo_id, model_repo_id=model_repo_id,
                            endpoint=endpoint)
    return sorted([*records, card], key=lambda record: record.path)


def warn_hub_limits(repo_id: str, paths: list[str]) -> list[str]:
    """Warn (stderr) where a repo would pass the Hub's limits: 100k files per repo, 10k entries per folder."""
    warnings = []
    if len(paths) >= HUB_MAX_FILES:
        warnings.append(f"{repo_id}: {len(paths)} files, the Hub takes fewer than {HUB_MAX_FILES} per repo")
    entries: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        for depth in range(len(parts)):
            entries.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    for folder, names in sorted(entries.items()):
        if len(names) >= HUB_MAX_FOLDER_ENTRIES:
            warnings.append(f"{repo_id}: folder {folder or '/'} has {len(names)} entries, the Hub takes fewer than "
                            f"{HUB_MAX_FOLDER_ENTRIES}")
    for warning in warnings:
        print(f"zoo publish: warning: {warning}", file=sys.stderr)
    return warnings


def _staging_parent(zoo_dir: Path) -> Path | None:
    """Stage inside the zoo (a hidden folder, skipped by scans; not `.tmp_`, which `layout.clean_temporaries` of a
    concurrent run would delete) so checkpoints are hard-linked, not copied; the system temp folder when the zoo is
    read-only."""
    return zoo_dir if os.access(zoo_dir, os.W_OK) else None


def _push(api: Any, repo_id: str, repo_type: str, folder: Path, branch: str, private: bool, message: str,
          owned: list[str]) -> str:
    """Create the repo (and branch) if needed and upload `folder`; returns the commit the branch now points at."""
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if branch != "main":
        api.create_branch(repo_id, repo_type=repo_type, branch=branch, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), revision=branch,
                             commit_message=message, delete_patterns=owned)
    return info.oid


# ---------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    target: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def _check(where: str, path: str, expected: dict[str, Any], size: int, sha: str) -> str | None:
    if size != expected["size"]:
        return f"{where}: {path}: size {size}, manifest says {expected['size']}"
    if sha != expected["sha256"]:
        return f"{where}: {path}: sha256 {sha}, manifest says {expected['sha256']}"
    return None


def _parse_manifest(data: bytes, source: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{source}: not a transformer-zoo manifest (no format {MANIFEST_FORMAT!r})")
    for key in ("dataset", "model"):
        files = manifest.get("files", {}).get(key)
        if not isinstance(files, list) or not all(isinstance(f, dict) and {"path", "size", "sha256"} <= set(f)
                                                  for f in files):
            raise ValueError(f"{source}: files.{key} must be a list of {{path, size, sha256}}")
    return manifest


def verify(target: str | Path, *, revision: str | None = None, api: Any = None) -> VerifyReport:
    """Check every file of a published zoo against its manifest: a `--local-dir` folder, or a dataset repo id
    (then every file is downloaded). Files the manifest lists that are missing, or whose size or sha256 differ,
    and files present that the manifest does not list are problems."""
    if Path(target).is_dir():
        return _verify_local(Path(target))
    return _verify_remote(check_repo_id(str(target), "repo id"), revision, api)


def _verify_local(root: Path) -> VerifyReport:
    dataset_dir = root / "dataset" if (root / "dataset" / MANIFEST).is_file() else root
    models_dir = root / "models" if dataset_dir != root else root.parent / "models"
    manifest_path = dataset_dir / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{root}: no {MANIFEST} (expected a folder written by zoo publish --local-dir)")
    manifest = _parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    report = VerifyReport(str(root))
    for key, folder, skip in (("dataset", dataset_dir, {MANIFEST}), ("model", models_dir, set())):
        where = f"{key} folder {folder}"
        expected = {entry["path"]: entry for entry in manifest["files"][key]}
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.is_dir() \
            else set()
        for path in sorted(present - set(expected) - skip):
            report.problems.append(f"{where}: {path}: not in the manifest")
        for path, entry in sorted(expected.items()):
            report.checked += 1
            if path not in present:
                report.problems.append(f"{where}: {path}: missing")
                continue
            file = folder / path
            problem = _check(where, path, entry, file.stat().st_size, sha256_file(file))
            if problem:
                report.problems.append(problem)
    return report


def _verify_remote(repo_id: str, revision: str | None, api: Any) -> VerifyReport:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.utils import silent_tqdm  # verify shows its own bar, not one per file

    hub_errors = _hub_errors()
    api = api or HfApi()
    report = VerifyReport(repo_id)
    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as cache:
        try:
            dataset_sha = api.dataset_info(repo_id, revision=revision).sha
            manifest_file = hf_hub_download(repo_id, MANIFEST, repo_type="dataset", revision=dataset_sha,
                                            cache_dir=cache, tqdm_class=silent_tqdm)
        except hub_errors as err:
            raise _hf_error(f"dataset repo {repo_id}@{revision or 'main'}: cannot read {MANIFEST}", err) from None
        manifest = _parse_manifest(Path(manifest_file).read_bytes(), f"{repo_id}/{MANIFEST}")
        model_repo = check_repo_id(str(manifest.get("model_repo")), f"{MANIFEST} model_repo")
        model_revision = manifest.get("model_revision") or revision
        repos = [("dataset", repo_id, dataset_sha, {MANIFEST, ".gitattributes"}),
                 ("model", model_repo, model_revision, {".gitattributes"})]
        jobs: list[tuple[str, str, str, str | None, dict[str, Any]]] = []
        for key, rid, rev, skip in repos:
            where = f"{key} repo {rid}"
            try:
                present = set(api.list_repo_files(rid, repo_type=key, revision=rev))
            except hub_errors as err:
                report.problems.append(_hf_error(f"{where}@{rev}", err).args[0])
                report.checked += len(manifest["files"][key])
                continue
            expected = {entry["path"]: entry for entry in manifest["files"][key]}
            for path in sorted(present - set(expected) - skip):
                report.problems.append(f"{where}: {path}: not in the manifest")
            for path, entry in sorted(expected.items()):
                if path in present:
                    jobs.append((key, rid, path, rev, entry))
                else:
                    report.checked += 1
                    report.problems.append(f"{where}: {path}: missing")

        def check(number: int, job: tuple[str, str, str, str | None, dict[str, Any]]) -> str | None:
            key, rid, path, rev, entry = job
            where = f"{key} repo {rid}"
            # One cache per file: files with the same bytes would share a blob, so a tampered file could be served
            # from its twin's download (and one thread could delete a blob another is reading).
            own_cache = Path(cache) / f"{number:07d}"
            try:
                local = Path(hf_hub_download(rid, path, repo_type=key, revision=rev, cache_dir=own_cache,
                                             tqdm_class=silent_tqdm)).resolve()
                return _check(where, path, entry, local.stat().st_size, sha256_file(local))
            except (*hub_errors, ValueError) as err:  # includes a size that does not match the headers
                return f"{where}: {path}: download failed: {str(err).splitlines()[0] if str(err) else err!r}"
            finally:  # keep the disk footprint to the files in flight
                shutil.rmtree(own_cache, ignore_errors=True)

        with ThreadPoolExecutor(max_workers=4) as pool, _tqdm(total=len(jobs), unit="file", desc="verifying") as bar:
            for problem in pool.map(check, range(len(jobs)), jobs):
                report.checked += 1
                if problem:
                    report.problems.append(problem)
                bar.update(1)
    return report


# ---------------------------------------------------------------- command line


def cli_publish(args: Any) -> int:
    report = publish(args.zoo_dir, args.repo_id, model_repo_id=args.model_repo_id, local_dir=args.local_dir,
                     with_weights=args.with_weights, allow_incomplete=args.allow_incomplete, private=args.private,
                     revision=args.revision)
    if report.not_complete:
        print(f"zoo publish: {len(report.not_complete)} member(s) not complete, published what verifies: "
              f"{_short_list(report.not_complete)}")
    size = sum(record.size for record in report.model_files)
    if report.local_dir is not None:
        print(f"zoo publish: wrote {report.local_dir / 'dataset'} ({len(report.dataset_files) + 1} files) and "
              f"{report.local_dir / 'models'} ({len(report.model_files)} files, {size / 1e6:.1f} MB); nothing pushed")
    else:
        print(f"zoo publish: {report.members} members, {report.checkpoints} checkpoints ({size / 1e6:.1f} MB)")
        print(f"zoo publish: model repo   {report.model_repo} at {report.model_revision}")
        print(f"zoo publish: dataset repo {report.dataset_repo} at {report.dataset_commit}")
    return 0


def cli_verify(args: Any) -> int:
    report = verify(args.repo_id, revision=args.revision)
    for problem in report.problems:
        print(f"zoo verify: {problem}")
    status = "FAILED" if report.problems else "OK"
    print(f"zoo verify: {report.target}: {report.checked} files in the manifest, {len(report.problems)} problem(s): "
          f"{status}")
    return 1 if report.problems else 0


__all__ = [
    "FileRecord", "PublishReport", "Selected", "VerifyReport", "build_manifest", "build_tables", "check_repo_id",
    "checkpoint_files", "cli_publish", "cli_verify", "default_model_repo_id", "num_parameters", "publish",
    "render_dataset_card", "render_model_card", "render_plots", "select_members", "stage_dataset", "stage_models",
    "typed_column", "verify", "write_parquet", "write_weight_tables",
]
