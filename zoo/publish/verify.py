"""`zoo verify`: a published zoo against its manifest. Every file of every repo is checked (size and sha256 of the
bytes served; with `--no-download`, of what the Hub lists), files nobody planned are named, every planned
checkpoint of every complete member must be published exactly once, and every checkpoint branch must hold exactly
its checkpoint."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.publish.common import GITATTRIBUTES, MANIFEST, MANIFEST_FORMAT, FileRecord, check_repo_id, tqdm_bar
from zoo.publish.push import HubTarget, LocalTarget, Remote, Target


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
             skip: set[str], branch: str | None = None) -> dict[str, Remote] | None:
        """Compare one tree with its expected files: missing and extra now, contents now or (download) later."""
        where = self.target.describe(repo_id, repo_type) + (f" branch {branch}" if branch else "")
        try:
            present = self.target.files(repo_id, repo_type, revision)
        except ValueError as err:
            self.report.problems.append(f"{where}: cannot be listed: {err}")
            self.report.checked += len(expected)
            return None
        for path in sorted(set(present) - set(expected) - skip):
            self.report.problems.append(f"{where}: {path}: extra: not in the manifest")
        for path, record in sorted(expected.items()):
            remote = present.get(path)
            if remote is None:
                self.report.checked += 1
                self.report.problems.append(f"{where}: {path}: missing")
            elif self.download:
                self.jobs.append((repo_id, repo_type, revision, record, where))
            else:
                self.report.checked += 1
                problem = _compare(where, path, record, remote.size, remote.sha256, remote.git_oid)
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


def _open_target(target: str | Path, revision: str | None, api: Any) -> tuple[Target, str, str, bytes]:
    """The target, the dataset repo id, the dataset revision to read, and the manifest's bytes."""
    if Path(target).is_dir():
        root = Path(target)
        if not (root / "dataset" / MANIFEST).is_file() and (root / MANIFEST).is_file():
            root = root.parent  # the dataset folder itself
        path = root / "dataset" / MANIFEST
        if not path.is_file():
            raise ValueError(f"{target}: no {MANIFEST} (expected a folder written by zoo publish --local-dir)")
        data = path.read_bytes()
        manifest = _parse_manifest(data, str(path))
        folders = {manifest["dataset_repo"]: "dataset",
                   **{repo["repo"]: repo["local_folder"] for repo in manifest["model_repos"]}}
        return LocalTarget(root, folders, revision or "main"), manifest["dataset_repo"], revision or "main", data
    repo_id = check_repo_id(str(target), "repo id")
    hub = HubTarget(api, max_retries=3)
    try:
        sha = hub.head(repo_id, "dataset", revision or "main")
        data = hub.read(repo_id, "dataset", sha, MANIFEST)
    except ValueError as err:
        raise ValueError(f"dataset repo {repo_id}@{revision or 'main'}: cannot read {MANIFEST}: {err}") from None
    if data is None:
        raise ValueError(f"dataset repo {repo_id}@{revision or 'main'}: cannot read {MANIFEST}: not found")
    return hub, repo_id, sha, data


def verify(target: str | Path, *, revision: str | None = None, download: bool = True, api: Any = None) -> VerifyReport:
    """Check a published zoo (a dataset repo id, or a `--local-dir` folder) against its manifest."""
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

    # every planned checkpoint of every complete member, exactly once
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

    # each checkpoint's own branch holds it alone
    with_refs = [cp for cp in manifest["checkpoints"] if cp.get("ref")]
    branches = {repo: store.branches(repo, "model") for repo in {cp["repo"] for cp in with_refs}}
    for cp in with_refs:
        report.refs += 1
        where = f"{store.describe(cp['repo'], 'model')} branch {cp['ref']}"
        if cp["ref"] not in branches[cp["repo"]]:
            report.problems.append(f"{where}: missing (checkpoint {cp['member_path']} epoch {cp['epoch']})")
            continue
        expected = {name: repo_files[cp["repo"]][f"{cp['subfolder']}/{name}"].moved(name)
                    for name in cp["files"] if f"{cp['subfolder']}/{name}" in repo_files[cp["repo"]]}
        checker.tree(cp["repo"], "model", cp["ref"], expected, {GITATTRIBUTES}, branch=cp["ref"])
    if download:
        checker.fetch_all()
    return report


def cli_verify(args: Any) -> int:
    report = verify(args.repo_id, revision=args.revision, download=not args.no_download)
    for problem in report.problems:
        print(f"zoo verify: {problem}")
    status = "FAILED" if report.problems else "OK"
    print(f"zoo verify: {report.target}: {report.checked} files in the manifest, {report.checkpoints} checkpoints, "
          f"{report.refs} branches, {len(report.problems)} problem(s): {status}")
    return 1 if report.problems else 0
