"""Which checkpoints a weight dataset holds: the complete members that pass the filters (modality, stage, kind,
parent, factor values), and of each the checkpoints asked for (`last`, `all`, or a list of epochs), each with its
properties."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import WeightSpaceError
from .properties import PropertyTable
from .sources import Source, SourceMember
from .splits import SplitAssignment

CHECKPOINT_CHOICES = ("last", "all")


def _matches(wanted: Any, values: Iterable[Any]) -> bool:
    """Whether one of `values` is what a filter wants (one value, or a list of them; None wants anything)."""
    if wanted is None:
        return True
    allowed = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    return any(value in allowed for value in values)


def _checked_checkpoints(checkpoints: Any) -> str | tuple[int, ...]:
    if isinstance(checkpoints, str) and checkpoints in CHECKPOINT_CHOICES:
        return checkpoints
    if isinstance(checkpoints, (list, tuple)) and all(isinstance(epoch, int) for epoch in checkpoints):
        return tuple(sorted(set(checkpoints)))
    raise WeightSpaceError(f"checkpoints must be 'last', 'all' or a list of epochs, got {checkpoints!r}")


@dataclass(frozen=True)
class Filters:
    """What a selection keeps; each filter takes one value or a list of values, None keeps everything."""

    modality: Any = None
    stage: Any = None
    kind: Any = None
    parent: Any = None  # a parent's zoo-relative path or name
    factors: Any = None  # {factor: value or list of values}
    checkpoints: Any = "last"

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", _checked_checkpoints(self.checkpoints))
        if self.factors is not None and not isinstance(self.factors, dict):
            raise WeightSpaceError(f"factors must be a dict of factor values, got {self.factors!r}")

    def accepts(self, member: SourceMember) -> bool:
        """Whether the member passes every filter."""
        parent = [value for value in (member.parent_path, member.parent.get("member")) if value is not None]
        checks = [(self.modality, [member.modality]), (self.stage, [member.stage]), (self.kind, [member.kind]),
                  (self.parent, parent)]
        checks += [(value, [member.factors.get(key)]) for key, value in (self.factors or {}).items()]
        return all(_matches(wanted, values) for wanted, values in checks)

    def epochs(self, member: SourceMember) -> list[int]:
        """The member's checkpoint epochs that the selection keeps."""
        if self.checkpoints == "all":
            return list(member.checkpoints)
        if self.checkpoints == "last":
            return member.checkpoints[-1:]
        return [epoch for epoch in member.checkpoints if epoch in self.checkpoints]

    def describe(self) -> str:
        given = {"modality": self.modality, "stage": self.stage, "kind": self.kind, "parent": self.parent,
                 "factors": self.factors}
        parts = [f"{key}={value!r}" for key, value in given.items() if value is not None]
        return ", ".join([*parts, f"checkpoints={self.checkpoints!r}"])


@dataclass
class Entry:
    """One checkpoint of a selection."""

    relpath: str
    epoch: int
    properties: dict[str, Any]


def _members(source: Source, filters: Filters) -> list[SourceMember]:
    return [member for member in source.members() if filters.accepts(member) and member.is_complete()]


def _rows(members: Iterable[SourceMember], filters: Filters) -> Iterable[tuple[SourceMember, dict[str, Any]]]:
    for member in members:
        for epoch in filters.epochs(member):
            yield member, member.result_at(epoch) or {"epoch": epoch}


def select(source: Source, filters: Filters, splits: SplitAssignment | None) -> tuple[list[Entry], list[str]]:
    """The selected checkpoints in member order, then epoch order, and the property keys they share."""
    members = _members(source, filters)
    pairs = list(_rows(members, filters))
    table = PropertyTable(members, [row for _, row in pairs])
    entries = []
    for member, row in pairs:
        split = splits.split_of(member.relpath, member.parent_path) if splits is not None else None
        entries.append(Entry(member.relpath, int(row["epoch"]), table.of(member, row, split)))
    return entries, table.keys
