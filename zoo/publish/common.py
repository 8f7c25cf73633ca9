"""Names, records and small helpers shared by the publishing modules."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "transformer-zoo/manifest/v2"
CARD = "README.md"
SPEC = "spec.yaml"
DATA_DIR = "data"
PLOTS_DIR = "plots"
GITATTRIBUTES = ".gitattributes"
HUB_MAX_FILES = 100_000  # per repo: the Hub takes fewer
HUB_MAX_FOLDER_ENTRIES = 10_000  # per folder: the Hub takes fewer
DEFAULT_MAX_REPO_FILES = 50_000
DEFAULT_MAX_FOLDER_ENTRIES = 5_000
DEFAULT_COMMIT_FILES = 100  # the Hub advises 50 to 100 files per commit (commits time out after 60 s)


@dataclass(frozen=True)
class FileRecord:
    """One published file: its path in the repo, size, sha256 and git blob id (what the Hub lists for a file
    stored in git rather than LFS)."""

    path: str
    size: int
    sha256: str
    git_oid: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "git_oid": self.git_oid}

    def moved(self, path: str) -> FileRecord:
        return FileRecord(path, self.size, self.sha256, self.git_oid)


def record_of_bytes(path: str, data: bytes) -> FileRecord:
    git = hashlib.sha1(b"blob %d\0" % len(data))
    git.update(data)
    return FileRecord(path, len(data), hashlib.sha256(data).hexdigest(), git.hexdigest())


def record_of_file(path: str, source: str | Path, progress: Any = None, chunk: int = 1 << 20) -> FileRecord:
    """Size, sha256 and git blob id of a file, in one read."""
    size = Path(source).stat().st_size
    sha, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(source, "rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
            git.update(block)
            if progress is not None:
                progress.update(len(block))
    return FileRecord(path, size, sha.hexdigest(), git.hexdigest())


def with_path(err: OSError, path: str | Path) -> OSError:
    """`err`, naming `path` if it names no file (a failed write on an open file does not)."""
    if err.filename:
        return err
    reason = err.strerror or next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return OSError(err.errno, reason, str(path))


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`, making its folder; an OSError (a full disk) names the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise with_path(err, path) from None


def sha256_file(path: str | Path) -> str:
    return record_of_file("", path).sha256


def tqdm_bar(**kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> str:
    """`repo_id` when it is a valid `<namespace>/<name>`, else a one-line ValueError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"{flag} {repo_id!r}: expected <namespace>/<name>, e.g. org/transformer-zoo")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{flag} {repo_id!r}: not a valid repo id ({str(err).splitlines()[0]})") from None
    return repo_id


def default_model_repo_id(repo_id: str) -> str:
    return f"{repo_id}-models"


def short_list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def hub_errors() -> tuple[type[Exception], ...]:
    """What a failed Hub call raises: HTTP errors, and transport errors (refused connection, timeout)."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[Exception]] = [HfHubHTTPError, OSError]
    try:
        import httpx2  # huggingface_hub's HTTP client

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def hf_error(action: str, err: Exception) -> ValueError:
    """A one-line ValueError for a failed Hub call (the token is never part of the message)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return ValueError(f"{action}: {first}")
