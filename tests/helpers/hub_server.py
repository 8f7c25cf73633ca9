"""A stand-in for the Hugging Face Hub's HTTP API, for tests (stdlib and PyYAML).

It speaks what huggingface_hub 2.4 (uploads with Xet disabled, downloads, tree/paths-info listings), datasets 5.2
(`load_dataset`, streaming included) and transformers 5.24 (`from_pretrained`) call. Repos live in memory with a commit
history (one sha per commit, branches pointing at commits). Every request is logged in `requests`; a route the server
does not know answers 404 and is recorded in `unknown_routes`, so a client upgrade that needs a new endpoint fails a
test instead of passing silently.

Rate limiting as the Hub answers it: `fail_next(route, 429, retry_after=...)` (one shot) and `throttle(every=N)`
(every Nth request of the given routes) answer HTTP 429 with a `Retry-After` header; `request_log` records when each
request came, so tests can check that clients waited and stayed within a request budget. Branch refs (create, list,
delete) and commit listings follow the Hub's routes.

Not covered: Xet, auth beyond "a write needs a bearer token", gated repos, pull requests, the Hub's own limits.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

log = logging.getLogger("hub_server")

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# What the Hub's default .gitattributes sends to LFS, roughly; anything binary or big goes there too.
LFS_SUFFIXES = (".safetensors", ".parquet", ".arrow", ".png", ".jpg", ".bin", ".pt", ".pth", ".ckpt", ".h5",
                ".msgpack", ".npy", ".npz", ".onnx", ".pkl", ".gz", ".zip", ".zst", ".tar", ".tflite", ".model")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()


class HubError(Exception):
    """An HTTP error answer: status, message and optional X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file of a commit. `sha256`, `oid` and `size` are what was committed: `data` may be altered by a test."""

    data: bytes
    lfs: bool
    sha256: str
    oid: str  # git blob oid (of the LFS pointer for an LFS file)
    size: int

    @classmethod
    def make(cls, data: bytes, lfs: bool) -> Entry:
        sha = hashlib.sha256(data).hexdigest()
        oid = git_blob_oid(lfs_pointer(sha, len(data))) if lfs else git_blob_oid(data)
        return cls(data=data, lfs=lfs, sha256=sha, oid=oid, size=len(data))


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.commits:
            return self.commits[revision]
        matches = [sha for sha in self.commits if len(revision) >= 7 and sha.startswith(revision)]
        if len(matches) == 1:
            return self.commits[matches[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _front_matter(text: str) -> tuple[Any, str | None]:
    """The YAML metadata of a card, or (None, reason) when it cannot be read."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None, None
    try:
        return yaml.safe_load(match.group(1)), None
    except yaml.YAMLError as err:
        return None, f"YAML metadata is not valid YAML: {err}"


def _is_string_or_strings(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _is_data_files_entry(split: Any) -> bool:
    """A `data_files` entry: a path, or a mapping with a `split` name and a `path` (or list of paths)."""
    return isinstance(split, str) or (isinstance(split, dict) and isinstance(split.get("split"), str)
                                      and isinstance(split.get("path"), (str, list)))


def _configs_errors(configs: Any) -> list[str]:
    """The checks of a dataset card's `configs`: a list of uniquely named configs with well-formed `data_files`."""
    if not isinstance(configs, list):
        return ['"configs" must be a list']
    errors, names = [], set()
    for config in configs:
        if not isinstance(config, dict) or not isinstance(config.get("config_name"), str):
            errors.append('"configs" entries need a "config_name" string')
            continue
        if config["config_name"] in names:
            errors.append(f'"configs": duplicate config_name {config["config_name"]!r}')
        names.add(config["config_name"])
        files = config.get("data_files")
        splits = files if isinstance(files, list) else [files]
        errors += [f'"configs": config {config["config_name"]!r} has malformed "data_files"'
                   for split in splits if not _is_data_files_entry(split)]
    return errors


def _yaml_errors(metadata: Any, repo_type: str) -> list[str]:
    """A few of the Hub's metadata checks: the ones our cards could get wrong."""
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["metadata must be a mapping"]
    errors = []
    if "license" in metadata and not isinstance(metadata["license"], str):
        errors.append('"license" must be a string')
    for key in ("tags", "datasets", "base_model"):
        value = metadata.get(key)
        if value is not None and not _is_string_or_strings(value):
            errors.append(f'"{key}" must be a string or a list of strings')
    if repo_type == "dataset":
        errors += _configs_errors(metadata.get("configs", []))
    return errors


class HubState:
    """All repos, the LFS object store and what the clients asked for."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown_routes: list[tuple[str, str]] = []
        self.lfs_uploads: list[str] = []  # sha256 of every object PUT, in order
        self.commits_made: list[tuple[str, str, list[str]]] = []  # (repo_type, repo_id, paths the commit touched)
        self.validated_yaml: list[str] = []
        self.tokens_seen: set[str] = set()
        self.failures: dict[str, list[tuple[int, str | None]]] = {}  # route -> queued (status, Retry-After)
        self.request_log: list[tuple[float, str, str]] = []  # (time.monotonic(), method, handler name or "?")
        self.throttle_every = 0  # answer every Nth request of `throttle_routes` with 429 (0: never)
        self.throttle_routes: set[str] = set()
        self.throttle_retry_after = "1"
        self.throttled: list[tuple[float, str]] = []  # (time, route) of each throttled answer
        self._throttle_count = 0
        self.commit_delay = 0.0  # seconds each commit takes (to interrupt a publish mid-way)
        self._counter = 0

    def next_sha(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((*parts, str(self._counter), str(time.time()))).encode()).hexdigest()

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo


class HubServer:
    """Owns the HTTP server and offers the helpers tests use to look at or alter what is stored."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = HubState()
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------ helpers for tests

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, Entry]:
        with self.state.lock:
            return dict(self.state.repo(repo_type, repo_id).resolve(revision).files)

    def read(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        return self.files(repo_id, repo_type, revision)[path].data

    def head(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> str:
        with self.state.lock:
            return self.state.repo(repo_type, repo_id).branches[branch]

    def tamper(self, repo_id: str, path: str, data: bytes, repo_type: str = "model", branch: str = "main") -> None:
        """Change the bytes served for `path` at the head of `branch`, keeping its recorded hashes (a corrupt blob)."""
        with self.state.lock:
            repo = self.state.repo(repo_type, repo_id)
            commit = repo.commits[repo.branches[branch]]
            if path not in commit.files:
                raise KeyError(f"{repo_type} {repo_id}: no file {path!r}")
            commit.files[path] = replace(commit.files[path], data=data)

    def fail_next(self, route: str, status: int = 500, retry_after: str | None = None, times: int = 1) -> None:
        """Make the next `times` requests to `route` (a handler name: "commit", "lfs_put", ...) fail with `status`
        (and a `Retry-After` header when given), as an interruption or a rate limit."""
        with self.state.lock:
            self.state.failures.setdefault(route, []).extend([(status, retry_after)] * times)

    def throttle(self, every: int, routes: set[str] | None = None, retry_after: str = "1") -> None:
        """Answer every `every`th request to `routes` (default: all write and listing routes) with 429 and
        `Retry-After`; `every=0` stops."""
        with self.state.lock:
            self.state.throttle_every, self.state._throttle_count = every, 0
            self.state.throttle_routes = routes if routes is not None else THROTTLED_ROUTES
            self.state.throttle_retry_after = retry_after

    def forget(self, repo_id: str, path: str, repo_type: str = "model", branch: str = "main") -> None:
        """Remove `path` from the head of `branch` without a commit (a file lost by the storage)."""
        with self.state.lock:
            repo = self.state.repo(repo_type, repo_id)
            del repo.commits[repo.branches[branch]].files[path]


# ---------------------------------------------------------------- the HTTP side

_T = r"(?P<t>models|datasets|spaces)"
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_PREFIX = r"(?P<p>datasets/|spaces/)?"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("DELETE", r"^/api/repos/delete$", "delete_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", rf"^/api/{_T}/{_REPO}$", "repo_info"),
        ("GET", rf"^/api/{_T}/{_REPO}/revision/(?P<rev>[^/]+)$", "repo_info"),
        ("GET", rf"^/api/{_T}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", "tree"),
        ("POST", rf"^/api/{_T}/{_REPO}/paths-info/(?P<rev>[^/]+)$", "paths_info"),
        ("POST", rf"^/api/{_T}/{_REPO}/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", rf"^/api/{_T}/{_REPO}/commit/(?P<rev>[^/]+)$", "commit"),
        ("POST", rf"^/api/{_T}/{_REPO}/branch/(?P<rev>[^/]+)$", "create_branch"),
        ("DELETE", rf"^/api/{_T}/{_REPO}/branch/(?P<rev>[^/]+)$", "delete_branch"),
        ("GET", rf"^/api/{_T}/{_REPO}/refs$", "refs"),
        ("GET", rf"^/api/{_T}/{_REPO}/commits/(?P<rev>[^/]+)$", "commits"),
        ("POST", rf"^/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
        ("PUT", r"^/_lfs/(?P<oid>[0-9a-f]{64})$", "lfs_put"),
        ("HEAD", rf"^/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
        ("GET", rf"^/{_PREFIX}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    ]
]

THROTTLED_ROUTES = {"create_repo", "tree", "paths_info", "preupload", "commit", "create_branch", "delete_branch",
                    "refs", "commits", "lfs_batch", "repo_info"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    server_version = "hub-test-server"

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def state(self) -> HubState:
        return self.hub.state

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------ plumbing

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.body = self._read_body()
        with self.state.lock:
            self.state.requests.append((method, split.path))
        for route_method, pattern, name in ROUTES:
            match = pattern.match(split.path)
            if match and route_method == method:
                args = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                try:
                    self._injected_failure(name)
                    getattr(self, f"h_{name}")(**args)
                except HubError as err:
                    self._error(err)
                except Exception as err:  # a server bug: answer 500 and say so in the log
                    log.exception("hub_server: %s %s failed", method, split.path)
                    self._error(HubError(500, f"test server error: {err!r}"))
                return
        with self.state.lock:
            self.state.unknown_routes.append((method, split.path))
        log.warning("hub_server: unknown route %s %s", method, split.path)
        self._json({"error": f"unknown route {method} {split.path}"}, status=404)

    def _injected_failure(self, name: str) -> None:
        """Raise the failure queued for route `name`, or a throttling 429, if any."""
        with self.state.lock:
            self.state.request_log.append((time.monotonic(), self.command, name))
            queued = self.state.failures.get(name)
            failure = queued.pop(0) if queued else None
            if failure is None and self.state.throttle_every and name in self.state.throttle_routes:
                self.state._throttle_count += 1
                if self.state._throttle_count % self.state.throttle_every == 0:
                    failure = (429, self.state.throttle_retry_after)
            if failure is not None and failure[0] == 429:
                self.state.throttled.append((time.monotonic(), name))
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            message = "You have been rate-limited" if status == 429 else f"injected failure of {name}"
            raise HubError(status, message, headers=headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self._send(status, json.dumps(obj).encode(), headers, content_type)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message}, status=err.status, headers=headers)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"body is not JSON: {err}") from None

    def _require_token(self) -> None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise HubError(401, "Invalid credentials in Authorization header")
        with self.state.lock:
            self.state.tokens_seen.add(auth[7:].strip())

    def _base(self) -> str:
        return self.hub.url

    def _repo(self, t: str, ns: str, name: str) -> Repo:
        return self.state.repo(REPO_TYPES[t], f"{ns}/{name}")

    def _repo_p(self, p: str | None, ns: str, name: str) -> Repo:
        return self.state.repo({"datasets/": "dataset", "spaces/": "space"}.get(p or "", "model"), f"{ns}/{name}")

    def _flag(self, key: str) -> bool:
        return (self.query.get(key) or ["false"])[0].lower() in ("1", "true")

    @staticmethod
    def _file_entry(path: str, entry: Entry, commit: Commit | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        if commit is not None:
            item["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return item

    @staticmethod
    def _dir_entry(path: str, commit: Commit, expand: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "directory", "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
                                "size": 0, "path": path}
        if expand:
            item["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return item

    # ------------------------------------------------------------ repos

    def h_create_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX or not body.get("name"):
            raise HubError(400, f"bad create request: type {repo_type!r}, name {body.get('name')!r}")
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        url = f"{self._base()}/{URL_PREFIX[repo_type]}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:  # the Hub's 409 still names the repo's url
                self._json({"error": f"You already created this {repo_type} repo", "url": url}, status=409,
                           headers={"X-Error-Message": f"You already created this {repo_type} repo"})
                return
            repo = Repo(repo_type, repo_id, bool(body.get("private")), _now())
            sha = self.state.next_sha(repo_type, repo_id, "initial")
            repo.commits[sha] = Commit(sha, None, "initial commit", repo.created,
                                       {".gitattributes": Entry.make(GITATTRIBUTES, lfs=False)})
            repo.branches["main"] = sha
            self.state.repos[(repo_type, repo_id)] = repo
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def h_delete_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or 'user'}/{body.get('name')}"
        with self.state.lock:
            self.state.repo(repo_type, repo_id)
            del self.state.repos[(repo_type, repo_id)]
        self._json({})

    def h_create_branch(self, t: str, ns: str, name: str, rev: str) -> None:
        self._require_token()
        start = self._json_body().get("startingPoint")
        with self.state.lock:
            repo = self._repo(t, ns, name)
            if rev in repo.branches:
                raise HubError(409, f"Reference already exists: {rev}")
            repo.branches[rev] = repo.resolve(start or "main").sha
        self._json({})

    def h_delete_branch(self, t: str, ns: str, name: str, rev: str) -> None:
        self._require_token()
        with self.state.lock:
            repo = self._repo(t, ns, name)
            if rev not in repo.branches:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            if rev == "main":
                raise HubError(403, "cannot delete the main branch")
            del repo.branches[rev]
        self._json({})

    def h_refs(self, t: str, ns: str, name: str) -> None:
        with self.state.lock:
            repo = self._repo(t, ns, name)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                        for b, sha in sorted(repo.branches.items())]
        self._json({"branches": branches, "converts": [], "tags": []})

    def h_commits(self, t: str, ns: str, name: str, rev: str) -> None:
        """The history of `rev`, newest first (one page: the client follows no Link header)."""
        with self.state.lock:
            repo = self._repo(t, ns, name)
            commit: Commit | None = repo.resolve(rev)
            out = []
            while commit is not None:
                out.append({"id": commit.sha, "title": commit.title, "message": "", "date": commit.date,
                            "authors": [{"user": "test"}]})
                commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(out)

    def h_validate_yaml(self) -> None:
        body = self._json_body()
        content, repo_type = body.get("content", ""), body.get("repoType", "model")
        with self.state.lock:
            self.state.validated_yaml.append(content)
        metadata, problem = _front_matter(content)
        errors = [problem] if problem else _yaml_errors(metadata, repo_type)
        warnings = [] if metadata else [{"message": "empty or missing yaml metadata in repo card"}]
        status = 400 if errors else 200
        self._json({"errors": [{"message": e} for e in errors], "warnings": warnings}, status=status)

    def h_repo_info(self, t: str, ns: str, name: str, rev: str = "main") -> None:
        with self.state.lock:
            repo = self._repo(t, ns, name)
            commit = repo.resolve(rev)
            siblings = [
                {"rfilename": path, "size": entry.size, "blobId": entry.oid,
                 **({"lfs": {"sha256": entry.sha256, "size": entry.size,
                             "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}} if entry.lfs else {})}
                for path, entry in sorted(commit.files.items())
            ]
            card = commit.files.get("README.md")
            card_data = _front_matter(card.data.decode("utf-8", "replace"))[0] if card else None
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
                "createdAt": repo.created, "private": repo.private, "gated": False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": siblings, "usedStorage": 0}
        if isinstance(card_data, dict):
            info["cardData"] = card_data
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        self._json(info)

    # ------------------------------------------------------------ listings

    def h_tree(self, t: str, ns: str, name: str, rev: str, path: str = "") -> None:
        recursive, expand = self._flag("recursive"), self._flag("expand")
        path = path.strip("/")
        with self.state.lock:
            repo = self._repo(t, ns, name)
            commit = repo.resolve(rev)
            prefix = f"{path}/" if path else ""
            if path in commit.files or (path and not any(p.startswith(prefix) for p in commit.files)):
                raise HubError(404, f"{path!r} is not a folder of {repo.repo_id}@{rev}", "EntryNotFound",
                               {"X-Repo-Commit": commit.sha})
            entries: dict[str, dict[str, Any]] = {}
            for file_path, entry in sorted(commit.files.items()):
                if not file_path.startswith(prefix):
                    continue
                parts = file_path[len(prefix):].split("/")
                for depth in range(1, len(parts)):
                    if depth > 1 and not recursive:
                        break
                    folder = prefix + "/".join(parts[:depth])
                    entries.setdefault(folder, self._dir_entry(folder, commit, expand))
                if recursive or len(parts) == 1:
                    entries[file_path] = self._file_entry(file_path, entry, commit if expand else None)
        self._json(sorted(entries.values(), key=lambda item: (item["type"] != "directory", item["path"])))

    def h_paths_info(self, t: str, ns: str, name: str, rev: str) -> None:
        form = parse_qs(self.body.decode())
        if not form and self.body.strip().startswith(b"{"):
            form = {key: value if isinstance(value, list) else [str(value)]
                    for key, value in self._json_body().items()}
        expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        with self.state.lock:
            commit = self._repo(t, ns, name).resolve(rev)
            out = []
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in commit.files:
                    out.append(self._file_entry(path, commit.files[path], commit if expand else None))
                elif path == "" or any(p.startswith(f"{path}/") for p in commit.files):
                    out.append(self._dir_entry(path, commit, expand))
        self._json(out)

    # ------------------------------------------------------------ downloads

    def h_resolve(self, ns: str, name: str, rev: str, path: str, p: str | None = None) -> None:
        with self.state.lock:
            repo = self._repo_p(p, ns, name)
            commit = repo.resolve(rev)
            entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        data = entry.data
        ranges = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (ranges or "").strip())
        if ranges and match and (match.group(1) or match.group(2)):
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            else:
                start, end = max(len(data) - int(last), 0), len(data) - 1
            if start >= len(data) or start > end:
                raise HubError(416, f"range {ranges} outside {len(data)} bytes",
                               headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start:end + 1], headers, "application/octet-stream")
            return
        self._send(200, data, headers, "application/octet-stream")

    # ------------------------------------------------------------ uploads

    def h_preupload(self, t: str, ns: str, name: str, rev: str) -> None:
        self._require_token()
        if self._flag("create_pr"):
            raise HubError(400, "pull requests are not supported by the test server")
        files = self._json_body().get("files", [])
        with self.state.lock:
            commit = self._repo(t, ns, name).resolve(rev)
            out = []
            for item in files:
                path, size = item["path"], int(item["size"])
                sample = base64.b64decode(item.get("sample", ""))
                try:  # a sample cut inside a UTF-8 character is still text
                    codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
                    binary = b"\0" in sample
                except UnicodeDecodeError:
                    binary = True
                lfs = path.endswith(LFS_SUFFIXES) or binary or size >= LFS_MIN_SIZE
                answer: dict[str, Any] = {"path": path, "uploadMode": "lfs" if lfs else "regular",
                                          "shouldIgnore": False}
                existing = commit.files.get(path)
                if existing is not None:
                    answer["oid"] = existing.sha256 if existing.lfs else existing.oid
                out.append(answer)
        self._json({"files": out, "commitOid": commit.sha})

    def h_lfs_batch(self, ns: str, name: str, p: str | None = None) -> None:
        self._require_token()
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, f"LFS batch operation {body.get('operation')!r} not supported")
        with self.state.lock:
            self._repo_p(p, ns, name)
            objects = []
            for item in body.get("objects", []):
                oid, size = item["oid"], int(item["size"])
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in self.state.lfs_objects:
                    answer["actions"] = {"upload": {"href": f"{self._base()}/_lfs/{oid}?size={size}"}}
                objects.append(answer)
        self._json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def h_lfs_put(self, oid: str) -> None:
        expected = (self.query.get("size") or [None])[0]
        actual = hashlib.sha256(self.body).hexdigest()
        if actual != oid:
            raise HubError(400, f"sha256 mismatch: expected {oid}, got {actual}")
        if expected is not None and int(expected) != len(self.body):
            raise HubError(400, f"size mismatch: expected {expected}, got {len(self.body)}")
        with self.state.lock:
            self.state.lfs_objects[oid] = self.body
            self.state.lfs_uploads.append(oid)
        self._send(200, b"")

    def _commit_payload(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A commit request's header and its operation lines (NDJSON)."""
        self._require_token()
        if self._flag("create_pr"):
            raise HubError(400, "pull requests are not supported by the test server")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        return lines[0]["value"], lines[1:]

    @staticmethod
    def _branch_head(repo: Repo, rev: str, wanted: str | None) -> Commit:
        """The commit branch `rev` points at, which must be `wanted` (a sha prefix) when given."""
        if rev not in repo.branches:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        parent = repo.commits[repo.branches[rev]]
        if wanted and not parent.sha.startswith(wanted):
            raise HubError(412, f"parent commit {wanted} is not the head of {rev} ({parent.sha})")
        return parent

    def _apply_operation(self, files: dict[str, Entry], key: str | None, value: dict[str, Any]) -> None:
        """Apply one commit operation (`file`, `lfsFile`, `deletedFile`, `deletedFolder`) to `files`."""
        path = value.get("path", "")
        if key == "file":
            files[path] = Entry.make(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            data = self.state.lfs_objects.get(value["oid"])
            if data is None:
                raise HubError(400, f"LFS object {value['oid']} for {path} was never uploaded")
            files[path] = Entry.make(data, lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            gone = [p for p in files if p.startswith(prefix)]
            if not gone:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in gone:
                del files[p]
        else:
            raise HubError(400, f"unknown commit operation {key!r}")

    def h_commit(self, t: str, ns: str, name: str, rev: str) -> None:
        header, operations = self._commit_payload()
        if self.state.commit_delay:
            time.sleep(self.state.commit_delay)
        with self.state.lock:
            repo = self._repo(t, ns, name)
            parent = self._branch_head(repo, rev, header.get("parentCommit"))
            files = dict(parent.files)
            touched = []
            for line in operations:
                value = line.get("value", {})
                touched.append(value.get("path", ""))
                self._apply_operation(files, line.get("key"), value)
            sha = self.state.next_sha(repo.repo_type, repo.repo_id, header.get("summary", ""))
            repo.commits[sha] = Commit(sha, parent.sha, header.get("summary", ""), _now(), files)
            repo.branches[rev] = sha
            self.state.commits_made.append((repo.repo_type, repo.repo_id, sorted(touched)))
        url = f"{self._base()}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
        self._json({"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None})


def resolve_url(server: HubServer, repo_id: str, path: str, repo_type: str = "model", rev: str = "main") -> str:
    return f"{server.url}/{URL_PREFIX[repo_type]}{repo_id}/resolve/{quote(rev, safe='')}/{quote(path)}"
