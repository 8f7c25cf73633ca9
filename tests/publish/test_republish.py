"""Publishing again: only what changed is uploaded, an interrupted or killed push resumes without uploading twice,
rate limits (429, Retry-After) and request budgets are kept, branches and revisions, sharded repos at scale, and
`zoo verify` on what readers get without a revision."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers.paths import ROOT
from helpers.publishing import REPO, publishable_files, run
from helpers.zoo_factory import EPOCHS, write_member

from zoo import layout
from zoo.cli import main

SCALE_MEMBERS, SCALE_REPO_FILES, SCALE_FOLDER, SCALE_COMMIT = 80, 240, 16, 50


@pytest.mark.slow
def test_republish_uploads_only_what_changed(zoo, hub_server, tmp_path, capsys):
    from datasets import load_dataset

    root = tmp_path / "zoo"
    shutil.copytree(zoo, root)
    repo = "org/growing-zoo"
    state = hub_server.state
    assert main(["publish", str(root), "--repo-id", repo]) == 0
    commits, uploads = len(state.commits_made), len(state.lfs_uploads)

    # unchanged zoo: byte-identical staging, so nothing is uploaded and no commit is made; not even asked for
    # (a server that answers preupload without the stored oids would get every file again)
    requests = len(state.request_log)
    assert main(["publish", str(root), "--repo-id", repo]) == 0
    assert len(state.commits_made) == commits and len(state.lfs_uploads) == uploads
    asked = {name for _, _, name in state.request_log[requests:]}
    assert not asked & {"preupload", "lfs_batch", "lfs_put", "commit"}, asked

    parent = layout.find_member(root, "vit_sup_seed_0_optim_adamw")
    new = write_member(root, "ft_seed_99", "vit-finetune", {"seed": 99, "learning_rate": 0.0003, "optim": "sgd",
                                                             "extra": "x"}, seed=99, parent=parent)
    assert main(["publish", str(root), "--repo-id", repo]) == 0
    new_weights = {hashlib.sha256((new.checkpoint_dir(e) / "model.safetensors").read_bytes()).hexdigest()
                   for e in range(EPOCHS + 1)}
    model_commit = [paths for kind, rid, paths in state.commits_made[commits:] if rid == f"{repo}-models"]
    assert model_commit == [sorted(["README.md"] + [f"{new.relpath}/{layout.checkpoint_name(e)}/{name}"
                                                     for e in range(EPOCHS + 1)
                                                     for name in ("config.json", "model.safetensors",
                                                                  "preprocessor_config.json")])]
    uploaded = state.lfs_uploads[uploads:]
    dataset_lfs = {e.sha256 for p, e in hub_server.files(repo, "dataset").items() if e.lfs}
    assert new_weights <= set(uploaded) and set(uploaded) - new_weights <= dataset_lfs
    assert len(uploaded) == len(set(uploaded))

    members = load_dataset(repo, "members", split="train")
    assert members.num_rows == 7 and "extra" in members.column_names
    row = next(r for r in members if r["member"] == "ft_seed_99")
    assert row["extra"] == "x" and row["parent_member"] == "vit_sup_seed_0_optim_adamw"
    assert sum(r["extra"] is None for r in members) == 6
    assert load_dataset(repo, "checkpoints", split="train").num_rows == 21
    assert run(capsys, "verify", repo)[0] == 0

    # a member gone from the zoo is gone from the repos: the publisher's folders mirror the zoo
    shutil.rmtree(new.path)
    assert main(["publish", str(root), "--repo-id", repo]) == 0
    assert not [p for p in hub_server.files(f"{repo}-models") if p.startswith(new.relpath)]
    assert load_dataset(repo, "members", split="train").num_rows == 6
    assert run(capsys, "verify", repo)[0] == 0


def test_interrupted_push_resumes_without_reuploading(zoo, hub_server, capsys):
    repo = "org/interrupted"
    state = hub_server.state
    hub_server.fail_next("commit")
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", repo, "--max-retries", "0")
    assert code == 2 and f"push to model repo {repo}-models" in err
    uploaded = state.lfs_uploads[:]
    weights = {e["sha256"] for e in _manifest_of_zoo(zoo) if e["path"].endswith(".safetensors")}
    assert weights <= set(uploaded)  # the checkpoints went up before the commit failed
    assert set(hub_server.files(f"{repo}-models")) == {".gitattributes"}

    code, out, err = run(capsys, "publish", str(zoo), "--repo-id", repo)
    assert code == 0, err[-3000:]
    assert not set(state.lfs_uploads[len(uploaded):]) & weights  # nothing uploaded twice
    code, out, err = run(capsys, "verify", repo)
    assert code == 0, (out, err[-3000:])


def _manifest_of_zoo(zoo: Path) -> list[dict]:
    return [{"path": path, "sha256": sha} for path, sha in publishable_files(zoo).items()]


def test_branch_revision_and_bad_input(zoo, hub_server, tmp_path, capsys):
    from datasets import load_dataset

    assert main(["publish", str(zoo), "--repo-id", "org/branchy", "--model-repo-id", "org/branchy-weights",
                 "--revision", "dev"]) == 0
    assert set(hub_server.files("org/branchy", "dataset")) == {".gitattributes"}  # main untouched
    rows = load_dataset("org/branchy", "checkpoints", split="train", revision="dev")
    assert set(rows["model_repo"]) == {"org/branchy-weights"}
    assert set(rows["revision"]) == {hub_server.head("org/branchy-weights", branch="dev")}

    from huggingface_hub import HfApi

    from zoo.publish import publish

    with pytest.raises(ValueError, match=r"^create model repo org/unreachable-models: .*") as err:
        publish(zoo, "org/unreachable", api=HfApi(endpoint="http://127.0.0.1:9"), max_retries=0)
    assert "\n" not in str(err.value)
    assert not list(zoo.glob(".publish_staging.*"))  # the staging folder is cleaned up

    for argv, needle in (
        (["publish", str(zoo), "--repo-id", "no-namespace"], "'no-namespace': expected <namespace>/<name>"),
        (["publish", str(tmp_path / "nope"), "--repo-id", REPO], "nope: not a folder"),
        (["publish", str(tmp_path), "--repo-id", REPO], "no zoo members found"),
        (["publish", str(zoo), "--repo-id", REPO, "--model-repo-id", REPO], "must differ"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and needle in err, err


@pytest.mark.slow
def test_kill_9_mid_publish_then_rerun_uploads_nothing_twice(zoo, hub_server, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    import time

    repo, state = "org/killed", hub_server.state
    stale = zoo / ".publish_staging.999999999.left"  # left by a killed publish
    stale.mkdir()
    (stale / "x").write_text("x")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    commits = len(state.commits_made)
    state.commit_delay = 0.3
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "publish", str(zoo), "--repo-id", repo,
                             "--commit-files", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while sum(rid == f"{repo}-models" for _, rid, _ in state.commits_made[commits:]) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "publish ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        state.commit_delay = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    landed = {e.sha256 for p, e in hub_server.files(f"{repo}-models").items() if e.lfs}
    assert landed and len(landed) < 18  # partly published
    assert list(zoo.glob(f".publish_staging.*.{proc.pid}.*"))  # the kill left its staging folder (host.pid.*)

    uploads = len(state.lfs_uploads)
    code, out, err = run(capsys, "publish", str(zoo), "--repo-id", repo, "--commit-files", "4")
    assert code == 0, err[-2000:]
    assert not set(state.lfs_uploads[uploads:]) & landed  # nothing that had landed went up again
    assert not list(zoo.glob(".publish_staging.*"))  # leftovers of killed publishes are removed
    code, out, _ = run(capsys, "verify", repo)
    assert code == 0 and "18 checkpoints" in out, out


@pytest.mark.slow
def test_429_retry_after_is_honoured_and_request_budget_kept(zoo, hub_server, capsys):
    state = hub_server.state
    hub_server.fail_next("commit", 429, retry_after="2")
    start = len(state.request_log)
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", "org/limited")
    assert code == 0 and "HTTP 429; retrying in 2 s (Retry-After)" in err
    commits = [t for t, _, name in state.request_log[start:] if name == "commit"]
    assert commits[1] - commits[0] >= 2.0  # the retry came after Retry-After, not before

    start = len(state.request_log)
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", "org/budgeted", "--request-budget", "5/1")
    assert code == 0, err[-2000:]
    times = [t for t, _, _ in state.request_log[start:]]
    assert len(times) > 10  # enough requests that the budget had to hold some back
    assert max(sum(1 for u in times if t <= u < t + 0.95) for t in times) <= 5


def test_verify_checks_what_readers_get_without_a_revision(zoo, hub_server, capsys):
    """Files deleted or changed on the model repo's main, or on a checkpoint's branch, after the publish: the
    pinned commits still hold the zoo, but what `from_pretrained` gets by default does not."""
    from huggingface_hub import HfApi
    from transformers import AutoModel

    repo, models = "org/heads", "org/heads-models"
    assert main(["publish", str(zoo), "--repo-id", repo, "--branches"]) == 0
    assert run(capsys, "verify", repo, "--no-download")[0] == 0
    manifest = json.loads(hub_server.read(repo, "manifest.json", "dataset"))
    pinned = manifest["model_repos"][0]["revision"]
    assert manifest["model_repos"][0]["branch"] == "main" and pinned == hub_server.head(models)
    ckpts = manifest["checkpoints"]
    gone, changed, branched = ckpts[1], ckpts[4], ckpts[7]
    weights = f"{gone['subfolder']}/model.safetensors"
    config = f"{changed['subfolder']}/config.json"

    api = HfApi()
    AutoModel.from_pretrained(models, subfolder=gone["subfolder"])
    api.delete_file(weights, repo_id=models)
    api.upload_file(path_or_fileobj=b'{"model_type": "vit"}', path_in_repo=config, repo_id=models)
    api.upload_file(path_or_fileobj=b"not weights", path_in_repo="model.safetensors", repo_id=models,
                    revision=branched["ref"])
    with pytest.raises(OSError):  # the default (head of main) lost the checkpoint ...
        AutoModel.from_pretrained(models, subfolder=gone["subfolder"])
    AutoModel.from_pretrained(models, subfolder=gone["subfolder"], revision=pinned)  # ... the pinned commit has it

    head = hub_server.head(models)
    where = f"model repo {models} branch main (head {head[:12]}, not the pinned {pinned[:12]})"
    for flags in ([], ["--no-download"]):
        code, out, _ = run(capsys, "verify", repo, *flags)
        problems = [line for line in out.splitlines() if "problem(s)" not in line]
        assert code == 1 and "3 problem(s): FAILED" in out, out
        at_pin = hub_server.files(models, revision=pinned)
        assert sorted(problems) == sorted([
            f"zoo verify: {where}: {weights}: missing",
            f"zoo verify: {where}: {config}: altered: size 21, manifest says {at_pin[config].size}",
            f"zoo verify: model repo {models} branch {branched['ref']}: model.safetensors: altered: size 11, "
            f"manifest says {at_pin[branched['subfolder'] + '/model.safetensors'].size}",
        ]), out

    # publishing again repairs the heads (and pins them)
    assert main(["publish", str(zoo), "--repo-id", repo, "--branches"]) == 0
    code, out, _ = run(capsys, "verify", repo, "--no-download")
    assert code == 0 and "0 problem(s): OK" in out, out
    AutoModel.from_pretrained(models, subfolder=gone["subfolder"])


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    from helpers.zoo_factory import write_tiny_zoo

    root = tmp_path_factory.mktemp("tiny") / "zoo"
    write_tiny_zoo(root, SCALE_MEMBERS)
    return root


def _folder_entries(paths) -> dict[str, int]:
    from zoo.publish.stage import folder_entry_counts

    return folder_entry_counts(list(paths))


@pytest.mark.slow
def test_scale_publish_within_limits_survives_429s_and_loads_by_revision(tiny_zoo, hub_server, capsys):
    """The make-test version of bench/bench_publish.py: a small per-repo budget and folder limit, so the sharding
    paths run; every 25th write or listing request is answered 429 with Retry-After."""
    import random

    import torch
    from datasets import load_dataset
    from safetensors.torch import load_file
    from transformers import AutoModel

    repo = "org/scale"
    state = hub_server.state
    commits_before = len(state.commits_made)
    hub_server.throttle(every=25, retry_after="0")
    try:
        code, out, err = run(capsys, "publish", str(tiny_zoo), "--repo-id", repo, "--branches",
                             "--max-repo-files", str(SCALE_REPO_FILES), "--max-folder-entries", str(SCALE_FOLDER),
                             "--commit-files", str(SCALE_COMMIT))
    finally:
        hub_server.throttle(every=0)
    assert code == 0, err[-2000:]
    assert len(state.throttled) > 5 and "Retry-After" in err  # 429s came, and were waited out

    rows = load_dataset(repo, "checkpoints", split="train")
    members = layout.scan_members(tiny_zoo)
    assert rows.num_rows == sum(len(m.checkpoints) for m in members)
    assert len({(r["member_path"], r["epoch"]) for r in rows}) == rows.num_rows  # each checkpoint exactly once
    model_repos = sorted(set(rows["model_repo"]))
    assert len(model_repos) >= 3 and model_repos[0] == f"{repo}-models-00"
    for model_repo in model_repos:
        with state.lock:
            stored = state.repo("model", model_repo)
            trees = {name: dict(stored.commits[sha].files) for name, sha in stored.branches.items()}
        assert len(trees["main"]) <= SCALE_REPO_FILES
        for tree in trees.values():
            assert max(_folder_entries(tree).values()) <= SCALE_FOLDER
        ours = [r for r in rows if r["model_repo"] == model_repo]
        assert set(trees) == {"main"} | {r["revision"] for r in ours}  # one branch per checkpoint, no other
    assert any("/shard_0000/" in r["subfolder"] for r in rows)
    assert all(len(paths) <= SCALE_COMMIT for _, rid, paths in state.commits_made[commits_before:]
               if rid.startswith(repo))

    code, out, _ = run(capsys, "verify", repo, "--no-download")
    assert code == 0 and f"{rows.num_rows} checkpoints, {rows.num_rows} branches, 0 problem(s)" in out, out

    for row in random.Random(0).sample(list(rows), 8):
        local = load_file(tiny_zoo / row["member_path"] / row["checkpoint"] / "model.safetensors")
        by_revision = AutoModel.from_pretrained(row["model_repo"], revision=row["revision"])
        by_subfolder = AutoModel.from_pretrained(row["model_repo"], subfolder=row["subfolder"],
                                                 revision=row["subfolder_revision"])
        for model in (by_revision, by_subfolder):
            loaded = [t for t in model.state_dict().values()]
            assert all(any(t.shape == v.shape and torch.equal(t, v) for t in loaded)
                       for k, v in local.items() if k.startswith(model.base_model_prefix + "."))

    # unchanged zoo, published again: not one commit, not one upload
    commits, uploads = len(state.commits_made), len(state.lfs_uploads)
    code, out, err = run(capsys, "publish", str(tiny_zoo), "--repo-id", repo, "--branches",
                         "--max-repo-files", str(SCALE_REPO_FILES), "--max-folder-entries", str(SCALE_FOLDER),
                         "--commit-files", str(SCALE_COMMIT))
    assert code == 0 and "0 commit(s)" in out, err[-2000:]
    assert len(state.commits_made) == commits and len(state.lfs_uploads) == uploads


def test_layout_rules():
    from zoo.publish import ref_name, shard_folders

    paths = [f"language/pretraining/m{i:03d}" for i in range(25)] + ["vision/finetuning/p/c"]
    mapped = shard_folders(paths, 10)
    assert mapped["language/pretraining/m000"] == "language/pretraining/shard_0000/m000"
    assert mapped["language/pretraining/m024"] == "language/pretraining/shard_0002/m024"
    assert mapped["vision/finetuning/p/c"] == "vision/finetuning/p/c"
    taken: set[str] = set()
    names = [ref_name("a/b/..x.lock", 1, taken), ref_name("a/b/..x.lock", 1, taken), ref_name("y" * 300, 2, taken)]
    assert names[0] == "a--b--.x.lock--checkpoint_000001" and names[1].startswith(names[0] + "-")
    assert len(names[2]) <= 200 and len(set(names)) == 3
    for name in names:
        assert ".." not in name and "/" not in name and not name.endswith((".lock", ".")) and name[0] not in ".-"
