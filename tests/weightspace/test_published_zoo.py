"""zoo.weightspace from a published zoo: `zoo publish --with-weights` to the local stand-in of the Hub
(tests/helpers/hub_server.py), then `WeightDataset("org/...")` in the three formats equals `WeightDataset(<zoo>)`
item for item, bit for bit; `split=` follows the published `split` column, which is the zoo's splits.json (or the
default assignment, computed without writing into the zoo); `load_dataset(repo, "weights", split="test")` holds
exactly the test members; the card states the split and shows the loading snippets; `zoo verify` passes.

The zoo is `helpers.zoo_factory.make_synthetic_zoo` (stock ViT and GPT-2, 6 members, 3 checkpoints each).
"""

from __future__ import annotations

import io
import pickle
import shutil

import pytest
import torch
from helpers.publishing import card_metadata, run
from helpers.zoo_factory import make_synthetic_zoo
from safetensors import safe_open
from torch.utils.data import DataLoader

from zoo import layout
from zoo.weightspace import (
    SPLITS,
    SPLITS_FILE,
    LocalZoo,
    WeightDataset,
    WeightSpaceError,
    as_source,
    assign_splits,
    collate_flat,
    read_splits,
)
from zoo.weightspace.hub import HubZoo

pytestmark = pytest.mark.slow  # a module fixture writes and publishes a zoo of real models (about 10 s)

REPO = "org/weightspace-zoo"
MODELS = f"{REPO}-models"
SEED, FRACTIONS = 2, (0.5, 0.25, 0.25)  # every split holds a vision member (the single-layout formats use vision)


@pytest.fixture(autouse=True)
def every_route_known(no_unknown_routes):
    """Every request must hit a route the test Hub knows (tests/conftest.py)."""


@pytest.fixture(scope="module")
def plain_zoo(tmp_path_factory):
    """The synthetic zoo, without splits.json."""
    root = tmp_path_factory.mktemp("published") / "zoo"
    make_synthetic_zoo(root, junk=False)
    return root


@pytest.fixture(scope="module")
def zoo(plain_zoo, tmp_path_factory):
    """The synthetic zoo with its splits fixed in splits.json, published with --with-weights."""
    root = shutil.copytree(plain_zoo, tmp_path_factory.mktemp("with-splits") / "zoo")
    assign_splits(root, FRACTIONS, seed=SEED)
    return root


@pytest.fixture(scope="module")
def published(zoo, hub_server):
    from zoo.cli import main

    assert main(["publish", str(zoo), "--repo-id", REPO, "--with-weights"]) == 0
    return zoo


def bits(tensor):
    """A tensor's bytes, to compare bit for bit."""
    return tensor.contiguous().view(torch.uint8) if tensor.dtype != torch.bool else tensor


def same_items(one, other):
    assert len(one) == len(other)
    for first, second in zip(one, other):
        assert (first["member"], first["properties"]) == (second["member"], second["properties"])
        assert set(first) == set(second)
        for key in ("weights", "mask", "positions"):
            if key not in first:
                continue
            a, b = first[key], second[key]
            if isinstance(a, list):  # layers: a list of tensors per layer
                assert [[bits(t).tolist() for t in layer] for layer in a] == [[bits(t).tolist() for t in layer]
                                                                           for layer in b]
            else:
                assert torch.equal(bits(a), bits(b))


def tensors(checkpoint):
    with safe_open(f"{checkpoint}/{layout.WEIGHTS}", framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def test_three_formats_from_the_hub_equal_the_local_zoo(published, hub_server):
    head = hub_server.head(MODELS)
    for fmt, selection in (("flat", {"modality": "vision"}), ("layers", {"modality": "vision"}), ("tokens", {})):
        local = WeightDataset(published, format=fmt, checkpoints="all", **selection)
        hub = WeightDataset(REPO, format=fmt, checkpoints="all", **selection)
        assert isinstance(hub.source, HubZoo) and isinstance(local.source, LocalZoo)
        assert hub.property_keys == local.property_keys
        same_items(hub, local)
        item = hub[0]
        assert item["checkpoint"] == f"{MODELS}@{head}:{item['member']}/{layout.checkpoint_name(0)}"
        if fmt != "tokens":
            assert hub.layout == local.layout and hub.layer_names == local.layer_names
            saved = tensors(published / item["member"] / layout.checkpoint_name(0))
            restored = hub.to_state_dict(item["weights"])
            assert set(restored) == set(saved)
            assert all(restored[name].dtype == saved[name].dtype and torch.equal(bits(restored[name]),
                                                                                 bits(saved[name]))
                       for name in saved)


def test_split_follows_the_published_column_and_matches_the_local_splits(published):
    recorded = read_splits(published)
    assert (recorded.seed, recorded.fractions) == (SEED, FRACTIONS)
    parts = {}
    for name in SPLITS:
        hub = WeightDataset(REPO, format="tokens", split=name, checkpoints="all")
        local = WeightDataset(published, format="tokens", split=name, checkpoints="all")
        parts[name] = {item.relpath for item in hub.entries}
        assert parts[name] == {item.relpath for item in local.entries}
        assert parts[name] == {path for path, split in recorded.members.items() if split == name}
        assert len(hub) == 3 * len(parts[name])  # every checkpoint of a member is in its split
    assert set().union(*parts.values()) == set(recorded.members) and sum(map(len, parts.values())) == 6
    assert HubZoo(REPO).splits(assign=False).settings() == recorded.settings()


def test_weights_config_has_named_splits_of_exactly_their_members(published, hub_server):
    from datasets import load_dataset

    recorded = read_splits(published).members
    for name in SPLITS:
        rows = load_dataset(REPO, "weights", split=name)
        members = {path for path, split in recorded.items() if split == name}
        assert {row["member_path"] for row in rows} == members and rows.num_rows == 3 * len(members)
    members = load_dataset(REPO, "members", split="train")
    assert dict(zip(members["member_path"], members["split"])) == recorded
    card_text = hub_server.files(REPO, "dataset")["README.md"].data.decode()
    weights = next(c for c in card_metadata(card_text)["configs"] if c["config_name"] == "weights")
    assert [entry["split"] for entry in weights["data_files"]] == list(SPLITS)
    for needle in ("50/25/25 train/validation/test, seed 2, by member (the zoo's `splits.json`)",
                   "from zoo.weightspace import WeightDataset", f'WeightDataset("{REPO}", format="tokens"',
                   f'load_dataset("{REPO}", "weights", split="test")', 'members["split"]'):
        assert needle in " ".join(card_text.split())  # the card's lines wrap anywhere


def test_verify_passes(published, capsys):
    code, out, _ = run(capsys, "verify", REPO)
    assert code == 0 and "0 problem(s): OK" in out


def test_hub_dataset_pickles_into_workers_and_normalises(published):
    dataset = WeightDataset(REPO, format="flat", modality="vision", checkpoints="all")
    again = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(again[1]["weights"], dataset[1]["weights"])
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_flat))
    assert torch.equal(torch.cat([batch["weights"] for batch in batches]),
                       torch.stack([item["weights"] for item in dataset]))
    normalised = WeightDataset(REPO, format="flat", modality="vision", checkpoints="all", normalize=True)
    local = WeightDataset(published, format="flat", modality="vision", checkpoints="all", normalize=True)
    assert normalised.stats == local.stats
    item = normalised[0]
    saved = tensors(published / item["member"] / layout.checkpoint_name(0))
    restored = normalised.to_state_dict(item["weights"])
    assert all(torch.allclose(restored[name], saved[name], atol=1e-6) for name in saved)


def test_default_assignment_without_splits_file_and_a_table_without_split_column(plain_zoo, hub_server, capsys):
    import pyarrow.parquet as pq
    from datasets import load_dataset
    from huggingface_hub import HfApi

    repo = "org/weightspace-plain"
    code, _, _ = run(capsys, "publish", str(plain_zoo), "--repo-id", repo, "--with-weights")
    assert code == 0 and not (plain_zoo / SPLITS_FILE).exists()  # publishing writes nothing into the zoo
    published = dict(zip(*(load_dataset(repo, "members", split="train")[key] for key in ("member_path", "split"))))
    local = shutil.copytree(plain_zoo, plain_zoo.parent / "assigned")
    assert published == assign_splits(local).members  # the default assignment, as zoo.weightspace makes it
    test = load_dataset(repo, "weights", split="test")
    assert {row["member_path"] for row in test} == {path for path, split in published.items() if split == "test"}

    # a zoo published without a split column: the default assignment, computed in memory
    table = HubZoo(repo)._table("members").drop_columns(["split"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    HfApi().upload_file(path_or_fileobj=buffer.getvalue(), path_in_repo="data/members.parquet", repo_id=repo,
                        repo_type="dataset")
    older = HubZoo(repo)
    assert older.splits(assign=False) is None and older.splits(assign=True).members == published
    assert {entry.relpath for entry in WeightDataset(repo, format="tokens", split="test").entries} == {
        path for path, split in published.items() if split == "test"}


def test_as_source_picks_local_folders_and_repo_ids(published, tmp_path, hub_server):
    assert isinstance(as_source(published), LocalZoo) and isinstance(as_source(REPO), HubZoo)
    commit = hub_server.head(REPO, "dataset")
    pinned = HubZoo(REPO, revision=commit)
    assert pinned.commit == commit and len(pinned.members()) == 6
    with pytest.raises(WeightSpaceError, match="org/no-such-zoo") as err:
        WeightDataset("org/no-such-zoo")
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(WeightSpaceError, match="not a zoo folder"):
        as_source(tmp_path / "missing" / "deeper")
    with pytest.raises(WeightSpaceError, match="no revision"):
        as_source(published, revision="main")


def test_benchmark_trains_on_train_and_validation_and_scores_on_test(published, plain_zoo, capsys):
    from zoo.studies import benchmark

    held_out = benchmark.benchmark(published, "predict-accuracy")
    assert held_out["members"] == 4 and held_out["folds"] == 1
    assert held_out["split"] == "splits.json: train+validation members 3, test members 1"
    assert benchmark.benchmark(plain_zoo, "predict-accuracy")["split"] == "GroupKFold by member"
    code, out, _ = run(capsys, "benchmark", str(published), "--task", "predict-accuracy")
    assert code == 0 and "split        splits.json: train+validation members 3, test members 1" in out


def test_publish_gives_every_member_the_split_zoo_weightspace_gives_it(plain_zoo, tmp_path):
    """zoo.publish (which may not import zoo.weightspace) assigns splits as zoo.weightspace does: recorded ones, by
    parent, and a member that splits.json does not record yet."""
    from zoo.publish import zoo_splits

    root = shutil.copytree(plain_zoo, tmp_path / "default")
    members = layout.scan_members(root)
    default = {member.relpath: zoo_splits(root).of(member) for member in members}  # no splits.json: the defaults
    assert default == assign_splits(root).members
    root = shutil.copytree(plain_zoo, tmp_path / "by-parent")
    recorded = assign_splits(root, (0.4, 0.3, 0.3), seed=5, split_by="parent")
    late = members[0].relpath
    data = layout.read_json(root / SPLITS_FILE)
    del data["members"][late]  # a member added after the splits were fixed
    layout.atomic_write_json(root / SPLITS_FILE, data)
    published = zoo_splits(root)
    weightspace = read_splits(root)
    assert published.from_file and published.settings() == {"seed": 5, "fractions": [0.4, 0.3, 0.3],
                                                             "split_by": "parent"}
    for member in members:
        parent = (member.parent or {}).get("path")
        assert published.of(member) == weightspace.split_of(member.relpath, parent) == recorded.members[member.relpath]


def _header_requests(hub_server, since: int) -> list[str]:
    """The paths of the requests for a checkpoint's safetensors file (or its header) since request `since`."""
    return [path for _, path in hub_server.state.requests[since:] if path.endswith(layout.WEIGHTS)]


def test_tensor_tables_come_from_the_published_table_without_a_request_per_checkpoint(published, hub_server):
    since = len(hub_server.state.requests)
    hub = WeightDataset(REPO, format="tokens", checkpoints="all")
    assert _header_requests(hub_server, since) == []  # built from the tables alone
    local = WeightDataset(published, format="tokens", checkpoints="all")
    assert len(hub) == len(local) == 18
    for entry in local.entries:
        assert hub.source.table(entry.relpath, entry.epoch) == local.source.table(entry.relpath, entry.epoch)
    assert _header_requests(hub_server, since) == []


def test_published_weights_vectors_are_the_flat_items(published):
    """The `weights` table's vector of a checkpoint is `WeightDataset(format="flat")`'s item, in the same order."""
    from datasets import concatenate_datasets, load_dataset

    rows = concatenate_datasets(list(load_dataset(REPO, "weights").values()))
    vectors = {(row["member_path"], row["epoch"]): row["weights"] for row in rows}
    selections = ({"modality": "vision"}, {"modality": "language", "stage": "pretraining"},
                  {"modality": "language", "stage": "finetuning"})  # one tensor layout each
    for selection in selections:
        for item in WeightDataset(published, format="flat", checkpoints="all", **selection):
            vector = torch.tensor(vectors[(item["member"], item["properties"]["epoch"])], dtype=torch.float32)
            assert torch.equal(vector, item["weights"]), item["member"]


def test_a_zoo_published_without_tensor_layouts_reads_them_from_the_headers(plain_zoo, hub_server, capsys):
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi

    repo = "org/weightspace-no-layouts"
    assert run(capsys, "publish", str(plain_zoo), "--repo-id", repo)[0] == 0
    table = HubZoo(repo)._table("checkpoints").drop_columns(["tensor_layout"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    HfApi().upload_file(path_or_fileobj=buffer.getvalue(), path_in_repo="data/checkpoints.parquet", repo_id=repo,
                        repo_type="dataset")
    since = len(hub_server.state.requests)
    older = WeightDataset(repo, format="tokens", checkpoints="all")
    assert _header_requests(hub_server, since)  # the checkpoints' own headers, read over HTTP
    local = WeightDataset(plain_zoo, format="tokens", checkpoints="all")
    assert [entry.relpath for entry in older.entries] == [entry.relpath for entry in local.entries]
    for entry in local.entries:
        assert older.source.table(entry.relpath, entry.epoch) == local.source.table(entry.relpath, entry.epoch)
    assert all(torch.equal(a["weights"], b["weights"]) for a, b in zip(older, local))


def test_splits_by_parent_survive_publishing(plain_zoo, hub_server, tmp_path, capsys):
    """A zoo split by parent, published: every child is in its parent's split, on the Hub as in the zoo."""
    root = shutil.copytree(plain_zoo, tmp_path / "by-parent")
    recorded = assign_splits(root, (0.4, 0.3, 0.3), seed=5, split_by="parent").members
    repo = "org/weightspace-by-parent"
    assert run(capsys, "publish", str(root), "--repo-id", repo)[0] == 0
    hub = HubZoo(repo)
    assert hub.splits(assign=False).settings() == (5, (0.4, 0.3, 0.3), "parent")
    published = {entry.relpath: entry.properties["split"] for entry in WeightDataset(repo, format="tokens").entries}
    assert published == recorded
    children = [member for member in hub.members() if member.parent_path]
    assert children and all(published[child.relpath] == published[child.parent_path] for child in children)
