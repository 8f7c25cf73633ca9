"""Where a zoo is published: one `Target` interface for a local folder and for the Hub, and `sync`, which brings
one tree (a repo's branch) to a wanted set of files in bounded commits.

`sync` compares the wanted files with what the target holds (size and sha256, or the git blob id the Hub lists for
files kept in git) and commits only the difference, deleting files that are no longer wanted in the folders the
publisher owns. So an unchanged zoo makes no commit, and a rerun after a kill commits only what had not landed; LFS
objects that were uploaded before the kill are not uploaded again (the Hub keeps them by sha256). Files of one
folder (a checkpoint) go in the same commit when they fit.

On the Hub every HTTP request huggingface_hub makes passes a `RequestBudget` (at most N requests in any window of
S seconds, so a long publish stays under the account's rate limits), and every call is retried on 429 and 5xx
answers and on transport errors, waiting what `Retry-After` says, else an exponential backoff.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from zoo import layout
from zoo.publish.budget import RequestBudget, budgeted_session
from zoo.publish.common import GITATTRIBUTES, FileRecord, hf_error, hub_errors, record_of_file

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


class Remote(NamedTuple):
    """A file as the target lists it: size, and sha256 (LFS files, local files) or git blob id."""

    size: int
    sha256: str | None
    git_oid: str | None


@dataclass(frozen=True)
class Upload:
    """A file to put in a tree: its record, and where its bytes come from."""

    record: FileRecord
    source: Path | bytes


def _matches(remote: Remote | None, record: FileRecord) -> bool:
    if remote is None or remote.size != record.size:
        return False
    return remote.sha256 == record.sha256 if remote.sha256 else remote.git_oid == record.git_oid


def _commit_chunks(uploads: list[Upload], deletes: list[str], limit: int) -> Iterator[tuple[list[Upload], list[str]]]:
    """Commits of at most `limit` operations; the files of one folder stay together when they fit."""
    groups: dict[str, list[Upload]] = {}
    for upload in uploads:
        groups.setdefault(upload.record.path.rpartition("/")[0], []).append(upload)
    chunk: list[Upload] = []
    for group in groups.values():
        if chunk and len(chunk) + len(group) > limit:
            yield chunk, []
            chunk = []
        while len(group) > limit:
            yield group[:limit], []
            group = group[limit:]
        chunk += group
    if chunk:
        yield chunk, []
    for start in range(0, len(deletes), limit):
        yield [], deletes[start:start + limit]


def sync(target: Target, repo_id: str, repo_type: str, revision: str, wanted: dict[str, Upload],
         owned: Callable[[str], bool], message: str, commit_files: int,
         remote: dict[str, Remote] | None = None) -> tuple[str, int]:
    """Make `revision` of the repo hold `wanted` (and, of the files `owned` says are the publisher's, nothing
    else). Returns the commit it then points at and the number of commits made."""
    remote = target.files(repo_id, repo_type, revision) if remote is None else remote
    uploads = [upload for path, upload in sorted(wanted.items()) if not _matches(remote.get(path), upload.record)]
    deletes = sorted(path for path in remote if path not in wanted and owned(path))
    head, commits = None, 0
    for number, (adds, gone) in enumerate(_commit_chunks(uploads, deletes, commit_files)):
        head = target.commit(repo_id, repo_type, revision, adds, gone, f"{message} ({number + 1})")
        commits += 1
    return (head or target.head(repo_id, repo_type, revision)), commits


class Target:
    """Where repos live. Subclasses: `LocalTarget`, `HubTarget`."""

    def describe(self, repo_id: str, repo_type: str) -> str:
        raise NotImplementedError

    def prepare(self, repo_id: str, repo_type: str, revision: str, private: bool) -> None:
        """Create the repo and the branch `revision` if needed."""
        raise NotImplementedError

    def files(self, repo_id: str, repo_type: str, revision: str) -> dict[str, Remote]:
        raise NotImplementedError

    def read(self, repo_id: str, repo_type: str, revision: str, path: str) -> bytes | None:
        raise NotImplementedError

    def commit(self, repo_id: str, repo_type: str, revision: str, uploads: list[Upload], deletes: list[str],
               message: str) -> str:
        raise NotImplementedError

    def head(self, repo_id: str, repo_type: str, revision: str) -> str:
        raise NotImplementedError

    def branches(self, repo_id: str, repo_type: str) -> dict[str, str]:
        """Branch name -> the commit it points at."""
        raise NotImplementedError

    def create_root_branch(self, repo_id: str, repo_type: str, branch: str) -> dict[str, Remote]:
        """Create `branch` at the repo's first commit (so its root holds nothing of the zoo); returns its files."""
        raise NotImplementedError

    def delete_branch(self, repo_id: str, repo_type: str, branch: str) -> None:
        raise NotImplementedError

    def fetch_record(self, repo_id: str, repo_type: str, revision: str, path: str) -> FileRecord:
        """Size and hashes of the bytes the target serves for `path` (downloading them from the Hub)."""
        raise NotImplementedError

    @contextmanager
    def session(self) -> Iterator[None]:
        yield


# ---------------------------------------------------------------- a local folder


class LocalTarget(Target):
    """Repos as folders under `root` (`folders` maps a repo id to its folder name); a repo's branch other than its
    main tree is the folder `<folder>.refs/<branch>`. Files are written to a temporary name and renamed. `shown`
    is the folder messages name (the `--local-dir` a partial folder `root` will replace; default `root`)."""

    def __init__(self, root: Path, folders: dict[str, str], main: str = "main", shown: Path | None = None) -> None:
        if root.exists() and not root.is_dir():
            raise ValueError(f"--local-dir {root}: exists and is not a folder")
        self.root, self.folders, self.main, self.shown = root, folders, main, shown or root

    def _tree(self, repo_id: str, revision: str) -> Path:
        folder = self.root / self.folders[repo_id]
        return folder if revision == self.main else folder.parent / f"{folder.name}.refs" / revision

    def describe(self, repo_id: str, repo_type: str) -> str:
        return f"{repo_type} folder {self.shown / self.folders[repo_id]}"

    def prepare(self, repo_id: str, repo_type: str, revision: str, private: bool) -> None:
        self._tree(repo_id, revision).mkdir(parents=True, exist_ok=True)

    def files(self, repo_id: str, repo_type: str, revision: str) -> dict[str, Remote]:
        tree = self._tree(repo_id, revision)
        out = {}
        for path in sorted(tree.rglob("*")) if tree.is_dir() else []:
            rel = path.relative_to(tree).as_posix()
            if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
                record = record_of_file(rel, path)
                out[rel] = Remote(record.size, record.sha256, record.git_oid)
        return out

    def read(self, repo_id: str, repo_type: str, revision: str, path: str) -> bytes | None:
        file = self._tree(repo_id, revision) / path
        return file.read_bytes() if file.is_file() else None

    def commit(self, repo_id: str, repo_type: str, revision: str, uploads: list[Upload], deletes: list[str],
               message: str) -> str:
        tree = self._tree(repo_id, revision)
        for upload in uploads:
            try:
                self._write(tree / upload.record.path, upload.source)
            except OSError as err:
                shown = self.shown / tree.relative_to(self.root) / upload.record.path
                reason = err.strerror or str(err) or type(err).__name__
                raise ValueError(f"cannot write {shown}: {reason}") from None
        for path in deletes:
            (tree / path).unlink(missing_ok=True)
            parent = (tree / path).parent
            while parent != tree and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        return revision

    @staticmethod
    def _write(target: Path, source: Path | bytes) -> None:
        if isinstance(source, bytes):
            layout.atomic_write_bytes(target, source)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def head(self, repo_id: str, repo_type: str, revision: str) -> str:
        return revision

    def branches(self, repo_id: str, repo_type: str) -> dict[str, str]:
        refs = self._tree(repo_id, self.main).parent / f"{self.folders[repo_id]}.refs"
        return {item.name: item.name for item in refs.iterdir()} if refs.is_dir() else {}

    def create_root_branch(self, repo_id: str, repo_type: str, branch: str) -> dict[str, Remote]:
        self._tree(repo_id, branch).mkdir(parents=True, exist_ok=True)
        return {}

    def delete_branch(self, repo_id: str, repo_type: str, branch: str) -> None:
        shutil.rmtree(self._tree(repo_id, branch), ignore_errors=True)

    def fetch_record(self, repo_id: str, repo_type: str, revision: str, path: str) -> FileRecord:
        return record_of_file(path, self._tree(repo_id, revision) / path)


# ---------------------------------------------------------------- the Hub


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class HubTarget(Target):
    """Repos on the Hub (or any server speaking its API), through `HfApi`."""

    def __init__(self, api: Any = None, *, budget: RequestBudget | None = None, max_retries: int = 8,
                 backoff: float = 1.0, max_backoff: float = 120.0, log: Callable[[str], None] | None = None,
                 command: str = "zoo publish") -> None:
        """`log` takes the retry lines (default: stderr, each prefixed with `command`)."""
        from huggingface_hub import HfApi

        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"--max-retries {max_retries!r}: must be a whole number of at least 0")
        self.api = api or HfApi()
        self.budget, self.max_retries, self.backoff, self.max_backoff = budget, max_retries, backoff, max_backoff
        self.log = log or (lambda line: print(f"{command}: {line}", file=sys.stderr))
        self.retries = 0
        self._errors = hub_errors()
        self._root_files: dict[tuple[str, str], tuple[str, dict[str, Remote]]] = {}

    def describe(self, repo_id: str, repo_type: str) -> str:
        return f"{repo_type} repo {repo_id}"

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, retried on 429/5xx and transport errors; a one-line ValueError when it gives up."""
        for attempt in range(self.max_retries + 1):
            try:
                return fn(*args, **kwargs)
            except self._errors as err:
                response = getattr(err, "response", None)
                status = getattr(response, "status_code", None)
                if (status is not None and status not in RETRY_STATUSES) or attempt == self.max_retries:
                    raise hf_error(what, err) from None
                wait = _retry_after(err)
                reason = f"HTTP {status}" if status else type(err).__name__
                if wait is None:
                    wait = min(self.max_backoff, self.backoff * 2 ** attempt)
                    self.log(f"{what}: {reason}; retrying in {wait:g} s")
                else:
                    self.log(f"{what}: {reason}; retrying in {wait:g} s (Retry-After)")
                self.retries += 1
                time.sleep(wait)
        raise AssertionError("unreachable: max_retries >= 0, so the last attempt returns or raises")

    @contextmanager
    def session(self) -> Iterator[None]:
        """Requests within the budget, and no progress bar per commit (thousands of commits at scale)."""
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        quiet = are_progress_bars_disabled()
        disable_progress_bars()
        try:
            with budgeted_session(self.budget):
                yield
        finally:
            if not quiet:
                enable_progress_bars()

    def prepare(self, repo_id: str, repo_type: str, revision: str, private: bool) -> None:
        what = f"create {repo_type} repo {repo_id}"
        self.call(what, self.api.create_repo, repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision != "main":
            self.call(what, self.api.create_branch, repo_id, repo_type=repo_type, branch=revision, exist_ok=True)

    def files(self, repo_id: str, repo_type: str, revision: str) -> dict[str, Remote]:
        from huggingface_hub.hf_api import RepoFile

        entries = self.call(f"list {repo_type} repo {repo_id}@{revision}",
                            lambda: list(self.api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision,
                                                                 recursive=True)))
        return {entry.path: Remote(entry.size, entry.lfs.sha256 if entry.lfs else None, entry.blob_id)
                for entry in entries if isinstance(entry, RepoFile)}

    def read(self, repo_id: str, repo_type: str, revision: str, path: str) -> bytes | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        from huggingface_hub.utils import silent_tqdm

        with tempfile.TemporaryDirectory(prefix="zoo-publish-") as cache:
            try:
                local = self.call(f"read {path} of {repo_type} repo {repo_id}", hf_hub_download, repo_id, path,
                                  repo_type=repo_type, revision=revision, cache_dir=cache, tqdm_class=silent_tqdm)
            except ValueError as err:
                if isinstance(err.__context__, (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)):
                    return None
                raise
            return Path(local).read_bytes()

    def commit(self, repo_id: str, repo_type: str, revision: str, uploads: list[Upload], deletes: list[str],
               message: str) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        operations: list[Any] = [
            CommitOperationAdd(upload.record.path,
                               upload.source if isinstance(upload.source, bytes) else str(upload.source))
            for upload in uploads
        ] + [CommitOperationDelete(path) for path in deletes]
        info = self.call(f"push to {repo_type} repo {repo_id}", self.api.create_commit, repo_id, operations,
                         commit_message=message, repo_type=repo_type, revision=revision)
        return info.oid

    def head(self, repo_id: str, repo_type: str, revision: str) -> str:
        info = self.call(f"read {repo_type} repo {repo_id}@{revision}", self.api.repo_info, repo_id,
                         repo_type=repo_type, revision=revision)
        return info.sha

    def branches(self, repo_id: str, repo_type: str) -> dict[str, str]:
        refs = self.call(f"list branches of {repo_type} repo {repo_id}", self.api.list_repo_refs, repo_id,
                         repo_type=repo_type)
        return {ref.name: ref.target_commit for ref in refs.branches}

    def create_root_branch(self, repo_id: str, repo_type: str, branch: str) -> dict[str, Remote]:
        key = (repo_type, repo_id)
        if key not in self._root_files:
            commits = self.call(f"list commits of {repo_type} repo {repo_id}", self.api.list_repo_commits, repo_id,
                                repo_type=repo_type)
            root = commits[-1].commit_id
            self._root_files[key] = (root, self.files(repo_id, repo_type, root))
        root, files = self._root_files[key]
        self.call(f"create branch {branch} of {repo_type} repo {repo_id}", self.api.create_branch, repo_id,
                  repo_type=repo_type, branch=branch, revision=root, exist_ok=True)
        return dict(files)

    def fetch_record(self, repo_id: str, repo_type: str, revision: str, path: str) -> FileRecord:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import silent_tqdm

        # One cache per file: files with the same bytes would share a blob, so a tampered file could be served from
        # its twin's download; removed at once, so the disk holds only the files in flight.
        with tempfile.TemporaryDirectory(prefix="zoo-verify-") as cache:
            local = self.call(f"download {path} of {repo_type} repo {repo_id}", hf_hub_download, repo_id, path,
                              repo_type=repo_type, revision=revision, cache_dir=cache, tqdm_class=silent_tqdm)
            return record_of_file(path, Path(local).resolve())

    def delete_branch(self, repo_id: str, repo_type: str, branch: str) -> None:
        self.call(f"delete branch {branch} of {repo_type} repo {repo_id}", self.api.delete_branch, repo_id,
                  repo_type=repo_type, branch=branch)


def not_gitattributes(path: str) -> bool:
    return path != GITATTRIBUTES
