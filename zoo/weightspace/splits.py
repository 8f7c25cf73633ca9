"""Train, validation and test splits by member, fixed once per zoo in `<zoo>/splits.json`.

A member's split is a function of the seed and one path alone (sha256 of both, read as a number in [0, 1) and cut
at the cumulative fractions): the member's own zoo-relative path, or with `split_by="parent"` its parent's path,
so a finetuned child falls in its parent's split. The assignment is the same on every run and machine, whatever
order the members are found in, and members added later leave the others' splits as they were. `splits.json`
records the seed, fractions, `split_by` and every member's split: {seed, fractions, split_by, members}.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.layout.splits import DEFAULT_FRACTIONS, SPLIT_BY, SPLITS, SPLITS_FILE, hashed_split  # noqa: F401

from .errors import WeightSpaceError

logger = logging.getLogger("zoo")

def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions (train, validation, test) that sum to 1."""
    values = tuple(float(value) for value in fractions)
    if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-9):
        raise WeightSpaceError(f"split fractions must be three non-negative numbers (train, validation, test) "
                               f"summing to 1, got {list(fractions)}")
    return values  # type: ignore[return-value]


@dataclass
class SplitAssignment:
    """A zoo's splits: the settings and the recorded split of each member (by zoo-relative path)."""

    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    split_by: str = "member"
    members: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fractions = check_fractions(self.fractions)
        if self.split_by not in SPLIT_BY:
            raise WeightSpaceError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {self.split_by!r}")

    def settings(self) -> tuple[int, tuple[float, float, float], str]:
        return self.seed, self.fractions, self.split_by

    def split_of(self, relpath: str, parent_path: str | None) -> str:
        """The recorded split of a member, or the one its path (or its parent's) gives."""
        recorded = self.members.get(relpath)
        if recorded is not None:
            return recorded
        key = parent_path if self.split_by == "parent" and parent_path else relpath
        return hashed_split(self.seed, key, self.fractions)

    def add(self, members: Iterable[tuple[str, str | None]]) -> None:
        """Record the split of each (relpath, parent path) not recorded yet."""
        for relpath, parent_path in members:
            self.members[relpath] = self.split_of(relpath, parent_path)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "fractions": list(self.fractions), "split_by": self.split_by,
                "members": dict(sorted(self.members.items()))}

    def describe(self) -> str:
        percent = "/".join(f"{100 * fraction:g}" for fraction in self.fractions)
        return f"{percent} train/validation/test, seed {self.seed}, by {self.split_by}"


def read_splits(zoo_dir: str | Path) -> SplitAssignment | None:
    """The zoo's recorded splits, None where it has no splits.json."""
    path = Path(zoo_dir) / SPLITS_FILE
    if not path.is_file():
        return None
    data = layout.read_json(path)
    try:
        return SplitAssignment(int(data["seed"]), tuple(data["fractions"]), str(data["split_by"]),
                               {str(key): str(value) for key, value in data["members"].items()})
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise WeightSpaceError(f"{path}: not a splits file ({err})") from None


def _member_paths(zoo_dir: Path) -> list[tuple[str, str | None]]:
    return [(member.relpath, (member.parent or {}).get("path"))
            for member in layout.scan_members(zoo_dir, lenient=True)]


def assign_splits(zoo_dir: str | Path, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                  split_by: str = "member", replace: bool = False) -> SplitAssignment:
    """Give every member of the zoo a split and write `<zoo>/splits.json` atomically. Members already recorded keep
    their split; a zoo whose splits were fixed with other settings is refused unless `replace`."""
    zoo_dir = Path(zoo_dir)
    wanted = SplitAssignment(int(seed), tuple(fractions), split_by)  # type: ignore[arg-type]
    recorded = read_splits(zoo_dir)
    if recorded is not None and recorded.settings() == wanted.settings():
        wanted = recorded
    elif recorded is not None and not replace:
        raise WeightSpaceError(f"{zoo_dir / SPLITS_FILE}: the zoo's splits are fixed ({recorded.describe()}); "
                               "pass replace=True to assign them anew")
    wanted.add(_member_paths(zoo_dir))
    layout.atomic_write_json(zoo_dir / SPLITS_FILE, wanted.to_json())
    return wanted


def zoo_splits(zoo_dir: str | Path) -> SplitAssignment:
    """The zoo's splits; where it has none, the default ones, written to splits.json when the folder allows (and
    said so in one log line)."""
    zoo_dir = Path(zoo_dir)
    recorded = read_splits(zoo_dir)
    if recorded is not None:
        return recorded
    try:
        assigned = assign_splits(zoo_dir)
        logger.info("%s had no %s: assigned splits (%s) and wrote it", zoo_dir, SPLITS_FILE, assigned.describe())
    except OSError as err:
        assigned = SplitAssignment()
        assigned.add(_member_paths(zoo_dir))
        logger.info("%s has no %s and cannot take one (%s): using splits (%s) in memory", zoo_dir, SPLITS_FILE,
                    err.strerror or err, assigned.describe())
    return assigned
