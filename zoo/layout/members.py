"""Members as found on disk (`MemberInfo`: plan, results, checkpoints, failure, completeness), and finding them
under a zoo or any folder of members."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import list_checkpoints, verify_checkpoint
from .member_files import is_member_dir, read_failure, read_member_config, read_results_and_problem
from .names import RESULTS, LayoutError, checkpoint_epoch, checkpoint_name


@dataclass
class MemberInfo:
    """A member as found on disk."""

    path: Path
    config: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    error: str | None = None
    relpath: str = ""
    unreadable: str | None = None  # lenient loading: what could not be read (the member is then not complete)

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def modality(self) -> str:
        return self.config["modality"]

    @property
    def stage(self) -> str:
        return self.config["stage"]

    @property
    def parent(self) -> dict[str, Any] | None:
        return self.config.get("parent")

    @property
    def factors(self) -> dict[str, Any]:
        return self.config.get("factors", {})

    @property
    def planned_epochs(self) -> int:
        return int(self.config["epochs"])

    @property
    def planned_checkpoints(self) -> list[int]:
        return [int(epoch) for epoch in self.config["checkpoints"]]

    @property
    def epochs_done(self) -> int:
        return max((int(row["epoch"]) + 1 for row in self.results), default=0)

    @property
    def last_result(self) -> dict[str, Any] | None:
        return self.results[-1] if self.results else None

    @property
    def metric(self) -> str:
        """The member's headline metric (a result.json key): `test_acc`, or `test_perplexity` for causal LMs."""
        return str(self.config.get("metric") or "test_acc")

    def final_metric(self) -> float | None:
        """The headline metric at the member's last evaluated epoch (None before any evaluation): the one
        definition used by status, analysis, soups and publishing."""
        value = (self.last_result or {}).get(self.metric)
        return None if value is None else float(value)

    def checkpoint_dir(self, epoch: int | str = "last") -> Path:
        if epoch == "last":
            if not self.checkpoints:
                raise LayoutError(f"{self.path}: has no checkpoint")
            epoch = self.checkpoints[-1]
        return self.path / checkpoint_name(int(epoch))

    @property
    def state(self) -> str:
        if self.is_complete():
            return "complete"
        if self.error:
            return "failed"
        return "incomplete" if (self.results or self.checkpoints) else "pending"

    def missing(self) -> list[str]:
        """What a complete member has and this one lacks (empty when complete)."""
        problems = [f"{self.path / self.unreadable}"] if self.unreadable else []
        epochs_with_results = {int(row["epoch"]) for row in self.results}
        for epoch in self.planned_checkpoints:
            reason = verify_checkpoint(self.path / checkpoint_name(epoch))
            if reason:
                problems.append(reason)
        for epoch in range(self.planned_epochs + 1):
            if epoch not in epochs_with_results:
                problems.append(f"{self.path / RESULTS}: no line for epoch {epoch}")
        for row in self.results:
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value) and key.endswith("loss"):
                    problems.append(f"{self.path / RESULTS}: {key} is {value} at epoch {row['epoch']}")
        return problems

    def is_complete(self) -> bool:
        return not self.missing()


def load_member(member_dir: str | Path, root: str | Path | None = None, lenient: bool = False) -> MemberInfo:
    """A member as found on disk; `lenient` keeps the readable result lines of a damaged result.json (the
    member then records what was unreadable and is not complete) instead of raising."""
    member_dir = Path(member_dir)
    results, unreadable = read_results_and_problem(member_dir, lenient)
    info = MemberInfo(
        path=member_dir,
        config=read_member_config(member_dir),
        results=results,
        checkpoints=list_checkpoints(member_dir),
        error=read_failure(member_dir),
        unreadable=unreadable,
    )
    if root is not None:
        info.relpath = member_dir.resolve().relative_to(Path(root).resolve()).as_posix()
    else:
        info.relpath = member_dir.name
    return info


def scan_members(root: str | Path, lenient: bool = False) -> list[MemberInfo]:
    """Every member under `root` (a zoo, or any folder of members), sorted by path; hidden folders skipped."""
    root = Path(root)
    found: list[MemberInfo] = []

    def walk(folder: Path) -> None:
        if is_member_dir(folder):
            found.append(load_member(folder, root, lenient))
        for child in sorted(folder.iterdir()) if folder.is_dir() else []:
            if child.is_dir() and not child.name.startswith(".") and checkpoint_epoch(child.name) is None:
                walk(child)

    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    walk(root)
    return found


def find_member(root: str | Path, name: str) -> MemberInfo:
    """The member called `name` under `root` (or at the path `name`)."""
    if is_member_dir(name):
        return load_member(name)
    matches = [member for member in scan_members(root) if member.name == name or member.relpath == name]
    if not matches:
        raise LayoutError(f"no member named {name!r} under {root}")
    if len(matches) > 1:
        raise LayoutError(f"{len(matches)} members named {name!r} under {root}; give its path: "
                          + ", ".join(m.relpath for m in matches))
    return matches[0]


def children_of(root: str | Path, parent: str) -> list[MemberInfo]:
    """The finetuned members whose parent member is `parent` (a name or a zoo-relative path)."""
    return [
        member for member in scan_members(root)
        if member.parent and parent in (member.parent.get("member"), member.parent.get("path"))
    ]

