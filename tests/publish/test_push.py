"""`zoo publish` to a local stand-in of the Hub (tests/helpers/hub_server.py), read back with the real
huggingface_hub, datasets and transformers clients: the two repos, the tables, every checkpoint bit for bit, `zoo
verify` on tampered, missing and extra files, no token in any published file."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import pytest
import yaml
from helpers.publishing import REPO, card_metadata, publishable_files, run
from helpers.zoo_factory import EPOCHS

from zoo import layout
from zoo.cli import main

MODELS = f"{REPO}-models"
TABLES = ("members", "checkpoints", "metrics", "tensor_layouts", "weights", "weights_index")


@pytest.fixture(scope="module")
def published(zoo, hub_server) -> Path:
    assert main(["publish", str(zoo), "--repo-id", REPO, "--with-weights"]) == 0
    return zoo


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

    # every checkpoint's tensors, in the documented order, from the table of its layout
    layouts = load_dataset(REPO, "tensor_layouts", split="train").to_pandas()
    safetensors_dtype = {"float32": "F32", "float16": "F16", "int64": "I64"}
    for row in ckpts:
        tensors = load_file(by_path[row["member_path"]].checkpoint_dir(row["epoch"]) / "model.safetensors")
        rows = layouts[layouts.layout == row["tensor_layout"]]
        assert list(rows.name) == sorted(tensors, key=layout.tensor_order_key)
        for entry in rows.itertuples():
            array = tensors[entry.name]
            assert list(entry.shape) == list(array.shape) and entry.numel == array.size
            assert entry.dtype == safetensors_dtype[str(array.dtype)]
        assert list(rows.offset) == [0, *itertools.accumulate(rows.numel)][:-1]
    assert layouts.layout.nunique() == len(set(ckpts["tensor_layout"])) < ckpts.num_rows  # each layout once

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
    from datasets import concatenate_datasets, load_dataset
    from safetensors.numpy import load_file

    index = load_dataset(REPO, "weights_index", split="train").to_pandas()
    by_split = load_dataset(REPO, "weights")  # named splits: train, validation, test (those with members)
    members = load_dataset(REPO, "members", split="train").to_pandas()
    for split, rows in by_split.items():  # each split holds its members' checkpoints only
        assert set(rows["member_path"]) <= set(members[members.split == split].member_path), split
    weights = concatenate_datasets(list(by_split.values()))
    assert weights.num_rows == 18 and weights.features["weights"].feature.dtype == "float32"
    for row in weights:
        tensors = load_file(published / row["member_path"] / layout.checkpoint_name(row["epoch"]) / "model.safetensors")
        vector = np.asarray(row["weights"], dtype=np.float32)
        entries = index[index.member_path == row["member_path"]]
        assert sorted(entries.name) == sorted(tensors) and len(vector) == sum(t.size for t in tensors.values())
        for entry in entries.itertuples():
            piece = vector[entry.offset:entry.offset + entry.numel].reshape(entry.shape)
            assert np.array_equal(piece, tensors[entry.name].astype(np.float32)), entry.name
    first = next(iter(by_split))
    streamed = next(iter(load_dataset(REPO, "weights", split=first, streaming=True)))
    assert streamed["weights"] == by_split[first][0]["weights"]


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


def test_typed_columns():
    from zoo.publish import typed_column

    assert typed_column([1, None, 3]).type == "int64"
    assert typed_column([1, 2.5]).to_pylist() == [1.0, 2.5]
    assert typed_column([True, None]).type == "bool"
    assert typed_column([1, "a", None]).to_pylist() == ["1", "a", None]
    assert typed_column([[1, 2], None]).to_pylist() == ["[1, 2]", None]
    assert typed_column([None, None]).null_count == 2
