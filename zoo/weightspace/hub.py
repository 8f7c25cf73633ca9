"""A published zoo as the source of a weight dataset: `HubZoo("org/zoo")` reads the dataset repo's `members`,
`checkpoints`, `metrics` and `tensor_layouts` tables at one commit, and downloads one checkpoint's safetensors file
at a time from the model repo at the commit its `checkpoints` row names (`hf_hub_download`: cached by
huggingface_hub, then read memory-mapped). A checkpoint's location is `<model repo>@<revision>:<subfolder>`.

Members (config, result lines, published checkpoints, completeness) and each checkpoint's tensor table come from the
tables (a zoo published without `tensor_layouts`: from each checkpoint's safetensors header, a range request per
member); the splits from the `members` table's `split` column (its settings from the table's parquet metadata), or,
for a zoo published without one, the default assignment computed in memory. Only parquet and safetensors files are
read: no pickle, no code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from zoo import layout

from .errors import WeightSpaceError
from .sources import Source, SourceMember
from .splits import DEFAULT_FRACTIONS, SPLITS, SplitAssignment
from .tensor_layout import TensorTable

TABLES = ("members", "checkpoints", "metrics")
SPLIT_SETTINGS_KEY = b"transformer-zoo/splits"  # the `members` table's parquet metadata: {seed, fractions, split_by}
_IDENTITY = ("member", "member_path", "modality", "stage")  # a `metrics` row's identity; its epoch stays in the line
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]$")
_T = TypeVar("_T")


def looks_like_repo_id(text: Any) -> bool:
    """Whether `text` reads as a Hub repo id, `owner/name`."""
    return isinstance(text, str) and bool(_REPO_ID.match(text)) and ".." not in text


class Placement(NamedTuple):
    """Where a published checkpoint lives, and the id of its tensor layout (None where the tables do not say)."""

    repo: str
    subfolder: str
    revision: str
    layout: str | None = None


def _hub_call(what: str, call: Callable[[], _T]) -> _T:
    """`call()`, with any failure of the Hub or of the network as one WeightSpaceError line."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return call()
    except (HfHubHTTPError, OSError, ValueError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise WeightSpaceError(f"{what}: {type(err).__name__}{': ' + first if first else ''}") from None


def _result_rows(metrics: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """member path -> its result lines, from the `metrics` table (a metric a line lacks is null there: left out)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in metrics:
        line = {key: value for key, value in row.items() if key not in _IDENTITY and value is not None}
        rows.setdefault(row["member_path"], []).append(line)
    return rows


def _placements(checkpoints: list[dict[str, Any]]) -> dict[tuple[str, int], Placement]:
    return {(row["member_path"], int(row["epoch"])): Placement(row["model_repo"], row["subfolder"],
                                                              row["subfolder_revision"], row.get("tensor_layout"))
            for row in checkpoints}


def _tensor_tables(table: Any) -> dict[str, TensorTable]:
    """Layout id -> its tensor table, from the `tensor_layouts` table."""
    tensors: dict[str, list[tuple[str, list[int], str]]] = {}
    for row in table.select(["layout", "name", "shape", "dtype"]).to_pylist():
        tensors.setdefault(row["layout"], []).append((row["name"], row["shape"], row["dtype"]))
    return {layout_id: TensorTable.from_tensors(rows) for layout_id, rows in tensors.items()}


def _config(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A member's config from its `members` row: the `config` column (saved with sorted keys), its factors in the
    order of their columns, which is the zoo's."""
    config = json.loads(row["config"])
    position = {name: index for index, name in enumerate(columns)}
    factors = config.get("factors") or {}
    column = {key: f"factor_{key}" if f"factor_{key}" in position else key for key in factors}
    config["factors"] = dict(sorted(factors.items(), key=lambda item: position.get(column[item[0]], len(position))))
    return config


def _members(table: Any, placements: dict[tuple[str, int], Placement],
             results: dict[str, list[dict[str, Any]]]) -> list[SourceMember]:
    epochs: dict[str, list[int]] = {}
    for relpath, epoch in placements:
        epochs.setdefault(relpath, []).append(epoch)
    return [SourceMember(row["member_path"], _config(row, table.column_names), results.get(row["member_path"], []),
                         sorted(epochs.get(row["member_path"], [])), complete=row["state"] == "complete")
            for row in table.to_pylist()]


def _published_splits(table: Any) -> SplitAssignment | None:
    """The splits of the `members` table's `split` column; None when it has none."""
    if "split" not in table.column_names:
        return None
    recorded = dict(zip(table.column("member_path").to_pylist(), table.column("split").to_pylist()))
    unknown = sorted({str(value) for value in recorded.values() if value not in SPLITS})
    if unknown:
        raise WeightSpaceError(f"the published members table has splits {', '.join(unknown)}, not "
                               f"{', '.join(SPLITS)}")
    settings = json.loads((table.schema.metadata or {}).get(SPLIT_SETTINGS_KEY, b"{}"))
    return SplitAssignment(int(settings.get("seed", 0)), tuple(settings.get("fractions", DEFAULT_FRACTIONS)),
                           str(settings.get("split_by", "member")), recorded)


class HubZoo(Source):
    """A zoo published with `zoo publish`, by its dataset repo id (`revision`: a branch, tag or commit; default
    main). Holds the tables' rows and the checkpoints' locations, no open file, so it pickles into DataLoader
    workers."""

    def __init__(self, repo_id: str, revision: str | None = None):
        if not looks_like_repo_id(repo_id):
            raise WeightSpaceError(f"{repo_id!r}: not a dataset repo id (owner/name)")
        self.repo_id = repo_id
        self.commit = self._resolve(revision)
        tables = {name: self._table(name) for name in TABLES}
        self._placements = _placements(tables["checkpoints"].to_pylist())
        self._members = _members(tables["members"], self._placements,
                                 _result_rows(tables["metrics"].to_pylist()))
        self._splits = _published_splits(tables["members"])
        published_layouts = "tensor_layout" in tables["checkpoints"].column_names
        self._tensor_tables = _tensor_tables(self._table("tensor_layouts")) if published_layouts else {}

    def __repr__(self) -> str:
        return f"HubZoo({self.repo_id!r}, revision={self.commit!r})"

    def __str__(self) -> str:
        return self.repo_id

    def _resolve(self, revision: str | None) -> str:
        """The dataset repo's commit at `revision` (offline: `revision` itself, served from the cache)."""
        from huggingface_hub import HfApi, constants

        if constants.is_offline_mode():
            return revision or "main"
        info = _hub_call(f"dataset repo {self.repo_id}@{revision or 'main'}",
                         lambda: HfApi().dataset_info(self.repo_id, revision=revision))
        return info.sha

    def _table(self, name: str) -> Any:
        import pyarrow.parquet as pq
        from huggingface_hub import hf_hub_download

        where = f"dataset repo {self.repo_id}@{self.commit}"
        path = _hub_call(f"{where}: cannot read data/{name}.parquet",
                         lambda: hf_hub_download(self.repo_id, f"data/{name}.parquet", repo_type="dataset",
                                                 revision=self.commit))
        return _hub_call(f"{where}: data/{name}.parquet", lambda: pq.read_table(path))

    def members(self) -> list[SourceMember]:
        return list(self._members)

    def placement(self, relpath: str, epoch: int) -> Placement:
        """Where a member's checkpoint is published."""
        try:
            return self._placements[(relpath, epoch)]
        except KeyError:
            raise WeightSpaceError(f"{self.repo_id}: {relpath} has no published checkpoint at epoch {epoch}") from None

    def weights_file(self, relpath: str, epoch: int) -> Path:
        from huggingface_hub import hf_hub_download

        where = self.placement(relpath, epoch)
        return Path(_hub_call(self.location(relpath, epoch), lambda: hf_hub_download(
            where.repo, f"{where.subfolder}/{layout.WEIGHTS}", revision=where.revision)))

    def table(self, relpath: str, epoch: int) -> TensorTable:
        """The tensor table of a checkpoint: from the `tensor_layouts` table, else from the cached file, else from
        its header alone (a range request)."""
        from huggingface_hub import HfApi, try_to_load_from_cache

        where = self.placement(relpath, epoch)
        if where.layout in self._tensor_tables:
            return self._tensor_tables[where.layout]
        filename = f"{where.subfolder}/{layout.WEIGHTS}"
        cached = try_to_load_from_cache(where.repo, filename, revision=where.revision)
        if isinstance(cached, str):
            return TensorTable.from_header(layout.read_safetensors_header(cached))
        header = _hub_call(self.location(relpath, epoch), lambda: HfApi().parse_safetensors_file_metadata(
            where.repo, filename, revision=where.revision))
        return TensorTable.from_tensors((name, info.shape, info.dtype) for name, info in header.tensors.items())

    def location(self, relpath: str, epoch: int) -> str:
        where = self.placement(relpath, epoch)
        return f"{where.repo}@{where.revision}:{where.subfolder}"

    def splits(self, assign: bool) -> SplitAssignment | None:
        if self._splits is not None or not assign:
            return self._splits
        assigned = SplitAssignment()
        assigned.add((member.relpath, member.parent_path) for member in self._members)
        return assigned

    def cache_dir(self) -> Path:
        from huggingface_hub import constants

        return (Path(constants.HF_HOME) / "transformer-zoo" / "weightspace"
                / f"datasets--{self.repo_id.replace('/', '--')}" / self.commit)
