"""Train, validation and test splits by member: the zoo's `splits.json` and the rule that assigns a split.

A member's split is a function of a seed and one path alone (sha256 of both, read as a number in [0, 1) and cut at
the cumulative fractions), so it is the same on every run and machine, whatever order members are found in.
`zoo.weightspace` writes and reads `splits.json`; publishing and the benchmark read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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
