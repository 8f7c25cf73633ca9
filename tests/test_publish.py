"""`zoo publish` / `zoo verify` against a local stand-in of the Hub (tests/hub_server.py), with the real
huggingface_hub, datasets and transformers clients."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from zoo_factory import EPOCHS, make_synthetic_zoo, write_member

from zoo import layout
from zoo.cli import main

REPO = "org/transformer-zoo"
MODELS = f"{REPO}-models"
TABLES = ("members", "checkpoints", "metrics", "weights", "weights_index")


def publishable_files(zoo: Path) -> dict[str, str]:
    """repo path -> sha256 of every file the model repo must hold (README aside), from the zoo itself."""
    out = {}
    for member in layout.scan_members(zoo):
        for epoch in member.checkpoints:
            folder = member.checkpoint_dir(epoch)
            for name in ("config.json", "model.safetensors", "preprocessor_config.json", "generation_config.json"):
                if (folder / name).is_file():
                    data = (folder / name).read_bytes()
                    out[f"{member.relpath}/{folder.name}/{name}"] = hashlib.sha256(data).hexdigest()
    return out


def card_metadata(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n")[1])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def no_unknown_routes(hub_server):
    """Every request of every client must hit a route the server knows (a client upgrade must fail loudly)."""
    before = len(hub_server.state.unknown_routes)
    yield
    assert hub_server.state.unknown_routes[before:] == []


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo") / "synthetic"
    make_synthetic_zoo(root, junk=True)
    return root


@pytest.fixture(scope="module")
def published(zoo, hub_server) -> Path:
    assert main(["publish", str(zoo), "--repo-id", REPO, "--with-weights"]) == 0
    return zoo


# ---------------------------------------------------------------- the push


def test_publish_pushes_model_repo_with_every_checkpoint(published, hub_server):
    files = hub_server.files(MODELS)
    expected = publishable_files(published)
    assert len(expected) == 6 * 3 * 2 + 4 * 3 + 3  # config+weights everywhere, ViT processors, GPT-2 LM generation
    assert {path: entry.sha256 for path, entry in files.items() if path in expected} == expected
    assert set(files) == set(expected) | {"README.md", ".gitattributes"}  # no junk, trainer state or hidden file
    assert all(entry.lfs for path, entry in files.items() if path.endswith(".safetensors"))
    card = card_metadata(files["README.md"].data.decode())
    assert card["datasets"] == [REPO] and card["library_name"] == "transformers" and card["license"] == "apache-2.0"


def test_publish_pushes_dataset_repo(published, hub_server):
    files = hub_server.files(REPO, "dataset")
    assert {"README.md", "manifest.json", "spec.yaml", "data/members.parquet", "data/checkpoints.parquet",
            "data/metrics.parquet", "data/weights_index.parquet", "data/weights/weights-00000.parquet"} <= set(files)
    assert {"plots/vision_pretraining.png", "plots/vision_finetuning.png", "plots/language_pretraining.png",
            "plots/language_finetuning.png"} <= set(files)
    assert all(files[p].data.startswith(b"\x89PNG") for p in files if p.endswith(".png"))
    card_text = files["README.md"].data.decode()
    card = card_metadata(card_text)
    assert [c["config_name"] for c in card["configs"]] == list(TABLES)
    assert all(c["data_files"][0]["split"] == "train" for c in card["configs"])
    assert card["license"] == "apache-2.0"
    for needle in (f'load_dataset("{REPO}", "members", split="train")', MODELS, "@misc{",
                   "plots/vision_pretraining.png", "| vision | finetuning | complete | 2 |",
                   "`learning_rate` | 3e-05, 0.0001, 0.0005, 0.001, 0.01"):
        assert needle in card_text
    assert yaml.safe_load(files["spec.yaml"].data) == layout.read_zoo_file(published)["spec"]
    assert any(text.startswith("---") and "configs:" in text for text in hub_server.state.validated_yaml)

    manifest = json.loads(files["manifest.json"].data)
    [repo] = manifest["model_repos"]
    assert repo["repo"] == MODELS and repo["revision"] == hub_server.head(MODELS)
    listed = {e["path"]: e for e in repo["files"]}
    model_files = hub_server.files(MODELS)
    assert set(listed) == set(model_files) - {".gitattributes"}
    assert all(listed[p]["sha256"] == model_files[p].sha256 and listed[p]["size"] == model_files[p].size
               for p in listed)
    assert len(manifest["checkpoints"]) == 18 and all(m["planned"] == [0, 1, 2] for m in manifest["members"])
    listed = {e["path"]: e["sha256"] for e in manifest["dataset_files"]}
    assert listed == {p: e.sha256 for p, e in files.items() if p not in ("manifest.json", ".gitattributes")}


# ---------------------------------------------------------------- reading it back with datasets / transformers


def test_tables_load_with_datasets(published, hub_server):
    from datasets import load_dataset

    members = layout.scan_members(published)
    by_path = {m.relpath: m for m in members}
    table = load_dataset(REPO, "members", split="train")
    assert table.num_rows == len(members) == 6
    assert {"member", "member_path", "modality", "stage", "kind", "state", "parent_member", "parent_checkpoint",
            "seed", "learning_rate", "optim", "head", "num_params", "test_acc", "test_loss", "test_perplexity",
            "metric", "metric_value"} <= set(table.column_names)
    assert table.features["seed"].dtype == "int64" and table.features["learning_rate"].dtype == "float64"
    for row in table:
        member = by_path[row["member_path"]]
        assert row["member"] == member.name and row["state"] == "complete"
        assert row["modality"] == member.modality and row["stage"] == member.stage
        assert row["head"] == member.factors.get("head")  # None where a member has no such factor
        assert row["seed"] == member.factors["seed"] and row["learning_rate"] == member.factors["learning_rate"]
        assert row["parent_member"] == (member.parent or {}).get("member")
        final = member.results[-1]
        assert row["test_acc"] == final["test_acc"] and row["test_perplexity"] == final.get("test_perplexity")
        from safetensors.numpy import load_file

        tensors = load_file(member.checkpoint_dir("last") / "model.safetensors")
        assert row["num_params"] == sum(t.size for t in tensors.values())

    ckpts = load_dataset(REPO, "checkpoints", split="train")
    assert ckpts.num_rows == len(members) * 3
    head = hub_server.head(MODELS)
    for row in ckpts:
        member = by_path[row["member_path"]]
        weights = member.checkpoint_dir(row["epoch"]) / "model.safetensors"
        assert row["model_repo"] == MODELS and row["revision"] == head
        assert row["subfolder"] == f"{member.relpath}/{layout.checkpoint_name(row['epoch'])}"
        assert row["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert row["weights_size"] == weights.stat().st_size
        assert row["test_loss"] == member.results[row["epoch"]]["test_loss"]

    metrics = load_dataset(REPO, "metrics", split="train")
    assert metrics.num_rows == sum(len(m.results) for m in members)
    assert {(r["member_path"], r["epoch"]) for r in metrics} == {(m.relpath, e) for m in members
                                                                  for e in range(EPOCHS + 1)}

    for name, rows in (("members", table), ("checkpoints", ckpts), ("metrics", metrics)):
        streamed = list(load_dataset(REPO, name, split="train", streaming=True))
        assert streamed == list(rows)


def test_every_checkpoint_loads_with_automodel_bit_for_bit(published):
    import torch
    from datasets import load_dataset
    from safetensors.torch import load_file
    from transformers import AutoModel

    ckpts = load_dataset(REPO, "checkpoints", split="train")
    compared = 0
    for row in ckpts:
        model = AutoModel.from_pretrained(row["model_repo"], subfolder=row["subfolder"], revision=row["revision"])
        local = load_file(published / row["subfolder"] / "model.safetensors")
        prefix = model.base_model_prefix + "."
        base = {key: value for key, value in local.items() if key.startswith(prefix)}
        # transformers renames checkpoint keys on load, so pair tensors by exact value, one to one
        unmatched = dict(model.state_dict())
        for key, value in base.items():
            match = next((name for name, loaded in unmatched.items()
                          if loaded.shape == value.shape and torch.equal(loaded, value)), None)
            assert match is not None, f"{row['subfolder']}: {key} not loaded bit for bit"
            del unmatched[match]
            compared += 1
        assert all(name.startswith("pooler.") for name in unmatched), (row["subfolder"], sorted(unmatched))
    assert compared > 18 * 10


def test_weights_table_matches_safetensors(published):
    import numpy as np
    from datasets import load_dataset
    from safetensors.numpy import load_file

    index = load_dataset(REPO, "weights_index", split="train").to_pandas()
    weights = load_dataset(REPO, "weights", split="train")
    assert weights.num_rows == 18 and weights.features["weights"].feature.dtype == "float32"
    for row in weights:
        tensors = load_file(published / row["member_path"] / layout.checkpoint_name(row["epoch"]) / "model.safetensors")
        vector = np.asarray(row["weights"], dtype=np.float32)
        entries = index[index.member_path == row["member_path"]]
        assert sorted(entries.name) == sorted(tensors) and len(vector) == sum(t.size for t in tensors.values())
        for entry in entries.itertuples():
            piece = vector[entry.offset:entry.offset + entry.numel].reshape(entry.shape)
            assert np.array_equal(piece, tensors[entry.name].astype(np.float32)), entry.name
    streamed = next(iter(load_dataset(REPO, "weights", split="train", streaming=True)))
    assert streamed["weights"] == weights[0]["weights"]


# ---------------------------------------------------------------- verify


def test_verify_passes_then_names_tampered_and_missing_files(published, hub_server, capsys):
    code, out, _ = run(capsys, "verify", REPO)
    assert code == 0, out
    n_files = len(hub_server.files(MODELS)) - 1 + len(hub_server.files(REPO, "dataset")) - 2
    assert f"{n_files} files in the manifest, 18 checkpoints, 0 branches, 0 problem(s)" in out

    weights = "vision/pretraining/vit_sup_seed_0_optim_adamw/checkpoint_000001/model.safetensors"
    table = "data/checkpoints.parquet"
    config = "language/pretraining/lm_seed_0/checkpoint_000002/config.json"
    twin = "vision/pretraining/vit_con_seed_1_optim_sgd/checkpoint_000002/preprocessor_config.json"  # 11 identical
    originals = {weights: hub_server.read(MODELS, weights), table: hub_server.read(REPO, table, "dataset"),
                 twin: hub_server.read(MODELS, twin)}
    assert sum(e.data == originals[twin] for e in hub_server.files(MODELS).values()) == 12
    kept = hub_server.files(MODELS)[config]
    try:
        flipped = bytearray(originals[weights])
        flipped[-1] ^= 0xFF  # same size, different bytes
        hub_server.tamper(MODELS, weights, bytes(flipped))
        hub_server.tamper(REPO, table, originals[table][:-1] + b"\0", "dataset")
        hub_server.forget(MODELS, config)
        hub_server.tamper(MODELS, twin, originals[twin].replace(b"8", b"9", 1))
        code, out, _ = run(capsys, "verify", REPO)
    finally:
        hub_server.tamper(MODELS, twin, originals[twin])
        hub_server.tamper(MODELS, weights, originals[weights])
        hub_server.tamper(REPO, table, originals[table], "dataset")
        with hub_server.state.lock:
            repo = hub_server.state.repo("model", MODELS)
            repo.commits[repo.branches["main"]].files[config] = kept
    assert code == 1
    problems = [line for line in out.splitlines() if "problem(s)" not in line]
    assert len(problems) == 4, out
    assert any(f"model repo {MODELS}: {weights}: altered: sha256" in line for line in problems)
    assert any(f"dataset repo {REPO}: {table}: altered: sha256" in line for line in problems)
    assert any(f"model repo {MODELS}: {config}: missing" in line for line in problems)
    assert any(f"model repo {MODELS}: {twin}: altered: sha256" in line for line in problems)
    assert "4 problem(s): FAILED" in out
    assert run(capsys, "verify", REPO)[0] == 0


def test_verify_flags_files_not_in_manifest_and_bad_targets(published, hub_server, capsys):
    from huggingface_hub import HfApi

    api = HfApi()
    api.upload_file(path_or_fileobj=b"stray", path_in_repo="data/stray.txt", repo_id=REPO, repo_type="dataset")
    try:
        code, out, _ = run(capsys, "verify", REPO)
    finally:
        api.delete_file("data/stray.txt", repo_id=REPO, repo_type="dataset")
    assert code == 1 and f"dataset repo {REPO}: data/stray.txt: extra: not in the manifest" in out
    assert "1 problem(s)" in out
    code, _, err = run(capsys, "verify", "org/does-not-exist")
    assert code == 2 and "org/does-not-exist" in err and "manifest.json" in err
    code, _, err = run(capsys, "verify", "not a repo id")
    assert code == 2 and "'not a repo id'" in err


# ---------------------------------------------------------------- republish, determinism, local dir


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


def test_no_token_in_any_published_file(published, hub_server, tmp_path, capsys):
    token = os.environ["HF_TOKEN"]
    assert token in hub_server.state.tokens_seen  # the token was used: the check below means something
    run(capsys, "publish", str(published), "--repo-id", REPO, "--with-weights", "--local-dir", str(tmp_path / "o"))
    token = token.encode()
    with hub_server.state.lock:
        stored = [entry.data for repo in hub_server.state.repos.values() for commit in repo.commits.values()
                  for entry in commit.files.values()]
    local = [p.read_bytes() for p in (tmp_path / "o").rglob("*") if p.is_file()]
    assert len(stored) > 50 and len(local) > 50
    assert not any(token in data for data in stored + local)


def test_typed_columns():
    from zoo.publish import typed_column

    assert typed_column([1, None, 3]).type == "int64"
    assert typed_column([1, 2.5]).to_pylist() == [1.0, 2.5]
    assert typed_column([True, None]).type == "bool"
    assert typed_column([1, "a", None]).to_pylist() == ["1", "a", None]
    assert typed_column([[1, 2], None]).to_pylist() == ["[1, 2]", None]
    assert typed_column([None, None]).null_count == 2


def test_hub_server_errors_ranges_and_paths_info(published, hub_server):
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()
    assert api.repo_exists(MODELS) and not api.repo_exists("org/nothing-here")
    assert api.file_exists(REPO, "manifest.json", repo_type="dataset")
    assert not api.file_exists(REPO, "nope.json", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/nothing-here")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "manifest.json", repo_type="dataset", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", repo_type="dataset")

    weights = "language/pretraining/lm_seed_0/checkpoint_000000/model.safetensors"
    info = {item.path: item for item in api.get_paths_info(MODELS, [weights, "language", "absent"])}
    assert set(info) == {weights, "language"}
    entry = hub_server.files(MODELS)[weights]
    assert info[weights].lfs.sha256 == entry.sha256 and info[weights].size == entry.size
    tree = list(api.list_repo_tree(MODELS, "language/pretraining", recursive=False))
    assert [item.path for item in tree] == ["language/pretraining/lm_seed_0"]

    url = f"{hub_server.url}/{MODELS}/resolve/main/{weights}"
    response = httpx2.get(url, headers={"Range": "bytes=8-15"})
    assert response.status_code == 206 and response.content == entry.data[8:16]
    assert response.headers["Content-Range"] == f"bytes 8-15/{entry.size}"
    head = httpx2.head(url)
    assert head.headers["X-Linked-Etag"] == f'"{entry.sha256}"' and head.headers["X-Repo-Commit"]
    created = httpx2.post(f"{hub_server.url}/api/repos/create", json={"name": "transformer-zoo", "organization": "org",
                                                                       "type": "dataset"},
                          headers={"Authorization": f"Bearer {os.environ['HF_TOKEN']}"})
    assert created.status_code == 409
    assert httpx2.post(f"{hub_server.url}/api/repos/create", json={"name": "x", "type": "model"}).status_code == 401


def test_weights_shards_and_local_dataset_folder_load(zoo, hub_server, tmp_path, monkeypatch):
    from datasets import load_dataset

    from zoo.publish import publish, tables

    monkeypatch.setattr(tables, "WEIGHTS_SHARD_BYTES", 1)  # one checkpoint per shard
    publish(zoo, REPO, local_dir=tmp_path, with_weights=True)
    shards = sorted((tmp_path / "dataset/data/weights").glob("*.parquet"))
    assert len(shards) == 18
    card = card_metadata((tmp_path / "dataset/README.md").read_text())
    paths = next(c for c in card["configs"] if c["config_name"] == "weights")["data_files"][0]["path"]
    assert paths == [f"data/weights/{p.name}" for p in shards]
    rows = load_dataset(str(tmp_path / "dataset"), "weights", split="train")
    ckpts = load_dataset(str(tmp_path / "dataset"), "checkpoints", split="train")
    assert [(r["member_path"], r["epoch"]) for r in rows] == [(r["member_path"], r["epoch"]) for r in ckpts]


# ---------------------------------------------------------------- scale: sharded repos and folders, branches, 429s

SCALE_MEMBERS, SCALE_REPO_FILES, SCALE_FOLDER, SCALE_COMMIT = 80, 240, 16, 50


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    from zoo_factory import write_tiny_zoo

    root = tmp_path_factory.mktemp("tiny") / "zoo"
    write_tiny_zoo(root, SCALE_MEMBERS)
    return root


def _folder_entries(paths) -> dict[str, int]:
    from zoo.publish.stage import folder_entry_counts

    return folder_entry_counts(list(paths))


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


# ---------------------------------------------------------------- kill -9, rate limits, request budget


def test_kill_9_mid_publish_then_rerun_uploads_nothing_twice(zoo, hub_server, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    import time

    repo, state = "org/killed", hub_server.state
    stale = zoo / ".publish_staging.999999999.left"  # left by a killed publish
    stale.mkdir()
    (stale / "x").write_text("x")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get(
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


# ---------------------------------------------------------------- unreadable members, verify at checkpoint level


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


# ---------------------------------------------------------------- a full disk, numeric options, verify's messages


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get(
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
