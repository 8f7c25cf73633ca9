"""Where a weight dataset's members and checkpoints come from: a `Source` lists members (config, result lines,
checkpoint epochs), gives each checkpoint's safetensors file and location, the zoo's splits, and a folder for
cached statistics. `LocalZoo` serves a zoo folder through `zoo.layout`; `hub.HubZoo` a published zoo, by its
dataset repo id; `as_source` picks one. A source holds names, paths and table rows only (no open file), so a
dataset built on it pickles into DataLoader workers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import layout

from .errors import WeightSpaceError
from .splits import SplitAssignment, read_splits, zoo_splits
from .tensor_layout import TensorTable

CACHE_DIR = Path(".cache") / "weightspace"


@dataclass
class SourceMember:
    """A member as a source lists it."""

    relpath: str
    config: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    complete: bool = True

    @property
    def kind(self) -> str | None:
        return self.config.get("kind")

    @property
    def modality(self) -> str | None:
        return self.config.get("modality")

    @property
    def stage(self) -> str | None:
        return self.config.get("stage")

    @property
    def factors(self) -> dict[str, Any]:
        return self.config.get("factors") or {}

    @property
    def parent(self) -> dict[str, Any]:
        return self.config.get("parent") or {}

    @property
    def parent_path(self) -> str | None:
        return self.parent.get("path")

    def is_complete(self) -> bool:
        """Whether the member finished training with every planned checkpoint and result line."""
        return self.complete

    def result_at(self, epoch: int) -> dict[str, Any] | None:
        """The result.json line of `epoch`, None when there is none."""
        return next((row for row in self.results if int(row.get("epoch", -1)) == epoch), None)


@dataclass
class LocalMember(SourceMember):
    """A member of a local zoo, checked for completeness (every checkpoint whole) only when asked."""

    info: layout.MemberInfo | None = None

    def is_complete(self) -> bool:
        return self.info.is_complete() if self.info is not None else self.complete


class Source(ABC):
    """A zoo that a `WeightDataset` reads."""

    @abstractmethod
    def members(self) -> list[SourceMember]:
        """Every member, in a stable order."""

    @abstractmethod
    def weights_file(self, relpath: str, epoch: int) -> Path:
        """The local safetensors file of a member's checkpoint."""

    @abstractmethod
    def location(self, relpath: str, epoch: int) -> str:
        """Where a checkpoint lives, for people: its folder or its Hub location."""

    @abstractmethod
    def splits(self, assign: bool) -> SplitAssignment | None:
        """The zoo's splits; None when it has none and `assign` is false."""

    @abstractmethod
    def cache_dir(self) -> Path:
        """A folder for what `zoo.weightspace` caches about this zoo."""

    def table(self, relpath: str, epoch: int) -> TensorTable:
        """The tensor table of a checkpoint, from its safetensors header alone."""
        return TensorTable.from_header(layout.read_safetensors_header(self.weights_file(relpath, epoch)))

    @contextmanager
    def open_weights(self, relpath: str, epoch: int) -> Iterator[Any]:
        """A checkpoint's safetensors file, open memory-mapped (`safe_open`, torch tensors) for the block."""
        from safetensors import safe_open

        path = self.weights_file(relpath, epoch)
        layout.read_safetensors_header(path)  # a damaged file: one line naming it
        with safe_open(str(path), framework="pt") as handle:
            yield handle


class LocalZoo(Source):
    """A zoo folder (or any folder of members) on this machine."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise WeightSpaceError(f"{root}: not a zoo folder")

    def __repr__(self) -> str:
        return f"LocalZoo({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    def members(self) -> list[SourceMember]:
        return [LocalMember(member.relpath, member.config, member.results, member.checkpoints, info=member)
                for member in layout.scan_members(self.root, lenient=True)]

    def weights_file(self, relpath: str, epoch: int) -> Path:
        return self.root / relpath / layout.checkpoint_name(epoch) / layout.WEIGHTS

    def location(self, relpath: str, epoch: int) -> str:
        return str(self.root / relpath / layout.checkpoint_name(epoch))

    def splits(self, assign: bool) -> SplitAssignment | None:
        return zoo_splits(self.root) if assign else read_splits(self.root)

    def cache_dir(self) -> Path:
        return self.root / CACHE_DIR


def as_source(source: Source | str | Path, revision: str | None = None) -> Source:
    """A source as given; the local zoo at an existing folder; else, for a Hub dataset repo id (`owner/name`), the
    zoo published there (`revision`: a branch, tag or commit of the dataset repo)."""
    from .hub import HubZoo, looks_like_repo_id

    if isinstance(source, Source):
        return source
    if not Path(source).is_dir() and looks_like_repo_id(source):
        try:
            return HubZoo(str(source), revision)
        except WeightSpaceError as err:
            raise WeightSpaceError(f"{source}: no such zoo folder, nor a published zoo ({err})") from None
    if revision is not None:
        raise WeightSpaceError(f"{source}: a local zoo folder has no revision (revision= is for a published zoo)")
    return LocalZoo(source)
