"""`zoo publish`: plan the layout, push the model repos (main trees, then one branch per checkpoint with
`--branches`), then the dataset repo whose tables and manifest name the commits the checkpoints landed in."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import kinds
from zoo.publish.budget import RequestBudget
from zoo.publish.cards import render_dataset_card, render_model_card, zoo_card_info
from zoo.publish.columns import write_parquet
from zoo.publish.common import (
    CARD,
    DATA_DIR,
    DEFAULT_COMMIT_FILES,
    DEFAULT_MAX_FOLDER_ENTRIES,
    DEFAULT_MAX_REPO_FILES,
    MANIFEST,
    PLOTS_DIR,
    SPEC,
    FileRecord,
    check_repo_id,
    default_model_repo_id,
    dump_json,
    record_of_bytes,
    record_of_file,
    short_list,
    write_file,
)
from zoo.publish.plots import render_plots
from zoo.publish.push import HubTarget, LocalTarget, Target, Upload, not_gitattributes, sync
from zoo.publish.scratch import DATASET_FOLDER, LocalPublish, staging_folder
from zoo.publish.splits import ZooSplits, zoo_splits
from zoo.publish.stage import ModelRepo, Selected, hash_checkpoints, plan_layout, select_members
from zoo.publish.tables import build_tables, write_weight_tables

DATASET_OWNED = (f"{DATA_DIR}/", f"{PLOTS_DIR}/")


@dataclass
class PublishReport:
    dataset_repo: str
    model_repos: list[str]
    members: int
    checkpoints: int
    not_complete: list[str]
    model_files: int = 0
    model_bytes: int = 0
    heads: dict[str, str] = field(default_factory=dict)
    dataset_commit: str | None = None
    commits: int = 0
    refs: int = 0
    retries: int = 0
    local_dir: Path | None = None


def _model_owned(path: str) -> bool:
    return path.split("/")[0] in kinds.MODALITIES


def _dataset_owned(path: str) -> bool:
    return path.startswith(DATASET_OWNED)


def _previous_refs(target: Target, repo_id: str, branch: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(repo, ref) -> (commit, sorted file sha256s) of the refs the previous publish's manifest records."""
    data = target.read(repo_id, "dataset", branch, MANIFEST)
    try:
        manifest = json.loads(data) if data else {}
        files = {(repo["repo"], entry["path"]): entry["sha256"] for repo in manifest.get("model_repos", [])
                 for entry in repo["files"]}
        return {(cp["repo"], cp["ref"]): (cp["ref_commit"],
                                          sorted(files[(cp["repo"], f"{cp['subfolder']}/{name}")]
                                                 for name in cp["files"]))
                for cp in manifest.get("checkpoints", []) if cp.get("ref")}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}  # an unreadable earlier manifest: every ref gets checked against its tree


def push_model_repos(target: Target, repos: list[ModelRepo], *, dataset_repo: str, branch: str, private: bool,
                     commit_files: int, info: dict[str, Any], endpoint: str,
                     report: PublishReport) -> tuple[dict[str, list[FileRecord]], dict[tuple[str, str], str]]:
    """Each repo's main tree (its card and checkpoints), then the checkpoints' own branches. Returns the files of
    each repo and each branch's commit."""
    repo_files: dict[str, list[FileRecord]] = {}
    message = f"transformer-zoo: {report.members} members, {report.checkpoints} checkpoints"
    for repo in repos:
        target.prepare(repo.repo_id, "model", branch, private)
        card = render_model_card(repo_id=dataset_repo, repo=repo, n_repos=len(repos), title=info["title"],
                                 license_id=info["license_id"], endpoint=endpoint).encode()
        wanted = {CARD: Upload(record_of_bytes(CARD, card), card)}
        for cp in repo.checkpoints:
            wanted.update({path: Upload(record, source) for path, (record, source) in cp.repo_files().items()})
        report.heads[repo.repo_id], commits = sync(target, repo.repo_id, "model", branch, wanted, _model_owned,
                                                   message, commit_files)
        report.commits += commits
        repo_files[repo.repo_id] = [upload.record for upload in wanted.values()]

    ref_heads: dict[tuple[str, str], str] = {}
    if not any(cp.ref for repo in repos for cp in repo.checkpoints):
        return repo_files, ref_heads
    previous = _previous_refs(target, dataset_repo, branch)
    for repo in repos:
        existing = target.branches(repo.repo_id, "model")
        for cp in repo.checkpoints:
            ref = cp.ref
            assert ref is not None
            wanted = {path: Upload(record, source) for path, (record, source) in cp.ref_files().items()}
            digest = sorted(upload.record.sha256 for upload in wanted.values())
            if ref in existing and previous.get((repo.repo_id, ref)) == (existing[ref], digest):
                ref_heads[(repo.repo_id, ref)] = existing[ref]
                continue
            remote = None if ref in existing else target.create_root_branch(repo.repo_id, "model", ref)
            ref_heads[(repo.repo_id, ref)], commits = sync(
                target, repo.repo_id, "model", ref, wanted, not_gitattributes,
                f"transformer-zoo: {cp.member.relpath} epoch {cp.epoch}", commit_files, remote)
            report.commits += commits
            report.refs += 1
        # branches of checkpoints the zoo no longer publishes
        for (repo_id, ref) in previous:
            if repo_id == repo.repo_id and ref in existing and (repo_id, ref) not in ref_heads:
                target.delete_branch(repo_id, "model", ref)
    return repo_files, ref_heads


def stage_dataset(zoo_dir: Path, selected: list[Selected], out: Path, *, repo_id: str, repos: list[ModelRepo],
                  heads: dict[str, str], splits: ZooSplits, with_weights: bool, branches: bool,
                  info: dict[str, Any], endpoint: str) -> list[FileRecord]:
    """Write the dataset repo's files, but the manifest, into `out`: tables, plots, spec and card."""
    import yaml

    data_dir = out / DATA_DIR
    table_files: dict[str, dict[str, list[str]]] = {}  # config -> split -> parquet files
    table_columns: dict[str, list[str]] = {}
    for name, table in build_tables(selected, repos, heads, splits).items():
        write_parquet(table, data_dir / f"{name}.parquet")
        table_files[name] = {"train": [f"{DATA_DIR}/{name}.parquet"]}
        table_columns[name] = table.column_names
    if with_weights:
        table_files["weights"] = write_weight_tables(selected, data_dir, splits)
        table_columns["weights"] = ["member", "member_path", "epoch", "weights"]
        table_files["weights_index"] = {"train": [f"{DATA_DIR}/weights_index.parquet"]}
        table_columns["weights_index"] = ["member_path", "name", "dtype", "shape", "offset", "numel"]
    plots = render_plots(selected)
    for plot in plots:
        write_file(out / plot["path"], plot["data"])
    spec = info["spec"]
    spec_yaml = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True) if spec else "{}\n"
    write_file(out / SPEC, spec_yaml.encode())
    card = render_dataset_card(
        repo_id=repo_id, model_repos=[repo.repo_id for repo in repos], title=info["title"],
        description=info["description"], license_id=info["license_id"], selected=selected, table_files=table_files,
        table_columns=table_columns, spec_yaml=spec_yaml, spec_hash=info["spec_hash"], plots=plots,
        splits=splits, with_weights=with_weights, branches=branches, endpoint=endpoint)
    write_file(out / CARD, card.encode())
    return [record_of_file(path.relative_to(out).as_posix(), path)
            for path in sorted(out.rglob("*")) if path.is_file()]


def _push_all(target: Target, staging: Path, *, zoo_dir: Path, selected: list[Selected], repos: list[ModelRepo],
              repo_id: str, branch: str, private: bool, commit_files: int, splits: ZooSplits, with_weights: bool,
              branches: bool, info: dict[str, Any], endpoint: str, report: PublishReport) -> None:
    """The model repos, then the dataset repo (its files staged in `staging`) with the manifest."""
    from zoo.publish.cards import build_manifest  # noqa: PLC0415 (kept beside its only caller)

    repo_files, ref_heads = push_model_repos(
        target, repos, dataset_repo=repo_id, branch=branch, private=private, commit_files=commit_files,
        info=info, endpoint=endpoint, report=report)
    dataset_files = stage_dataset(zoo_dir, selected, staging, repo_id=repo_id, repos=repos, heads=report.heads,
                                  splits=splits, with_weights=with_weights, branches=branches, info=info,
                                  endpoint=endpoint)
    manifest = dump_json(build_manifest(repo_id=repo_id, dataset_files=dataset_files, repos=repos, branch=branch,
                                        repo_files=repo_files, heads=report.heads, ref_heads=ref_heads,
                                        selected=selected))
    wanted = {record.path: Upload(record, staging / record.path) for record in dataset_files}
    wanted[MANIFEST] = Upload(record_of_bytes(MANIFEST, manifest), manifest)
    target.prepare(repo_id, "dataset", branch, private)
    report.dataset_commit, commits = sync(target, repo_id, "dataset", branch, wanted, _dataset_owned,
                                          f"transformer-zoo: {report.members} members", commit_files)
    report.commits += commits


def _file_error(err: OSError) -> str:
    """A one-line account of a failed file operation: the path and the reason (e.g. no space left on device)."""
    reason = err.strerror or next((line.strip() for line in str(err).splitlines() if line.strip()),
                                  type(err).__name__)
    return f"{err.filename}: {reason}" if err.filename else f"cannot write: {reason}"


def _check_numbers(commit_files: int, max_retries: int) -> None:
    if not isinstance(commit_files, int) or not 1 <= commit_files <= 1000:
        raise ValueError(f"--commit-files {commit_files!r}: must be between 1 and 1000")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"--max-retries {max_retries!r}: must be a whole number of at least 0")


def publish(zoo_dir: str | Path, repo_id: str, *, model_repo_id: str | None = None,
            local_dir: str | Path | None = None, with_weights: bool = False, allow_incomplete: bool = False,
            private: bool = False, revision: str | None = None, branches: bool = False,
            max_repo_files: int = DEFAULT_MAX_REPO_FILES, max_folder_entries: int = DEFAULT_MAX_FOLDER_ENTRIES,
            commit_files: int = DEFAULT_COMMIT_FILES, request_budget: str | None = None, max_retries: int = 8,
            api: Any = None) -> PublishReport:
    """Publish the zoo to the Hub, or, with `local_dir`, write the repos there (no network call): into a partial
    folder first, which replaces the old repo folders only once everything is written, so a failed publish leaves
    `local_dir` as it was. See the package docstring."""
    from huggingface_hub import constants

    zoo_dir = Path(zoo_dir)
    check_repo_id(repo_id)
    model_repo_id = check_repo_id(model_repo_id, "--model-repo-id") if model_repo_id else default_model_repo_id(
        repo_id)
    if model_repo_id == repo_id:
        raise ValueError(f"--model-repo-id {model_repo_id!r} must differ from --repo-id")
    _check_numbers(commit_files, max_retries)
    if local_dir is not None and Path(local_dir).exists() and not Path(local_dir).is_dir():
        raise ValueError(f"--local-dir {local_dir}: exists and is not a folder")
    budget = RequestBudget.parse(request_budget) if request_budget else None
    hub = HubTarget(api, budget=budget, max_retries=max_retries) if local_dir is None else None
    branch = revision or "main"
    selected, not_complete = select_members(zoo_dir, allow_incomplete)
    splits = zoo_splits(zoo_dir)  # a damaged splits.json stops the publish before anything is pushed
    repos = plan_layout(selected, model_repo_id, max_repo_files=max_repo_files,
                        max_folder_entries=max_folder_entries, branches=branches)
    if len(repos) > 1 and any(repo.repo_id == repo_id for repo in repos):
        raise ValueError(f"--model-repo-id {model_repo_id!r}: its shards must differ from --repo-id")
    hash_checkpoints(repos)
    report = PublishReport(repo_id, [repo.repo_id for repo in repos], len(selected),
                           sum(len(repo.checkpoints) for repo in repos), not_complete)
    report.model_files = sum(len(cp.records) for repo in repos for cp in repo.checkpoints)
    report.model_bytes = sum(r.size for repo in repos for cp in repo.checkpoints for r in cp.records.values())
    folders = {repo_id: DATASET_FOLDER, **{repo.repo_id: repo.local_folder for repo in repos}}
    local = LocalPublish(Path(local_dir), folders.values()) if local_dir is not None else None
    report.local_dir = local.root if local is not None else None
    job = {"zoo_dir": zoo_dir, "selected": selected, "repos": repos, "repo_id": repo_id, "branch": branch,
           "private": private, "commit_files": commit_files, "splits": splits, "with_weights": with_weights,
           "branches": branches, "info": zoo_card_info(zoo_dir), "endpoint": constants.ENDPOINT.rstrip("/"),
           "report": report}
    kept = f"; --local-dir {local_dir} is left as it was" if local is not None else ""
    try:
        with staging_folder(zoo_dir) as staging, local or nullcontext():
            target = LocalTarget(local.work, folders, branch, shown=local.root) if local is not None else hub
            assert target is not None
            with target.session():
                _push_all(target, staging, **job)
            if local is not None:
                local.finish()
    except OSError as err:
        raise ValueError(_file_error(err) + kept) from None
    except ValueError as err:
        if not kept:
            raise
        raise ValueError(f"{err}{kept}") from None
    report.retries = getattr(hub, "retries", 0)
    return report


def cli_publish(args: Any) -> int:
    try:
        report = publish(args.zoo_dir, args.repo_id, model_repo_id=args.model_repo_id, local_dir=args.local_dir,
                         with_weights=args.with_weights, allow_incomplete=args.allow_incomplete, private=args.private,
                         revision=args.revision, branches=args.branches, max_repo_files=args.max_repo_files,
                         max_folder_entries=args.max_folder_entries, commit_files=args.commit_files,
                         request_budget=args.request_budget, max_retries=args.max_retries)
    except OSError as err:  # reading the zoo (before anything is written): one line, no traceback
        raise ValueError(_file_error(err)) from None
    if report.not_complete:
        print(f"zoo publish: {len(report.not_complete)} member(s) left out or not complete, published what "
              f"verifies: {short_list(report.not_complete)}")
    size = f"{report.model_files} model files, {report.model_bytes / 1e6:.1f} MB"
    where = "wrote" if report.local_dir is not None else "published"
    print(f"zoo publish: {where} {report.members} members, {report.checkpoints} checkpoints ({size}) in "
          f"{len(report.model_repos)} model repo(s); {report.commits} commit(s), {report.refs} branch(es) updated, "
          f"{report.retries} retried request(s)")
    for repo_id, head in report.heads.items():
        print(f"zoo publish: model repo   {repo_id} at {head}")
    print(f"zoo publish: dataset repo {report.dataset_repo} at {report.dataset_commit}")
    if report.local_dir is not None:
        print(f"zoo publish: folders under {report.local_dir}; nothing pushed")
    return 0
