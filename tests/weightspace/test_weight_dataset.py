"""zoo.weightspace: a local zoo as a dataset of weights in the flat, layers and tokens formats; the round trip to
the checkpoint's tensors bit for bit; splits by member (disjoint, stable, by parent); collates with DataLoader
workers; normalisation statistics cached and undone; filters; one-line errors.

The zoo is `helpers.zoo_factory.write_tiny_zoo` (stock ViT and GPT-2 configs, random weights, no training): vision
members, their finetuned children and language members, 2 or 3 checkpoints each.
"""

import hashlib
import logging
import pickle
import shutil

import pytest
import torch
from helpers.zoo_factory import write_member, write_tiny_zoo
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from zoo import layout
from zoo.weightspace import (
    DEFAULT_FRACTIONS,
    SPLITS_FILE,
    WeightDataset,
    WeightSpaceError,
    assign_splits,
    collate_flat,
    collate_layers,
    collate_tokens,
    hashed_split,
    natural_key,
    read_splits,
    tensor_order_key,
)
from zoo.weightspace import normalization as normalization_module

MEMBERS = 24  # 11 vision, 11 language, 2 finetuned children


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("weightspace") / "zoo"
    write_tiny_zoo(root, MEMBERS)
    return root


@pytest.fixture
def zoo(tiny_zoo, tmp_path):
    """A copy of the tiny zoo of this test's own (datasets write splits.json and cached statistics into it)."""
    return shutil.copytree(tiny_zoo, tmp_path / "zoo")


def tensors(checkpoint):
    with safe_open(f"{checkpoint}/{layout.WEIGHTS}", framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def token_count(tensor, size):
    """Rows (one per output unit; one for a 1-D tensor) times the chunks of `size` values each row takes."""
    rows = tensor.shape[0] if tensor.dim() > 1 else 1
    return rows * -(-(tensor.numel() // rows) // size)


def members_of(dataset):
    return {entry.relpath for entry in dataset.entries}


# ---------------------------------------------------------------------------------------------------- the formats

def test_natural_order_compares_numbers_as_numbers():
    names = ["layers.10.weight", "layers.2.weight", "layers.2.bias", "layers.2.sub.weight", "head.weight"]
    assert sorted(names, key=tensor_order_key) == [
        "head.weight", "layers.2.bias", "layers.2.weight", "layers.2.sub.weight", "layers.10.weight"]
    assert natural_key("h.10.x") > natural_key("h.9.x")


def test_flat_items_follow_the_layout(zoo):
    dataset = WeightDataset(zoo, modality="vision")
    vision = [m for m in layout.scan_members(zoo) if m.modality == "vision"]
    assert len(dataset) == len(vision)  # the last checkpoint of each member
    rows = dataset.layout
    assert [row.name for row in rows] == sorted((row.name for row in rows), key=tensor_order_key)
    assert rows[0].offset == 0 and all(a.offset + a.length == b.offset for a, b in zip(rows, rows[1:]))
    item = dataset[3]
    assert item["weights"].dtype == torch.float32 and item["weights"].shape == (rows[-1].offset + rows[-1].length,)
    assert item["checkpoint"].endswith(layout.checkpoint_name(2)) and item["member"] == item["properties"]["member"]
    saved = tensors(item["checkpoint"])
    assert set(saved) == {row.name for row in rows}
    for name, shape, offset, length in rows:
        assert torch.equal(item["weights"][offset:offset + length].reshape(shape), saved[name])


def test_layers_group_tensors_by_module_in_flat_order(zoo):
    flat = WeightDataset(zoo, kind="vit-supervised")
    layers = WeightDataset(zoo, format="layers", kind="vit-supervised")
    item = layers[0]
    names = layers.layer_names
    assert [len(group) for group in item["weights"]] == [len(group) for group in names]
    assert all(len({name.rpartition(".")[0] for name in group}) == 1 for group in names)
    assert ["classifier.bias", "classifier.weight"] in names
    joined = torch.cat([tensor.reshape(-1) for group in item["weights"] for tensor in group])
    assert torch.equal(joined, flat[0]["weights"])


def test_tokens_cut_rows_into_chunks_with_mask_and_positions(zoo):
    dataset = WeightDataset(zoo, format="tokens", token_size=8)  # every modality: tokens take any layout
    assert dataset.table is None
    for index in (0, len(dataset) - 1):
        item = dataset[index]
        saved = tensors(item["checkpoint"])
        tokens, mask, positions = item["weights"], item["mask"], item["positions"]
        assert tokens.shape[1] == 8 and mask.shape == tokens.shape and positions.shape == (tokens.shape[0], 3)
        assert int(mask.sum()) == sum(t.numel() for t in saved.values())
        assert torch.equal(tokens[~mask], torch.zeros(int((~mask).sum())))
        assert tokens.shape[0] == sum(token_count(tensor, 8) for tensor in saved.values())
    first = WeightDataset(zoo, format="tokens", token_size=8, kind="vit-supervised")[0]
    # classifier.bias (10 values, one row: 2 tokens), then classifier.weight (10 rows of 8: one token each)
    assert first["positions"][:4].tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert first["mask"][1].tolist() == [True, True] + [False] * 6
    assert torch.equal(first["weights"][2], tensors(first["checkpoint"])["classifier.weight"][0])


# ------------------------------------------------------------------------------------------------- the round trip

def _stock_model(folder):
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    return getattr(transformers, config.architectures[0]).from_pretrained(folder)


@pytest.mark.parametrize("format", ["flat", "layers"])
def test_to_state_dict_is_the_checkpoint_bit_for_bit_and_loads_in_the_stock_model(zoo, tmp_path, format):
    dataset = WeightDataset(zoo, format=format, kind="vit-supervised", checkpoints="all")
    item = dataset[1]
    state = dataset.to_state_dict(item["weights"])
    saved = tensors(item["checkpoint"])
    save_file(state, str(tmp_path / "again.safetensors"), metadata={"format": "pt"})
    with safe_open(str(tmp_path / "again.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == sorted(saved)
        for name, tensor in saved.items():
            written = handle.get_tensor(name)
            assert written.dtype == tensor.dtype and written.shape == tensor.shape
            assert written.numpy().tobytes() == tensor.numpy().tobytes()
    swapped = shutil.copytree(item["checkpoint"], tmp_path / "swapped")
    save_file(state, str(swapped / layout.WEIGHTS), metadata={"format": "pt"})
    original, loaded = _stock_model(item["checkpoint"]).state_dict(), _stock_model(swapped).state_dict()
    assert all(torch.equal(original[name], loaded[name]) for name in original)
    if format == "flat":  # an edited vector loads too
        edited = dataset.to_state_dict(item["weights"] + 0.5)
        save_file(edited, str(swapped / layout.WEIGHTS), metadata={"format": "pt"})
        changed = _stock_model(swapped).state_dict()["classifier.bias"]
        assert torch.allclose(changed, original["classifier.bias"] + 0.5)


# ------------------------------------------------------------------------------------------------------ the splits

def test_split_is_a_sha256_function_of_seed_and_path():
    for key in ("vision/pretraining/vit_seed_0", "language/pretraining/lm_seed_12", "c"):
        point = int.from_bytes(hashlib.sha256(f"0\n{key}".encode()).digest()[:8], "big") / 2**64
        assert hashed_split(0, key, DEFAULT_FRACTIONS) == ("train" if point < 0.7 else
                                                           "validation" if point < 0.85 else "test")
    assert hashed_split(0, "c", DEFAULT_FRACTIONS) == "test" and hashed_split(7, "c", DEFAULT_FRACTIONS) == "train"
    shares = [hashed_split(3, f"member_{index}", DEFAULT_FRACTIONS) for index in range(3000)]
    assert 0.66 < shares.count("train") / 3000 < 0.74 and 0.12 < shares.count("test") / 3000 < 0.18


def test_splits_are_disjoint_by_member_and_hold_all_its_checkpoints(zoo):
    splits = assign_splits(zoo)
    data = layout.read_json(zoo / SPLITS_FILE)
    assert (data["seed"], data["fractions"], data["split_by"]) == (0, [0.7, 0.15, 0.15], "member")
    assert set(data["members"]) == {m.relpath for m in layout.scan_members(zoo)} == set(splits.members)
    parts = {name: WeightDataset(zoo, format="tokens", split=name, checkpoints="all")
             for name in ("train", "validation", "test")}
    seen = [members_of(part) for part in parts.values()]
    assert sum(map(len, seen)) == len(set().union(*seen)) == MEMBERS  # disjoint, and every member in one
    for name, part in parts.items():
        assert {entry.properties["split"] for entry in part.entries} == {name}
        assert all(data["members"][relpath] == name for relpath in members_of(part))
    assert len(parts["train"]) + len(parts["validation"]) + len(parts["test"]) == len(
        WeightDataset(zoo, format="tokens", checkpoints="all"))


def test_splits_do_not_depend_on_scan_order_and_survive_new_members(zoo, tiny_zoo, tmp_path, monkeypatch):
    first = assign_splits(zoo).members
    other = shutil.copytree(tiny_zoo, tmp_path / "other")
    scan = layout.scan_members
    monkeypatch.setattr(layout, "scan_members", lambda *a, **k: list(reversed(scan(*a, **k))))
    assert assign_splits(other).members == first
    monkeypatch.undo()
    added = write_member(zoo, "vit_new", "vit-supervised", {"seed": 99})
    again = assign_splits(zoo).members
    assert {key: again[key] for key in first} == first and added.relpath in again
    assert read_splits(zoo).members == again


def test_split_by_parent_puts_children_in_their_parents_split(zoo):
    splits = assign_splits(zoo, split_by="parent", seed=5)
    children = [m for m in layout.scan_members(zoo) if m.parent]
    assert children and all(splits.members[m.relpath] == splits.members[m.parent["path"]] for m in children)
    for child in children:
        split = splits.members[child.relpath]
        assert child.relpath in members_of(WeightDataset(zoo, format="tokens", split=split))


def test_fixed_splits_are_refused_other_settings_unless_replaced(zoo):
    assign_splits(zoo)
    with pytest.raises(WeightSpaceError, match="fixed .*replace=True"):
        assign_splits(zoo, seed=1)
    assert assign_splits(zoo, seed=1, replace=True).seed == 1 == read_splits(zoo).seed


def test_a_dataset_with_a_split_assigns_missing_splits_once(zoo, caplog):
    with caplog.at_level(logging.INFO, logger="zoo"):
        WeightDataset(zoo, format="tokens", split="train")
        WeightDataset(zoo, format="tokens", split="test")
    told = [record.getMessage() for record in caplog.records if SPLITS_FILE in record.getMessage()]
    assert len(told) == 1 and "70/15/15" in told[0] and (zoo / SPLITS_FILE).is_file()


# ------------------------------------------------------------------------------------------------------ collates

def test_collates_batch_every_format_with_two_workers(zoo):
    for format, collate in (("flat", collate_flat), ("layers", collate_layers), ("tokens", collate_tokens)):
        dataset = WeightDataset(zoo, format=format, modality="vision", checkpoints="all")
        copy = pickle.loads(pickle.dumps(dataset))
        assert copy[2]["member"] == dataset[2]["member"]
        batches = list(DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=collate))
        assert sum(len(batch["member"]) for batch in batches) == len(dataset)
        batch = batches[0]
        assert batch["properties"]["epoch"].dtype == torch.int64 and len(batch["properties"]["epoch"]) == 8
        assert batch["properties"]["member"] == batch["member"]
        if format == "flat":
            assert batch["weights"].shape == (8, dataset.layout[-1].offset + dataset.layout[-1].length)
        if format == "layers":
            assert batch["weights"][0][0].shape == (8, *dataset[0]["weights"][0][0].shape)
    mixed = collate_tokens([WeightDataset(zoo, format="tokens", modality=m)[0] for m in ("vision", "language")])
    lengths = mixed["mask"].any(-1).sum(1).tolist()
    assert mixed["weights"].shape[:2] == (2, max(lengths)) and min(lengths) < max(lengths)
    assert not mixed["mask"][lengths.index(min(lengths)), min(lengths):].any()


def test_spawned_workers_unpickle_the_dataset(zoo):
    dataset = WeightDataset(zoo, modality="vision")
    loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=collate_flat, multiprocessing_context="spawn")
    assert torch.equal(torch.cat([batch["weights"] for batch in loader]),
                       torch.stack([dataset[i]["weights"] for i in range(len(dataset))]))


# ------------------------------------------------------------------------------------------------- normalisation

def test_normalisation_statistics_are_cached_and_undone(zoo, monkeypatch):
    dataset = WeightDataset(zoo, kind="vit-supervised", checkpoints="all", normalize=True, split="validation")
    cached = list((zoo / ".cache" / "weightspace").glob("stats-*.json"))
    assert len(cached) == 1
    train = WeightDataset(zoo, kind="vit-supervised", checkpoints="all", split="train")
    values = torch.cat([tensors(train[i]["checkpoint"])["classifier.weight"].reshape(-1).double()
                        for i in range(len(train))])
    mean, std = dataset.stats["classifier.weight"]
    assert mean == pytest.approx(float(values.mean()), abs=1e-12)
    assert std == pytest.approx(float(values.std(unbiased=False)), rel=1e-9)

    def no_pass(*args):
        raise AssertionError("statistics computed again")

    monkeypatch.setattr(normalization_module, "compute_stats", no_pass)
    again = WeightDataset(zoo, format="layers", kind="vit-supervised", checkpoints="all", normalize=True,
                          split="validation")
    assert again.stats == dataset.stats
    item = dataset[0]
    saved = tensors(item["checkpoint"])
    row = next(row for row in dataset.layout if row.name == "classifier.weight")
    normalised = item["weights"][row.offset:row.offset + row.length]
    assert torch.allclose(normalised, (saved["classifier.weight"].reshape(-1) - mean) / std, atol=1e-6)
    for name, tensor in dataset.to_state_dict(item["weights"]).items():
        assert tensor.dtype == saved[name].dtype and torch.allclose(tensor, saved[name], atol=1e-6)
    assert torch.equal(torch.cat([t.reshape(-1) for layer in again[0]["weights"] for t in layer]), item["weights"])
    tokens = WeightDataset(zoo, format="tokens", kind="vit-supervised", checkpoints="all", normalize=True,
                           split="validation", token_size=8)[0]
    assert torch.allclose(tokens["weights"][2], (saved["classifier.weight"][0] - mean) / std, atol=1e-6)


# ---------------------------------------------------------------------------------------------- filters, errors

def test_filters_choose_members_and_checkpoints(zoo):
    everything = layout.scan_members(zoo)
    children = [m for m in everything if m.parent]
    assert members_of(WeightDataset(zoo, stage="finetuning")) == {m.relpath for m in children}
    parent = children[0].parent
    for value in (parent["path"], parent["member"]):
        assert members_of(WeightDataset(zoo, parent=value)) == {
            m.relpath for m in children if m.parent["path"] == parent["path"]}
    by_rate = WeightDataset(zoo, format="tokens", factors={"learning_rate": [1e-4, 1e-2]})
    assert {e.properties["learning_rate"] for e in by_rate.entries} == {1e-4, 1e-2}
    assert len(WeightDataset(zoo, format="tokens", kind=["vit-supervised", "lm-pretrain"])) == MEMBERS - 2
    all_checkpoints = sum(len(m.checkpoints) for m in everything)
    assert len(WeightDataset(zoo, format="tokens", checkpoints="all")) == all_checkpoints
    assert len(WeightDataset(zoo, format="tokens", checkpoints=[1])) == sum(1 in m.checkpoints for m in everything)
    assert {e.epoch for e in WeightDataset(zoo, format="tokens", checkpoints=[0, 2]).entries} == {0, 2}
    incomplete = everything[0]
    shutil.rmtree(incomplete.checkpoint_dir())
    assert incomplete.relpath not in members_of(WeightDataset(zoo, format="tokens"))


def test_properties_hold_metrics_gap_factors_and_identity(tmp_path):
    member = write_member(tmp_path / "zoo", "vit_a", "vit-supervised", {"seed": 3, "epoch": 7, "optim": "sgd"})
    dataset = WeightDataset(tmp_path / "zoo", checkpoints="all")
    assert len(dataset) == len(member.checkpoints)
    last = dataset[len(dataset) - 1]["properties"]
    row = member.results[-1]
    assert last["member"] == member.relpath and last["parent"] is None and last["kind"] == "vit-supervised"
    assert (last["modality"], last["stage"], last["split"]) == ("vision", "pretraining", None)
    assert (last["epoch"], last["samples"], last["step"]) == (row["epoch"], row["samples"], None)
    assert last["train_acc"] == row["train_acc"] and last["test_loss"] == row["test_loss"]
    assert last["generalization_gap"] == pytest.approx(row["train_acc"] - row["test_acc"])
    assert (last["seed"], last["factor_epoch"], last["optim"]) == (3, 7, "sgd")


@pytest.mark.parametrize("arguments, message", [
    ({"format": "vectors"}, "format must be one of flat, layers, tokens, got 'vectors'"),
    ({"split": "val"}, "split must be one of None, train, validation, test, got 'val'"),
    ({"kind": "nope"}, "no complete member has a checkpoint matching kind='nope'"),
    ({"checkpoints": "first"}, "checkpoints must be 'last', 'all' or a list of epochs"),
    ({"token_size": 0}, "token_size must be a positive integer"),
    ({}, "format 'flat' needs one tensor layout, and members language/"),
    ({"format": "layers", "stage": "pretraining"}, "format 'layers' needs one tensor layout"),
])
def test_bad_requests_are_one_line_errors(zoo, arguments, message):
    with pytest.raises(WeightSpaceError) as error:
        WeightDataset(zoo, **arguments)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tokens_have_no_state_dict_and_a_missing_zoo_is_one_line(zoo, tmp_path):
    with pytest.raises(WeightSpaceError, match="flat or layers"):
        WeightDataset(zoo, format="tokens").to_state_dict(torch.zeros(3))
    with pytest.raises(WeightSpaceError, match="not a zoo folder"):
        WeightDataset(tmp_path / "nothing")
    with pytest.raises(WeightSpaceError, match="values in one dimension"):
        WeightDataset(zoo, modality="vision").to_state_dict(torch.zeros(3))
