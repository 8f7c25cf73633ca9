"""`zoo verify`: a published zoo against its manifest. Every file of every repo is checked at the commit the tables
pin (size and sha256 of the bytes served; with `--no-download`, of what the Hub lists), files nobody planned are
named, every planned checkpoint of every complete member must be published exactly once, and every checkpoint branch
must hold exactly its checkpoint. What a reader gets without a revision is checked too: the head of each model
repo's branch (when commits came after the pinned one) and of every checkpoint branch, compared with the manifest
through the Hub's listing (sizes, LFS sha256, git blob ids)."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.publish.common import GITATTRIBUTES, MANIFEST, MANIFEST_FORMAT, FileRecord, check_repo_id, tqdm_bar
from zoo.publish.push import HubTarget, LocalTarget, Remote, Target
from zoo.publish.scratch import DATASET_FOLDER, PARTIAL_PREFIX


@dataclass
class VerifyReport:
    target: str
    checked: int = 0
    checkpoints: int = 0
    refs: int = 0
    problems: list[str] = field(default_factory=list)


def _parse_manifest(data: bytes, source: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{source}: not a transformer-zoo manifest (no format {MANIFEST_FORMAT!r})")
    files = [manifest.get("dataset_files")] + [repo.get("files") for repo in manifest.get("model_repos") or []
                                               if isinstance(repo, dict)]
    for entries in files:
        if not isinstance(entries, list) or not all(isinstance(f, dict) and {"path", "size", "sha256"} <= set(f)
                                                    for f in entries):
            raise ValueError(f"{source}: its file lists must be lists of {{path, size, sha256}}")
    if not isinstance(manifest.get("checkpoints"), list) or not isinstance(manifest.get("members"), list):
        raise ValueError(f"{source}: no checkpoints or members list")
    return manifest


def _record(entry: dict[str, Any]) -> FileRecord:
    return FileRecord(entry["path"], int(entry["size"]), entry["sha256"], entry.get("git_oid", ""))


def _compare(where: str, path: str, expected: FileRecord, size: int, sha256: str | None,
             git_oid: str | None) -> str | None:
    if size != expected.size:
        return f"{where}: {path}: altered: size {size}, manifest says {expected.size}"
    if sha256 is not None and sha256 != expected.sha256:
        return f"{where}: {path}: altered: sha256 {sha256}, manifest says {expected.sha256}"
    if sha256 is None and git_oid != expected.git_oid:
        return f"{where}: {path}: altered: git blob {git_oid}, manifest says {expected.git_oid}"
    return None


class _Checker:
    def __init__(self, target: Target, report: VerifyReport, download: bool) -> None:
        self.target, self.report, self.download = target, report, download
        self.jobs: list[tuple[str, str, str, FileRecord, str]] = []  # repo, type, revision, expected, where

    def tree(self, repo_id: str, repo_type: str, revision: str, expected: dict[str, FileRecord],
             skip: set[str], branch: str | None = None, listing: bool = False) -> dict[str, Remote] | None:
        """Compare one tree with its expected files: missing and extra now, contents now (from the listing) or, when
        downloading and not `listing`, later. A `listing` check (a branch head beside its pinned commit) adds
        problems but no count of checked files."""
        where = self.target.describe(repo_id, repo_type) + (f" branch {branch}" if branch else "")
        count = 0 if listing else 1
        try:
            present = self.target.files(repo_id, repo_type, revision)
        except ValueError as err:
            self.report.problems.append(f"{where}: cannot be listed: {err}")
            self.report.checked += count * len(expected)
            return None
        for path in sorted(set(present) - set(expected) - skip):
            self.report.problems.append(f"{where}: {path}: extra: not in the manifest")
        for path, record in sorted(expected.items()):
            remote = present.get(path)
            if remote is not None and self.download and not listing:
                self.jobs.append((repo_id, repo_type, revision, record, where))
                continue
            self.report.checked += count
            problem = f"{where}: {path}: missing" if remote is None else _compare(
                where, path, record, remote.size, remote.sha256, remote.git_oid)
            if problem:
                self.report.problems.append(problem)
        return present

    def fetch_all(self) -> None:
        def check(job: tuple[str, str, str, FileRecord, str]) -> str | None:
            repo_id, repo_type, revision, record, where = job
            try:
                got = self.target.fetch_record(repo_id, repo_type, revision, record.path)
            except (ValueError, OSError) as err:
                return f"{where}: {record.path}: download failed: {str(err).splitlines()[0] if str(err) else err!r}"
            return _compare(where, record.path, record, got.size, got.sha256, None)

        with ThreadPoolExecutor(max_workers=4) as pool, tqdm_bar(total=len(self.jobs), unit="file",
                                                                 desc="verifying") as bar:
            for problem in pool.map(check, self.jobs):
                self.report.checked += 1
                if problem:
                    self.report.problems.append(problem)
                bar.update(1)


def _not_a_publish(root: Path, target: str | Path) -> ValueError:
    """Why `root` (an existing folder) is not a `--local-dir` publish, in one line."""
    looked = f"{root / DATASET_FOLDER / MANIFEST} or {root / MANIFEST}"
    hint = ""
    if (root.parent / DATASET_FOLDER / MANIFEST).is_file():
        hint = f"; {root.parent} is one: verify that folder"
    elif any(root.glob(f"{PARTIAL_PREFIX}*")):
        hint = f"; it holds a {PARTIAL_PREFIX}* folder: a publish into it is running or was killed before it finished"
    return ValueError(f"{target}: no manifest found (no {looked}): not a folder written by zoo publish --local-dir"
                      f"{hint}")


def _open_local(target: str | Path, revision: str | None) -> tuple[Target, str, str, bytes]:
    root = Path(target).expanduser()
    if not (root / DATASET_FOLDER / MANIFEST).is_file() and (root / MANIFEST).is_file():
        root = root.parent  # the dataset folder itself
    path = root / DATASET_FOLDER / MANIFEST
    if not path.is_file():
        raise _not_a_publish(Path(target).expanduser(), target)
    data = path.read_bytes()
    manifest = _parse_manifest(data, str(path))
    folders = {manifest["dataset_repo"]: DATASET_FOLDER,
               **{repo["repo"]: repo["local_folder"] for repo in manifest["model_repos"]}}
    return LocalTarget(root, folders, revision or "main"), manifest["dataset_repo"], revision or "main", data


def _open_target(target: str | Path, revision: str | None, api: Any) -> tuple[Target, str, str, bytes]:
    """The target, the dataset repo id, the dataset revision to read, and the manifest's bytes."""
    path = Path(target).expanduser()
    if path.is_dir():
        return _open_local(target, revision)
    if path.is_file() and path.name == MANIFEST:
        return _open_local(path.parent, revision)
    if path.exists():
        raise ValueError(f"{target}: a file, not a folder written by zoo publish --local-dir")
    try:
        repo_id = check_repo_id(str(target), "repo id")
    except ValueError:
        raise ValueError(f"{str(target)!r}: no such folder, and not a dataset repo id (expected <namespace>/<name>, "
                         "e.g. org/transformer-zoo)") from None
    hub = HubTarget(api, max_retries=3, command="zoo verify")
    where = f"dataset repo {repo_id}@{revision or 'main'}: cannot read {MANIFEST}"
    try:
        sha = hub.head(repo_id, "dataset", revision or "main")
        data = hub.read(repo_id, "dataset", sha, MANIFEST)
    except ValueError as err:
        raise ValueError(f"{where}: {err} (and there is no local folder {target})") from None
    if data is None:
        raise ValueError(f"{where}: not found")
    return hub, repo_id, sha, data


def _check_checkpoints(manifest: dict[str, Any], repo_files: dict[str, dict[str, FileRecord]],
                       report: VerifyReport) -> None:
    """Every planned checkpoint of every complete member, published exactly once, with its files listed."""
    seen = Counter((cp["member_path"], int(cp["epoch"])) for cp in manifest["checkpoints"])
    report.checkpoints = len(seen)
    for (member_path, epoch), count in sorted(seen.items()):
        if count > 1:
            report.problems.append(f"checkpoint {member_path} epoch {epoch}: duplicated: published {count} times")
    for member in manifest["members"]:
        for epoch in member.get("planned") or []:
            if (member["member_path"], int(epoch)) not in seen and member.get("state") == "complete":
                report.problems.append(f"checkpoint {member['member_path']} epoch {epoch}: missing: planned, "
                                       "not published")
    for cp in manifest["checkpoints"]:
        files = repo_files.get(cp["repo"], {})
        if not all(f"{cp['subfolder']}/{name}" in files for name in cp.get("files", [])):
            report.problems.append(f"checkpoint {cp['member_path']} epoch {cp['epoch']}: missing files in the "
                                   "manifest")


def _branch_heads(store: Target, repos: list[str], report: VerifyReport) -> dict[str, dict[str, str]]:
    """Branch name -> head commit, per model repo (a repo that cannot be listed is a problem, and has none)."""
    heads = {}
    for repo_id in repos:
        try:
            heads[repo_id] = store.branches(repo_id, "model")
        except ValueError as err:
            report.problems.append(f"{store.describe(repo_id, 'model')}: branches cannot be listed: {err}")
            heads[repo_id] = {}
    return heads


def _check_default_heads(checker: _Checker, manifest: dict[str, Any], repo_files: dict[str, dict[str, FileRecord]],
                         heads: dict[str, dict[str, str]]) -> None:
    """What a reader gets without a revision: the head of the branch each model repo was published to, when it is
    not the commit the tables pin (someone committed since), compared with the manifest through the listing."""
    for repo in manifest["model_repos"]:
        branch, pinned = repo.get("branch") or "main", repo["revision"]
        if pinned == branch:  # a local folder: its branch is its only state
            continue
        head = heads[repo["repo"]].get(branch)
        where = f"{checker.target.describe(repo['repo'], 'model')} branch {branch}"
        if head is None:
            checker.report.problems.append(f"{where}: missing (the tables pin commit {pinned[:12]}; a reader "
                                           "without a revision finds nothing)")
        elif head != pinned:
            checker.tree(repo["repo"], "model", head, repo_files[repo["repo"]], {GITATTRIBUTES},
                         branch=f"{branch} (head {head[:12]}, not the pinned {pinned[:12]})", listing=True)


def _check_refs(checker: _Checker, manifest: dict[str, Any], repo_files: dict[str, dict[str, FileRecord]],
                heads: dict[str, dict[str, str]]) -> None:
    """Each checkpoint's own branch holds it alone, at the branch's head."""
    for cp in (cp for cp in manifest["checkpoints"] if cp.get("ref")):
        checker.report.refs += 1
        where = f"{checker.target.describe(cp['repo'], 'model')} branch {cp['ref']}"
        if cp["ref"] not in heads.get(cp["repo"], {}):
            checker.report.problems.append(f"{where}: missing (checkpoint {cp['member_path']} epoch {cp['epoch']})")
            continue
        files = repo_files.get(cp["repo"], {})
        expected = {name: files[f"{cp['subfolder']}/{name}"].moved(name)
                    for name in cp["files"] if f"{cp['subfolder']}/{name}" in files}
        checker.tree(cp["repo"], "model", cp["ref"], expected, {GITATTRIBUTES}, branch=cp["ref"])


def verify(target: str | Path, *, revision: str | None = None, download: bool = True, api: Any = None) -> VerifyReport:
    """Check a published zoo (a dataset repo id, or a `--local-dir` folder) against its manifest: the commits the
    tables pin, and what a reader gets without a revision (the head of each model repo's branch and of every
    checkpoint branch)."""
    store, repo_id, dataset_revision, data = _open_target(target, revision, api)
    manifest = _parse_manifest(data, f"{repo_id}/{MANIFEST}")
    report = VerifyReport(str(target))
    checker = _Checker(store, report, download)
    checker.tree(repo_id, "dataset", dataset_revision, {e["path"]: _record(e) for e in manifest["dataset_files"]},
                 {MANIFEST, GITATTRIBUTES})
    repo_files: dict[str, dict[str, FileRecord]] = {}
    for repo in manifest["model_repos"]:
        repo_files[repo["repo"]] = {e["path"]: _record(e) for e in repo["files"]}
        checker.tree(repo["repo"], "model", repo["revision"], repo_files[repo["repo"]], {GITATTRIBUTES})
    _check_checkpoints(manifest, repo_files, report)
    heads = _branch_heads(store, [repo["repo"] for repo in manifest["model_repos"]], report)
    _check_default_heads(checker, manifest, repo_files, heads)
    _check_refs(checker, manifest, repo_files, heads)
    if download:
        checker.fetch_all()
    return report


def cli_verify(args: Any) -> int:
    try:
        report = verify(args.repo_id, revision=args.revision, download=not args.no_download)
    except OSError as err:  # an unreadable local folder: one line, no traceback
        reason = err.strerror or str(err) or type(err).__name__
        raise ValueError(f"{err.filename}: {reason}" if err.filename else reason) from None
    for problem in report.problems:
        print(f"zoo verify: {problem}")
    status = "FAILED" if report.problems else "OK"
    print(f"zoo verify: {report.target}: {report.checked} files in the manifest, {report.checkpoints} checkpoints, "
          f"{report.refs} branches, {len(report.problems)} problem(s): {status}")
    return 1 if report.problems else 0
