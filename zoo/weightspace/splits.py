"""Train, validation and test splits by member, fixed once per zoo in `<zoo>/splits.json`.

A member's split is a function of the seed and one path alone (sha256 of both, read as a number in [0, 1) and cut
at the cumulative fractions): the member's own zoo-relative path, or with `split_by="parent"` its parent's path,
so a finetuned child falls in its parent's split. The assignment is the same on every run and machine, whatever
order the members are found in, and members added later leave the others' splits as they were. `splits.json`
records the seed, fractions, `split_by` and every member's split: {seed, fractions, split_by, members}.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from zoo import layout
from zoo.layout.splits import (  # noqa: F401 - the format's names, re-exported
    DEFAULT_FRACTIONS,
    SPLIT_BY,
    SPLITS,
    SPLITS_FILE,
    SplitAssignment,
    check_fractions,
    hashed_split,
    read_splits,
)

from .errors import WeightSpaceError

logger = logging.getLogger("zoo")

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
