"""The private working folders of a publish, and how a later publish tells a dead one's leftovers from a live one.

- The staging folder `<zoo>/.publish_staging.<host>.<pid>.<random>` holds the dataset repo's files while they are
  written (it is made in the system temp folder when the zoo is read-only).
- With `--local-dir`, the partial folder `<local dir>/.publish_partial.<host>.<pid>.<random>` holds the new repo
  folders (`dataset`, `models`, `models.refs`, ...) until every file is written; they then replace the old folders
  by renames, the dataset folder (which holds the manifest) out first and in last. A publish that fails (a full
  disk, a bad member, Ctrl-C) removes its partial folder and leaves the local dir as it was; one that is killed
  leaves only the hidden partial folder, which the next publish removes.

Both names record the host and the process id. A publish removes the folders of dead publishes of this host (their
pid no longer runs). It cannot tell whether a process of another host (sharing the zoo over a network file system)
still runs, so a folder of another host, like one of a live process of this host, makes it refuse, naming the host,
the pid and the folder to remove once that process is known to be gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoo import layout

STAGING_PREFIX = ".publish_staging."
PARTIAL_PREFIX = ".publish_partial."
DATASET_FOLDER = "dataset"
REFS_SUFFIX = ".refs"  # `<repo folder>.refs/<branch>`: a branch of a repo written to a local folder
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def host_name() -> str:
    """This machine's name as it appears in folder names: letters, digits and dashes (dots and the rest become
    dashes), at most 63 characters."""
    return _HOST_UNSAFE.sub("-", socket.gethostname()).strip("-")[:63] or "unknown-host"


def owned_prefix(prefix: str) -> str:
    """The name prefix of a working folder of this process: `<prefix><host>.<pid>.`."""
    return f"{prefix}{host_name()}.{os.getpid()}."


def folder_owner(name: str, prefix: str) -> tuple[str | None, int | None]:
    """(host, pid) recorded in a working folder's name; (None, pid) for a name of an older version, which recorded
    the pid alone (`<prefix><pid>.<random>`); (None, None) when the name records neither."""
    first, _, rest = name[len(prefix):].partition(".")
    second = rest.partition(".")[0]
    if first and second.isdigit():
        return first, int(second)
    if first.isdigit():
        return None, int(first)
    return None, None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    except OverflowError:
        return False  # no such pid can exist
    return True


def clear_leftovers(folder: Path, prefix: str) -> list[Path]:
    """Remove the working folders (`prefix*`) under `folder` that dead publishes of this host left; a one-line
    ValueError for one whose publish may still run (another host's, or a live process of this host)."""
    me = host_name()
    removed = []
    for item in sorted(folder.glob(f"{prefix}*")):
        host, pid = folder_owner(item.name, prefix)
        if host is not None and host != me:
            raise ValueError(f"{item}: a zoo publish by process {pid} on host {host} may still be running (this is "
                             f"host {me}, which cannot check); if that process is gone, remove this folder and run "
                             "the same command again")
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            raise ValueError(f"{item}: the zoo publish of process {pid} on this host ({me}) is still running; wait "
                             f"for it to end, or, if process {pid} is not a zoo publish, remove this folder and run "
                             "the same command again")
        shutil.rmtree(item, ignore_errors=True)
        removed.append(item)
    return removed


def remove_stale_staging(zoo_dir: Path) -> list[Path]:
    """Remove the staging folders that killed publishes of this zoo left on this host; refuse (ValueError) when a
    publish that may still run holds one."""
    return clear_leftovers(Path(zoo_dir), STAGING_PREFIX)


@contextmanager
def staging_folder(zoo_dir: Path) -> Iterator[Path]:
    """A private folder for the dataset repo's files: inside the zoo (hidden, named after this host and process, so
    a later run can tell a killed publish's leftovers), or in the system temp folder when the zoo is read-only."""
    writable = os.access(zoo_dir, os.W_OK)
    if writable:
        remove_stale_staging(zoo_dir)
    folder = Path(tempfile.mkdtemp(prefix=owned_prefix(STAGING_PREFIX), dir=zoo_dir if writable else None))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link_tree(source: Path, dest: Path) -> None:
    """`dest` as a copy of `source` whose files are hard links (copies where the file system has none); hidden
    entries (temporary leftovers) are left out. Writes replace files (a new inode), so `source` never changes."""
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        into = dest / Path(folder).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.startswith("."):
                continue
            try:
                os.link(Path(folder) / name, into / name)
            except OSError:
                shutil.copy2(Path(folder) / name, into / name)


def _plain_name(value: Any) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value \
        and not value.startswith(".")


def previous_folders(root: Path) -> set[str]:
    """The repo folders the manifest of an earlier publish in `root` names (plain names only: a damaged manifest
    never makes a publish touch anything else)."""
    try:
        manifest = json.loads((root / DATASET_FOLDER / "manifest.json").read_bytes())
        folders = {repo.get("local_folder") for repo in manifest.get("model_repos") or []}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {name for name in folders if _plain_name(name)}


class LocalPublish:
    """A `--local-dir` publish, written into a partial folder inside `root` and moved into place by `finish()`;
    `folders` are the repo folders it writes (the dataset folder among them). Use as a context manager: leaving it
    without `finish()` (an error, Ctrl-C) removes the partial folder, and `root` itself if it made it."""

    def __init__(self, root: Path, folders: Iterable[str]) -> None:
        self.root = Path(root)
        self.folders = set(folders) | {DATASET_FOLDER}
        self.work = self.root
        self.created = False

    def __enter__(self) -> LocalPublish:
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--local-dir {self.root}: exists and is not a folder")
        self.created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            clear_leftovers(self.root, PARTIAL_PREFIX)
            self.work = Path(tempfile.mkdtemp(prefix=owned_prefix(PARTIAL_PREFIX), dir=self.root))
            for name in sorted(self._names(self.folders)):
                if (self.root / name).is_dir():  # unchanged files are not copied again
                    _link_tree(self.root / name, self.work / name)
        except BaseException:
            self._clean()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._clean()

    @staticmethod
    def _names(folders: Iterable[str]) -> set[str]:
        return {name for folder in folders for name in (folder, folder + REFS_SUFFIX)}

    def _clean(self) -> None:
        if self.work != self.root:
            shutil.rmtree(self.work, ignore_errors=True)
        if self.created and self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def finish(self) -> None:
        """Move the new repo folders into `root`, replacing the old ones and those an earlier publish's manifest
        names but this one does not; the dataset folder, with the manifest, is the first out and the last in."""
        trash = Path(tempfile.mkdtemp(prefix=".replaced.", dir=self.work))
        names = self._names(self.folders | previous_folders(self.root)) - {DATASET_FOLDER}
        if (self.root / DATASET_FOLDER).exists():
            os.replace(self.root / DATASET_FOLDER, trash / DATASET_FOLDER)
        for name in sorted(names):
            if (self.root / name).exists():
                os.replace(self.root / name, trash / name)
            if (self.work / name).exists():
                os.replace(self.work / name, self.root / name)
        os.replace(self.work / DATASET_FOLDER, self.root / DATASET_FOLDER)
        layout.fsync_dir(self.root)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work = self.root
