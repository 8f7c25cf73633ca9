"""The train, validation and test split of every published member, as `zoo.weightspace` assigns it to the zoo.

The zoo's `splits.json` gives the recorded split of each member; a member it does not record, and every member of a
zoo without one, takes the split its settings give (defaults: seed 0, 70/15/15, by member), by the rule of
`zoo.layout.splits`. Nothing is written into the zoo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.layout.splits import SPLITS  # noqa: F401 - the split names, for the tables and the card

METADATA_KEY = b"transformer-zoo/splits"  # the settings, in the `members` table's parquet metadata


@dataclass(frozen=True)
class ZooSplits:
    """A zoo's split assignment (its `splits.json`, else the default settings) and whether it has the file."""

    assignment: layout.SplitAssignment = field(default_factory=layout.SplitAssignment)
    from_file: bool = False

    @property
    def seed(self) -> int:
        return self.assignment.seed

    @property
    def fractions(self) -> tuple[float, ...]:
        return self.assignment.fractions

    @property
    def split_by(self) -> str:
        return self.assignment.split_by

    def of(self, member: layout.MemberInfo) -> str:
        """The member's split: recorded, else the one its path (or its parent's) gives."""
        return self.assignment.split_of(member.relpath, (member.parent or {}).get("path"))

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed, "fractions": list(self.fractions), "split_by": self.split_by}

    def metadata(self) -> dict[bytes, bytes]:
        """The settings as parquet schema metadata."""
        return {METADATA_KEY: json.dumps(self.settings(), sort_keys=True).encode()}


def zoo_splits(zoo_dir: str | Path) -> ZooSplits:
    """The zoo's splits: its `splits.json`, else the default settings; a ValueError naming a damaged file."""
    recorded = layout.read_splits(zoo_dir)
    return ZooSplits(recorded, from_file=True) if recorded is not None else ZooSplits()
