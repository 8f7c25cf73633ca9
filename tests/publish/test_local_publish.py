"""`zoo publish --local-dir`: both repos written without network, read back with datasets and transformers;
incomplete and unreadable zoos refused, a full disk or a failed write leaves nothing that looks published, numeric
options checked, staging folders of other publishes respected, and `zoo verify` of a local folder."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.paths import ROOT
from helpers.publishing import REPO, card_metadata, publishable_files, run
from helpers.zoo_factory import EPOCHS, make_synthetic_zoo

from zoo import layout
from zoo.cli import main


def test_local_dir_writes_both_repos_without_network(zoo, hub_server, tmp_path, capsys):
    requests = len(hub_server.state.requests)
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        code, stdout, _ = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out))
        assert code == 0 and "nothing pushed" in stdout
    assert len(hub_server.state.requests) == requests  # not one HTTP call

    files_a = sorted(p.relative_to(out_a).as_posix() for p in out_a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(out_b).as_posix() for p in out_b.rglob("*") if p.is_file())
    assert files_a == files_b and not any(Path(p).name.startswith(".") for p in files_a)
    assert all((out_a / p).read_bytes() == (out_b / p).read_bytes() for p in files_a)  # deterministic staging
    assert sorted(p.name for p in out_a.iterdir()) == ["dataset", "models"]
    models = {p: hashlib.sha256((out_a / "models" / p).read_bytes()).hexdigest()
              for p in publishable_files(zoo)}
    assert models == publishable_files(zoo)
    rows = pq.read_table(out_a / "dataset/data/checkpoints.parquet")
    assert set(rows.column("revision").to_pylist()) == {"main"}

    code, stdout, _ = run(capsys, "verify", str(out_a))
    assert code == 0 and "0 problem(s)" in stdout
    (out_a / "models" / next(iter(models))).write_bytes(b"{}")
    (out_a / "dataset" / "stray.txt").write_text("x")
    code, stdout, _ = run(capsys, "verify", str(out_a))
    assert code == 1 and next(iter(models)) in stdout and "stray.txt: extra: not in the manifest" in stdout


def test_incomplete_zoo_is_refused_unless_allowed(hub_server, tmp_path, capsys):
    root = tmp_path / "zoo"
    make_synthetic_zoo(root, incomplete=True, junk=False, language=False)
    capsys.readouterr()
    requests = len(hub_server.state.requests)
    code, _, err = run(capsys, "publish", str(root), "--repo-id", "org/incomplete")
    assert code == 2
    assert "vision/pretraining/vit_sup_seed_2_optim_adamw (incomplete)" in err and "--allow-incomplete" in err
    assert len(err.strip().splitlines()) == 1
    assert len(hub_server.state.requests) == requests

    code, _, _ = run(capsys, "publish", str(root), "--repo-id", "org/incomplete", "--allow-incomplete",
                     "--local-dir", str(tmp_path / "out"))
    assert code == 0
    members = pq.read_table(tmp_path / "out/dataset/data/members.parquet").to_pylist()
    states = {row["member"]: row["state"] for row in members}
    assert states.pop("vit_sup_seed_2_optim_adamw") == "incomplete" and set(states.values()) == {"complete"}
    ckpts = pq.read_table(tmp_path / "out/dataset/data/checkpoints.parquet").to_pylist()
    assert sorted(r["epoch"] for r in ckpts if r["member"] == "vit_sup_seed_2_optim_adamw") == [0, 1]
    assert len(ckpts) == 4 * 3 + 2


def test_weights_shards_and_local_dataset_folder_load(zoo, hub_server, tmp_path, monkeypatch):
    from datasets import concatenate_datasets, load_dataset

    from zoo.publish import publish, tables

    monkeypatch.setattr(tables, "WEIGHTS_SHARD_BYTES", 1)  # one checkpoint per shard
    publish(zoo, REPO, local_dir=tmp_path, with_weights=True)
    shards = sorted((tmp_path / "dataset/data/weights").glob("*.parquet"))
    assert len(shards) == 18
    card = card_metadata((tmp_path / "dataset/README.md").read_text())
    data_files = next(c for c in card["configs"] if c["config_name"] == "weights")["data_files"]  # one per split
    assert sorted(p for entry in data_files for p in entry["path"]) == [f"data/weights/{p.name}" for p in shards]
    by_split = load_dataset(str(tmp_path / "dataset"), "weights")
    assert set(by_split) == {entry["split"] for entry in data_files}
    rows = concatenate_datasets(list(by_split.values()))
    ckpts = load_dataset(str(tmp_path / "dataset"), "checkpoints", split="train")
    assert sorted((r["member_path"], r["epoch"]) for r in rows) == sorted((r["member_path"], r["epoch"]) for r in ckpts)


def test_unreadable_member_folder_is_an_error(zoo, tmp_path, capsys):
    root = tmp_path / "zoo"
    shutil.copytree(zoo, root)
    broken = root / "vision/finetuning/vit_con_seed_1_optim_sgd/ft_seed_11"
    (broken / "config.json").unlink()
    code, _, err = run(capsys, "publish", str(root), "--repo-id", REPO, "--local-dir", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{broken}/config.json" in err and "--allow-incomplete" in err
    assert not (tmp_path / "out").exists()
    code, out, _ = run(capsys, "publish", str(root), "--repo-id", REPO, "--local-dir", str(tmp_path / "out"),
                       "--allow-incomplete")
    assert code == 0 and "wrote 5 members" in out and "ft_seed_11/config.json: not found (unreadable)" in out


def test_verify_names_missing_extra_and_altered_checkpoints(zoo, tmp_path, capsys):
    out = tmp_path / "o"
    assert run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out), "--branches")[0] == 0
    code, stdout, _ = run(capsys, "verify", str(out))
    assert code == 0 and "18 checkpoints, 18 branches, 0 problem(s)" in stdout, stdout
    models = out / "models"
    gone = "language/pretraining/lm_seed_0/checkpoint_000001"
    shutil.rmtree(models / gone)  # missing
    shutil.copytree(models / "language/pretraining/lm_seed_0/checkpoint_000002",
                    models / "language/pretraining/lm_seed_0/checkpoint_000002_copy")  # duplicated
    ref = next((out / "models.refs").iterdir())
    (ref / "model.safetensors").write_bytes(b"x")  # altered in a branch
    code, stdout, _ = run(capsys, "verify", str(out))
    assert code == 1
    assert f"{gone}/model.safetensors: missing" in stdout
    assert "checkpoint_000002_copy/model.safetensors: extra: not in the manifest" in stdout
    assert f"branch {ref.name}: model.safetensors: altered: size 1" in stdout


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones included) and its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _error_lines(err: str, command: str = "publish") -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith(f"zoo {command}: error:")]


def _fill_disk_after(monkeypatch, copies: int) -> list[str]:
    """From the (copies + 1)th file copy on, `shutil.copyfile` writes half of the file and then fails as a full disk
    does (ENOSPC), so the publisher's own cleanup of partial files and folders runs."""
    import errno

    real, calls = shutil.copyfile, []

    def copyfile(src, dst, *args, **kwargs):
        calls.append(str(dst))
        if len(calls) <= copies:
            return real(src, dst, *args, **kwargs)
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    return calls


def test_local_dir_on_a_full_disk_leaves_nothing_that_looks_published(zoo, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    calls = _fill_disk_after(monkeypatch, 20)
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out))
    assert len(calls) == 21  # the disk filled up half-way through the model files
    [error] = _error_lines(err)
    assert code == 2 and error.startswith(f"zoo publish: error: cannot write {out}/models/")
    assert "No space left on device" in error and f"--local-dir {out} is left as it was" in error
    assert not out.exists()  # it did not exist before: no models folder, no partial folder, nothing
    assert not list(zoo.glob(".publish_staging.*"))

    monkeypatch.undo()
    assert run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out))[0] == 0
    before = _snapshot(out)
    calls = _fill_disk_after(monkeypatch, 0)  # a republish with branches has new files to write: the first fails
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out), "--branches")
    assert code == 2 and len(calls) == 1 and "No space left on device" in _error_lines(err)[0]
    assert _snapshot(out) == before  # the first publish is untouched: same files, same bytes, no leftovers
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "models"]
    monkeypatch.undo()
    code, stdout, _ = run(capsys, "verify", str(out))
    assert code == 0 and "0 problem(s): OK" in stdout


def test_local_dir_write_failure_from_the_kernel_is_one_line(zoo, tmp_path):
    """A real failed write: under RLIMIT_FSIZE the kernel fails every write past the limit (EFBIG). The limit lets
    every model file through, so all of models/ gets written; the `weights` table (every checkpoint's parameters)
    is larger, so the publish fails after the models: the error names the file and nothing is left in --local-dir,
    no models folder without a manifest."""
    import subprocess
    import sys

    sizes = [p.stat().st_size for p in zoo.rglob("*.safetensors")]
    limit = max(p.stat().st_size for p in zoo.rglob("*") if p.is_file()) + 1024
    assert sum(sizes) > 4 * limit  # the weights table cannot fit
    out = tmp_path / "out"
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
              "from zoo.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, "publish", str(zoo), "--repo-id", REPO, "--local-dir",
                           str(out), "--with-weights"], env=env, capture_output=True, text=True, timeout=600)
    [error] = _error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{zoo}/.publish_staging." in error and "/data/weights/weights-00000.parquet: " in error, error
    assert "File too large" in error and error.endswith(f"--local-dir {out} is left as it was")
    assert not out.exists() and not list(zoo.glob(".publish_staging.*"))


@pytest.mark.parametrize("flag, value, needle", [
    ("--max-retries", "-1", "-1: must be at least 0"),
    ("--max-retries", "two", "'two': not a whole number (must be at least 0)"),
    ("--commit-files", "0", "0: must be between 1 and 1000"),
    ("--commit-files", "1001", "1001: must be between 1 and 1000"),
    ("--max-repo-files", "2", "2: must be between 3 and 99999"),
    ("--max-repo-files", "100000", "100000: must be between 3 and 99999"),
    ("--max-folder-entries", "-5", "-5: must be between 3 and 9999"),
    ("--max-folder-entries", "10000", "10000: must be between 3 and 9999"),
    ("--request-budget", "0/300", "'0/300': needs at least 1 request per positive"),
    ("--request-budget", "900/-1", "'900/-1': needs at least 1 request per positive"),
    ("--request-budget", "900", "'900': expected N/SECONDS"),
])
def test_numeric_publish_options_are_refused_when_parsed(zoo, tmp_path, capsys, flag, value, needle):
    out = tmp_path / "out"
    for where in ([], ["--local-dir", str(out)]):
        with pytest.raises(SystemExit) as exited:
            main(["publish", str(zoo), "--repo-id", REPO, *where, f"{flag}={value}"])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and f"zoo publish: error: argument {flag}: {needle}" in err, err
        assert "Traceback" not in err and "unreachable" not in err
    assert not out.exists()


def test_numeric_publish_options_are_refused_by_the_library(zoo, tmp_path):
    from zoo.publish import HubTarget, publish

    for kwargs, needle in (({"max_retries": -1}, "--max-retries -1: must be a whole number of at least 0"),
                           ({"commit_files": 0}, "--commit-files 0: must be between 1 and 1000"),
                           ({"request_budget": "5/0"}, "--request-budget '5/0': needs at least 1 request")):
        with pytest.raises(ValueError) as err:
            publish(zoo, REPO, local_dir=tmp_path / "out", **kwargs)
        assert needle in str(err.value)
    with pytest.raises(ValueError, match="--max-retries -1"):
        HubTarget(max_retries=-1)
    assert not (tmp_path / "out").exists()


def test_verify_says_what_a_folder_lacks_and_labels_its_retries(zoo, tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, "verify", str(zoo))  # a zoo, not a publish of it
    [error] = _error_lines(err, "verify")
    assert code == 2 and err.strip() == error
    assert f"{zoo}: no manifest found (no {zoo}/dataset/manifest.json or {zoo}/manifest.json): not a folder " \
           "written by zoo publish --local-dir" in error
    assert "namespace" not in error

    fake = tmp_path / "pub"
    (fake / "models").mkdir(parents=True)
    (fake / "dataset").mkdir()
    (fake / "dataset/manifest.json").write_text("{}")
    code, _, err = run(capsys, "verify", str(fake / "models"))
    assert code == 2 and "no manifest found" in err and f"; {fake} is one: verify that folder" in err
    (tmp_path / "fresh/.publish_partial.host.1.x").mkdir(parents=True)
    code, _, err = run(capsys, "verify", str(tmp_path / "fresh"))
    assert code == 2 and "no manifest found" in err and "a publish into it is running or was killed" in err
    code, _, err = run(capsys, "verify", str(fake / "models" / "missing" / "deep"))
    assert code == 2 and "no such folder, and not a dataset repo id (expected <namespace>/<name>" in err
    code, _, err = run(capsys, "verify", str(fake / "dataset/manifest.json"))  # the manifest names its publish
    assert code == 2 and "not a transformer-zoo manifest" in err

    # no Hub to reach: the retry lines name the command that retries
    from huggingface_hub import constants

    from zoo.publish import push

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(push.time, "sleep", lambda seconds: None)
    code, _, err = run(capsys, "verify", "org/offline-zoo")
    retries = [line for line in err.splitlines() if "retrying in" in line]
    assert code == 2 and len(retries) == 3 and all(line.startswith("zoo verify: read dataset repo org/offline-zoo")
                                                   for line in retries), err
    assert "zoo publish" not in err
    [error] = _error_lines(err, "verify")
    assert "dataset repo org/offline-zoo@main: cannot read manifest.json" in error
    assert "there is no local folder org/offline-zoo" in error


def test_staging_of_another_host_or_a_live_publish_is_refused(zoo, tmp_path, capsys):
    import subprocess
    import sys

    from zoo.publish.scratch import host_name

    out, host = tmp_path / "out", host_name()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    leftovers = [zoo / ".publish_staging.other-host.4242.abcd", zoo / f".publish_staging.{host}.{live.pid}.abcd"]
    try:
        for folder, needle in ((leftovers[0], "a zoo publish by process 4242 on host other-host may still be "
                                              f"running (this is host {host}, which cannot check)"),
                               (leftovers[1], f"the zoo publish of process {live.pid} on this host ({host}) is "
                                              "still running")):
            folder.mkdir()
            code, _, err = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out))
            shutil.rmtree(folder)
            [error] = _error_lines(err)
            assert code == 2 and error.startswith(f"zoo publish: error: {folder}: {needle}"), error
            assert "remove this folder and run the same command again" in error
            assert not out.exists()
    finally:
        live.kill()
        live.wait()
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)

    # a --local-dir being written by another host's publish
    out.mkdir()
    partial = out / ".publish_partial.other-host.4242.abcd"
    partial.mkdir()
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out))
    assert code == 2 and f"{partial}: a zoo publish by process 4242 on host other-host" in _error_lines(err)[0]
    assert [p.name for p in out.iterdir()] == [partial.name]
    shutil.rmtree(partial)

    # the leftovers of dead publishes of this host (killed: their pid is gone) are removed, and the publish goes on
    dead = [zoo / f".publish_staging.{host}.{live.pid}.abcd", out / f".publish_partial.{host}.{live.pid}.abcd"]
    try:
        for folder in dead:
            (folder / "models").mkdir(parents=True)
        code, _, err = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out))
    finally:
        shutil.rmtree(dead[0], ignore_errors=True)
    assert code == 0, err[-2000:]
    assert not dead[1].exists() and sorted(p.name for p in out.iterdir()) == ["dataset", "models"]
    assert not list(zoo.glob(".publish_staging.*"))


def test_local_publish_reads_back_with_datasets_and_transformers(zoo, tmp_path, capsys):
    """The way docs/publishing.md reads a `--local-dir` publish: tables with `load_dataset(<dir>/dataset, name)`,
    checkpoints with `from_pretrained(<dir>/<local_folder>, subfolder=...)` or from their branch folders."""
    import torch
    from datasets import load_dataset
    from safetensors.torch import load_file
    from transformers import AutoModel

    out = tmp_path / "hub"
    code, _, err = run(capsys, "publish", str(zoo), "--repo-id", REPO, "--local-dir", str(out), "--branches",
                       "--max-repo-files", "20")
    assert code == 0, err[-2000:]
    members = load_dataset(str(out / "dataset"), "members", split="train")
    ckpts = load_dataset(str(out / "dataset"), "checkpoints", split="train")
    metrics = load_dataset(str(out / "dataset"), "metrics", split="train")
    assert (members.num_rows, ckpts.num_rows, metrics.num_rows) == (6, 18, 6 * (EPOCHS + 1))
    assert sorted(set(ckpts["local_folder"])) == ["models-00", "models-01", "models-02"]  # a sharded zoo
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "models-00", "models-00.refs", "models-01",
                                                     "models-01.refs", "models-02", "models-02.refs"]

    def same_weights(model, folder: Path) -> int:
        local = load_file(folder / "model.safetensors")
        prefix = model.base_model_prefix + "."
        loaded = list(model.state_dict().values())
        base = [value for key, value in local.items() if key.startswith(prefix)]
        assert base and all(any(t.shape == v.shape and torch.equal(t, v) for t in loaded) for v in base)
        return len(base)

    compared = 0
    for row in ckpts:
        source = zoo / row["member_path"] / row["checkpoint"]
        by_subfolder = AutoModel.from_pretrained(out / row["local_folder"], subfolder=row["subfolder"])
        by_branch = AutoModel.from_pretrained(out / f"{row['local_folder']}.refs" / row["revision"])
        compared += same_weights(by_subfolder, source) + same_weights(by_branch, source)
    assert compared > 2 * 18 * 5
    for row in members:
        model = AutoModel.from_pretrained(out / row["local_folder"], subfolder=row["last_checkpoint"])
        same_weights(model, zoo / row["member_path"] / layout.checkpoint_name(row["last_epoch"]))
