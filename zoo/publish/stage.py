"""What gets published and where: the members and checkpoints to publish, and a layout of model repos, folders
and refs that stays within the Hub's limits.

Layout rules:
- a model repo holds at most `max_repo_files` files (README and .gitattributes included); when the zoo needs more,
  members are spread, in zoo order and never split, over `<model repo>-00`, `<model repo>-01`, ...;
- no folder holds more than `max_folder_entries` entries: a folder that would is split into `shard_0000`,
  `shard_0001`, ... folders of consecutive (sorted) entries;
- with branches, every checkpoint also gets a branch of its repo (named after its zoo path, following git's ref-name
  rules) whose root holds that checkpoint alone.
The layout is a function of the zoo alone, so reruns plan the same locations.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from zoo import layout
from zoo.publish.common import (
    HUB_MAX_FILES,
    HUB_MAX_FOLDER_ENTRIES,
    FileRecord,
    record_of_file,
    short_list,
    tqdm_bar,
)

SHARD_FOLDER = "shard_{:04d}"
REF_MAX_LENGTH = 200
# Trainer and tool leftovers that may sit in a checkpoint folder and must never be published (pickles included).
_SKIP_SUFFIXES = (".tmp", ".lock", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")
_SKIP_NAMES = {"trainer_state.json", "training_args.json"}
_SKIP_PREFIXES = ("rng_state", "optimizer", "scheduler")
_REF_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Selected:
    """A member to publish and the epochs of its checkpoints that verify."""

    member: layout.MemberInfo
    epochs: list[int]

    @property
    def relpath(self) -> str:
        return self.member.relpath


def _unreadable_members(zoo_dir: Path) -> list[str]:
    """Folders that look like members (a result.json or checkpoint folders) but whose config cannot be read."""
    found = []
    for folder, dirs, files in os.walk(zoo_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and layout.checkpoint_epoch(d) is None)
        has_checkpoints = any(layout.checkpoint_epoch(name) is not None for name in os.listdir(folder))
        if layout.RESULTS in files or has_checkpoints:
            try:
                layout.read_member_config(folder)
            except layout.LayoutError as err:
                found.append(str(err))
    return found


def select_members(zoo_dir: str | Path, allow_incomplete: bool = False) -> tuple[list[Selected], list[str]]:
    """The zoo's members with their publishable checkpoints, and what is left out. Without `allow_incomplete`, a
    member that is not complete, or a folder that looks like a member but cannot be read, is a ValueError naming
    them all."""
    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise ValueError(f"{zoo_dir}: not a folder")
    members = layout.scan_members(zoo_dir)
    unreadable = _unreadable_members(zoo_dir)
    if not members and not unreadable:
        raise ValueError(f"{zoo_dir}: no zoo members found")
    not_complete = [f"{member.relpath} ({member.state})" for member in members if member.state != "complete"]
    if unreadable and not allow_incomplete:
        raise ValueError(f"{len(unreadable)} member folder(s) cannot be read: {short_list(unreadable, 3)}; repair "
                         "or remove them, or publish the others with --allow-incomplete")
    if not_complete and not allow_incomplete:
        raise ValueError(f"{zoo_dir}: {len(not_complete)} member(s) not complete: {short_list(not_complete)}; "
                         "finish them, or publish what verifies with --allow-incomplete")
    selected = [Selected(member, [epoch for epoch in member.checkpoints
                                  if layout.verify_checkpoint(member.checkpoint_dir(epoch)) is None])
                for member in members]
    return selected, not_complete + [f"{reason} (unreadable)" for reason in unreadable]


def checkpoint_files(checkpoint_dir: str | Path) -> list[str]:
    """The publishable files of a checkpoint folder (relative, sorted): no hidden or temporary file, no trainer
    state, no pickle."""
    checkpoint_dir = Path(checkpoint_dir)
    found = []
    for path in sorted(checkpoint_dir.rglob("*")):
        rel = path.relative_to(checkpoint_dir)
        name = path.name
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if name.endswith(_SKIP_SUFFIXES) or name in _SKIP_NAMES or name.startswith(_SKIP_PREFIXES):
            continue
        if layout.TRAINER_STATE_DIR in rel.parts:
            continue
        found.append(rel.as_posix())
    return found


# ---------------------------------------------------------------- the layout


@dataclass
class Placed:
    """One published checkpoint: where it lives, and its files (name in the checkpoint -> source, record)."""

    member: layout.MemberInfo
    epoch: int
    repo: str
    subfolder: str
    ref: str | None
    sources: dict[str, Path]
    records: dict[str, FileRecord] = field(default_factory=dict)  # by name in the checkpoint

    def repo_files(self) -> dict[str, tuple[FileRecord, Path]]:
        """Its files at their paths in the repo's main tree."""
        return {f"{self.subfolder}/{name}": (record.moved(f"{self.subfolder}/{name}"), self.sources[name])
                for name, record in self.records.items()}

    def ref_files(self) -> dict[str, tuple[FileRecord, Path]]:
        """Its files at the root of its own branch."""
        return {name: (record.moved(name), self.sources[name]) for name, record in self.records.items()}


@dataclass
class ModelRepo:
    repo_id: str
    local_folder: str
    checkpoints: list[Placed] = field(default_factory=list)


def ref_name(relpath: str, epoch: int, taken: set[str]) -> str:
    """A branch name for a checkpoint, valid under git's ref-name rules (no `..`, `/`, spaces, control or special
    characters, no leading dot or dash, no `.lock` or dot ending), unique among `taken` (which it joins)."""
    full = f"{relpath.replace('/', '--')}--{layout.checkpoint_name(epoch)}"
    name = _REF_UNSAFE.sub("-", full)
    name = re.sub(r"\.{2,}", ".", name).lstrip(".-")
    digest = hashlib.sha1(full.encode()).hexdigest()[:10]
    if len(name) > REF_MAX_LENGTH:
        name = f"{name[:REF_MAX_LENGTH - 11]}-{digest}"
    if name.endswith((".lock", ".")):
        name += "-"
    if name in taken:
        name = f"{name}-{digest}"
    taken.add(name)
    return name


def shard_folders(relpaths: list[str], max_entries: int) -> dict[str, str]:
    """Map member paths to repo paths where no folder has more than `max_entries` entries: the entries of a fuller
    folder are moved, in sorted order, into `shard_NNNN` folders of `max_entries` each."""
    children: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for rel in relpaths:
        parts = tuple(rel.split("/"))
        for depth in range(len(parts)):
            children[parts[:depth]].add(parts[depth])
    bucket: dict[tuple[tuple[str, ...], str], str] = {}
    for folder, names in children.items():
        if len(names) > max_entries:
            if -(-len(names) // max_entries) > max_entries:
                raise ValueError(f"folder {'/'.join(folder) or '/'} has {len(names)} entries: more than "
                                 f"--max-folder-entries {max_entries} squared")
            for index, name in enumerate(sorted(names)):
                bucket[(folder, name)] = SHARD_FOLDER.format(index // max_entries)
    out = {}
    for rel in relpaths:
        parts, mapped = rel.split("/"), []
        for depth, name in enumerate(parts):
            shard = bucket.get((tuple(parts[:depth]), name))
            mapped += [shard, name] if shard else [name]
        out[rel] = "/".join(mapped)
    return out


_Sources = dict[int, dict[str, Path]]  # a member's publishable files: epoch -> name in the checkpoint -> source


def _check_limits(max_repo_files: int, max_folder_entries: int) -> None:
    if not 2 < max_repo_files < HUB_MAX_FILES:
        raise ValueError(f"--max-repo-files {max_repo_files}: must be between 3 and {HUB_MAX_FILES - 1}")
    if not 2 < max_folder_entries < HUB_MAX_FOLDER_ENTRIES:
        raise ValueError(f"--max-folder-entries {max_folder_entries}: must be between 3 and "
                         f"{HUB_MAX_FOLDER_ENTRIES - 1}")


def _member_sources(item: Selected, max_folder_entries: int) -> _Sources:
    """The publishable files of each of a member's checkpoints; a ValueError when its checkpoints alone would fill
    more than one folder."""
    by_epoch = {}
    for epoch in item.epochs:
        folder = item.member.checkpoint_dir(epoch)
        by_epoch[epoch] = {name: folder / name for name in checkpoint_files(folder)}
    if len(item.epochs) > max_folder_entries:
        raise ValueError(f"{item.relpath}: {len(item.epochs)} checkpoints, more than --max-folder-entries "
                         f"{max_folder_entries}")
    return by_epoch


def _group_members(selected: list[Selected], counts: list[int], max_repo_files: int) -> list[list[int]]:
    """Consecutive members (by index) grouped so that no group has more files than a repo holds besides its README
    and .gitattributes."""
    capacity = max_repo_files - 2
    groups: list[list[int]] = [[]]
    used = 0
    for index, count in enumerate(counts):
        if count > capacity:
            raise ValueError(f"{selected[index].relpath}: {count} files, more than --max-repo-files "
                             f"{max_repo_files} allows in one repo")
        if used + count > capacity:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += count
    return groups


def _place_group(repo: ModelRepo, members: list[tuple[Selected, _Sources]], max_folder_entries: int,
                 branches: bool) -> None:
    """Add the checkpoints of `members` to `repo`, at sharded subfolders and (with `branches`) on their refs."""
    paths = shard_folders([item.relpath for item, _ in members], max_folder_entries)
    refs: set[str] = set()
    for item, by_epoch in members:
        for epoch in item.epochs:
            repo.checkpoints.append(Placed(
                item.member, epoch, repo.repo_id, f"{paths[item.relpath]}/{layout.checkpoint_name(epoch)}",
                ref_name(item.relpath, epoch, refs) if branches else None, by_epoch[epoch]))


def plan_layout(selected: list[Selected], model_repo_id: str, *, max_repo_files: int, max_folder_entries: int,
                branches: bool) -> list[ModelRepo]:
    """Assign every published checkpoint a repo, a subfolder and (with `branches`) a ref."""
    _check_limits(max_repo_files, max_folder_entries)
    sources = [(item, _member_sources(item, max_folder_entries)) for item in selected]
    counts = [sum(len(files) for files in by_epoch.values()) for _, by_epoch in sources]
    groups = _group_members(selected, counts, max_repo_files)
    sharded = len(groups) > 1
    repos = []
    for number, group in enumerate(groups):
        repo = ModelRepo(f"{model_repo_id}-{number:02d}" if sharded else model_repo_id,
                         f"models-{number:02d}" if sharded else "models")
        _place_group(repo, [sources[index] for index in group], max_folder_entries, branches)
        repos.append(repo)
    return repos


def hash_checkpoints(repos: list[ModelRepo]) -> None:
    """Fill in every checkpoint file's size, sha256 and git blob id."""
    placed = [cp for repo in repos for cp in repo.checkpoints]
    total = sum(path.stat().st_size for cp in placed for path in cp.sources.values())
    with tqdm_bar(total=total, unit="B", unit_scale=True, desc="hashing checkpoints") as bar:
        for cp in placed:
            cp.records = {name: record_of_file(name, source, progress=bar) for name, source in cp.sources.items()}


def folder_entry_counts(paths: list[str]) -> dict[str, int]:
    """Entries (files and folders) of every folder of a repo holding `paths`."""
    entries: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        parts = path.split("/")
        for depth in range(len(parts)):
            entries["/".join(parts[:depth])].add(parts[depth])
    return {folder: len(names) for folder, names in entries.items()}
