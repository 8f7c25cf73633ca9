"""The properties of a checkpoint in a weight dataset: who the member is, its split, every metric of its result.json
line at the checkpoint's epoch, the generalisation gap, and every generating factor.

Every item of a dataset has the same keys (missing values are None): the identity keys `member` (zoo-relative
path), `parent` (the parent's path), `kind`, `modality`, `stage`, `split`; then `epoch`, `step`, `samples`,
`generalization_gap`; then the metrics (`train_*`, `test_*`) and the factors, a factor named like another key as
`factor_<name>` (as in the published `members` table).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .sources import SourceMember

IDENTITY = ("member", "parent", "kind", "modality", "stage", "split")
PROGRESS = ("epoch", "step", "samples", "generalization_gap")
METRIC_PREFIXES = ("train_", "test_")


def generalization_gap(row: dict[str, Any]) -> float | None:
    """train_acc - test_acc where both exist, else test_loss - train_loss, else None."""
    for first, second in (("train_acc", "test_acc"), ("test_loss", "train_loss")):
        if row.get(first) is not None and row.get(second) is not None:
            return float(row[first]) - float(row[second])
    return None


def metric_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The `train_*` and `test_*` keys of the rows, as first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(METRIC_PREFIXES):
                seen.setdefault(key, None)
    return list(seen)


def factor_columns(members: Iterable[SourceMember], taken: Iterable[str]) -> dict[str, str]:
    """factor name -> property key: the name, or `factor_<name>` where another key has it."""
    taken = set(taken)
    columns: dict[str, str] = {}
    for member in members:
        for key in member.factors:
            columns.setdefault(str(key), f"factor_{key}" if key in taken else str(key))
    return columns


class PropertyTable:
    """The property keys of a selection, and each checkpoint's properties under them."""

    def __init__(self, members: list[SourceMember], rows: list[dict[str, Any]]):
        self.metrics = metric_keys(rows)
        self.factors = factor_columns(members, (*IDENTITY, *PROGRESS, *self.metrics))

    @property
    def keys(self) -> list[str]:
        return [*IDENTITY, *PROGRESS, *self.metrics, *self.factors.values()]

    def of(self, member: SourceMember, row: dict[str, Any], split: str | None) -> dict[str, Any]:
        """The properties of `member`'s checkpoint whose result line is `row`."""
        values: dict[str, Any] = {
            "member": member.relpath, "parent": member.parent_path, "kind": member.kind,
            "modality": member.modality, "stage": member.stage, "split": split,
            "epoch": int(row["epoch"]), "step": row.get("step"), "samples": row.get("samples"),
            "generalization_gap": generalization_gap(row),
        }
        values.update({key: row.get(key) for key in self.metrics})
        values.update({column: member.factors.get(key) for key, column in self.factors.items()})
        return values
