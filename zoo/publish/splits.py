"""The train, validation and test split of every published member, as `zoo.weightspace` assigns it to the zoo.

The zoo's `splits.json` ({seed, fractions, split_by, members}) gives the recorded split of each member; a member it
does not record, and every member of a zoo without one, takes the split its settings give (defaults: seed 0,
70/15/15, by member): sha256 of the seed and the member's zoo-relative path (with `split_by: parent`, its parent's
path) read as a number in [0, 1) and cut at the cumulative fractions. Nothing is written into the zoo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.layout.splits import DEFAULT_FRACTIONS, SPLITS, SPLITS_FILE, hashed_split  # noqa: F401

DEFAULT_SEED = 0
DEFAULT_SPLIT_BY = "member"
METADATA_KEY = b"transformer-zoo/splits"  # the settings, in the `members` table's parquet metadata


@dataclass(frozen=True)
class ZooSplits:
    """A zoo's split settings, the splits its `splits.json` records, and whether it has one."""

    seed: int = DEFAULT_SEED
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    split_by: str = DEFAULT_SPLIT_BY
    recorded: dict[str, str] = field(default_factory=dict)
    from_file: bool = False

    def of(self, member: layout.MemberInfo) -> str:
        """The member's split: recorded, else the one its path (or its parent's) gives."""
        if member.relpath in self.recorded:
            return self.recorded[member.relpath]
        parent = (member.parent or {}).get("path")
        key = parent if self.split_by == "parent" and parent else member.relpath
        return hashed_split(self.seed, key, self.fractions)

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed, "fractions": list(self.fractions), "split_by": self.split_by}

    def metadata(self) -> dict[bytes, bytes]:
        """The settings as parquet schema metadata."""
        return {METADATA_KEY: json.dumps(self.settings(), sort_keys=True).encode()}


def zoo_splits(zoo_dir: str | Path) -> ZooSplits:
    """The zoo's splits: its `splits.json`, else the default settings; a ValueError naming a damaged file."""
    path = Path(zoo_dir) / SPLITS_FILE
    if not path.is_file():
        return ZooSplits()
    try:
        data = layout.read_json(path)
        recorded = {str(key): str(value) for key, value in data["members"].items()}
        splits = ZooSplits(int(data["seed"]), tuple(float(value) for value in data["fractions"]),
                           str(data["split_by"]), recorded, from_file=True)
    except (layout.LayoutError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"{path}: not a splits file ({err})") from None
    unknown = sorted({value for value in recorded.values() if value not in SPLITS})
    if unknown or len(splits.fractions) != len(SPLITS):
        raise ValueError(f"{path}: not a splits file (splits must be {', '.join(SPLITS)} and fractions three "
                         "numbers)")
    return splits
