"""Train, validation and test splits by member: the zoo's `splits.json` and the rule that assigns a split.

A member's split is a function of a seed and one path alone (sha256 of both, read as a number in [0, 1) and cut at
the cumulative fractions), so it is the same on every run and machine, whatever order members are found in.
`SplitAssignment` holds a zoo's settings and recorded splits; `read_splits` reads `splits.json` ({seed, fractions,
split_by, members}). `zoo.weightspace` writes it; publishing, the benchmark and the weight datasets read it here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import read_json
from .names import LayoutError

SPLITS = ("train", "validation", "test")
SPLITS_FILE = "splits.json"
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_BY = ("member", "parent")


def hashed_split(seed: int, key: str, fractions: Sequence[float]) -> str:
    """The split of `key`: sha256 of the seed and the key, as a number in [0, 1), cut at the cumulative fractions."""
    digest = hashlib.sha256(f"{int(seed)}\n{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    bound = 0.0
    for name, fraction in zip(SPLITS, fractions):
        bound += fraction
        if point < bound:
            return name
    return next(name for name, fraction in reversed(list(zip(SPLITS, fractions))) if fraction > 0)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions (train, validation, test) that sum to 1."""
    values = tuple(float(value) for value in fractions)
    if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-9):
        raise LayoutError(f"split fractions must be three non-negative numbers (train, validation, test) "
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
            raise LayoutError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {self.split_by!r}")
        unknown = sorted({split for split in self.members.values() if split not in SPLITS})
        if unknown:
            raise LayoutError(f"splits must be {', '.join(SPLITS)}, got {', '.join(map(repr, unknown))}")

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
    """The zoo's recorded splits, None where it has no splits.json; a LayoutError naming a damaged file."""
    path = Path(zoo_dir) / SPLITS_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    try:
        return SplitAssignment(int(data["seed"]), tuple(data["fractions"]), str(data["split_by"]),
                               {str(key): str(value) for key, value in data["members"].items()})
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise LayoutError(f"{path}: not a splits file ({err})") from None
