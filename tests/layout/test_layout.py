"""The member and zoo format: names, atomic writes, results, completeness, file modes, leftover Trainer states, and a
damaged result line named with its repair."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers.paths import ROOT
from safetensors.torch import save_file

from zoo import layout
from zoo.cli import main as zoo_main


def test_member_names_are_readable_and_filesystem_safe():
    name = layout.member_name("sl_vit_tiny", {"seed": 42, "lr": 0.001, "wd": 1e-4, "bs": 128})
    assert name == "sl_vit_tiny_seed_42_lr_0.001_wd_0.0001_bs_128"
    odd = layout.member_name("x/y", {"opt": "a b/c", "flag": True, "lr": 3e-05})
    assert "/" not in odd and " " not in odd
    assert odd.endswith("flag_true_lr_3e-05")


def test_planned_checkpoints_always_include_first_and_last():
    assert layout.planned_checkpoints(5, 2) == [0, 2, 4, 5]
    assert layout.planned_checkpoints(4, 2) == [0, 2, 4]
    assert layout.planned_checkpoints(3, 10) == [0, 3]
    with pytest.raises(layout.LayoutError, match="checkpoint_every"):
        layout.planned_checkpoints(3, 0)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "checkpoint_000001"
    with pytest.raises(RuntimeError):
        with layout.atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash while writing")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_checkpoint_requires_weights(tmp_path):
    with pytest.raises(layout.LayoutError, match="model.safetensors"):
        layout.write_checkpoint(tmp_path, 1, lambda folder: (folder / "config.json").write_text("{}"))
    assert not (tmp_path / "checkpoint_000001").exists()


def test_results_replace_a_resumed_epoch(tmp_path):
    layout.append_result(tmp_path, {"epoch": 0, "test_acc": 0.1})
    layout.append_result(tmp_path, {"epoch": 1, "test_acc": 0.2})
    layout.append_result(tmp_path, {"epoch": 1, "test_acc": 0.3})
    rows = layout.read_results(tmp_path)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert rows[1]["test_acc"] == 0.3
    assert all(json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines())


def _checkpoint(folder, value=1.0):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    save_file({"w": torch.full((3,), value)}, str(folder / "model.safetensors"))


def test_completeness_needs_every_checkpoint_and_line(tmp_path):
    member = tmp_path / "vision" / "pretraining" / "m"
    layout.write_member_config(member, {"name": "m", "modality": "vision", "stage": "pretraining",
                                        "epochs": 2, "checkpoints": [0, 2]})
    assert layout.load_member(member).state == "pending"
    _checkpoint(member / "checkpoint_000000")
    for epoch in range(3):
        layout.append_result(member, {"epoch": epoch, "train_loss": 1.0})
    info = layout.load_member(member)
    assert info.state == "incomplete"
    assert any("checkpoint_000002" in reason for reason in info.missing())
    _checkpoint(member / "checkpoint_000002")
    assert layout.load_member(member).state == "complete"
    # a truncated weights file is caught by its header check
    weights = member / "checkpoint_000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert layout.load_member(member).state == "incomplete"
    layout.record_failure(member, "ValueError: boom")
    assert layout.load_member(member).state == "failed"
    found = layout.scan_members(tmp_path)
    assert [m.relpath for m in found] == ["vision/pretraining/m"]


def test_nan_loss_is_not_complete(tmp_path):
    layout.write_member_config(tmp_path, {"name": "m", "modality": "vision", "stage": "pretraining",
                                          "epochs": 0, "checkpoints": [0]})
    _checkpoint(tmp_path / "checkpoint_000000")
    layout.append_result(tmp_path, {"epoch": 0, "train_loss": float("nan")})
    assert not layout.load_member(tmp_path).is_complete()


# ---------------------------------------------------------------- file modes follow the umask


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_zoo_files_and_folders_respect_the_umask(tmp_path, umask):
    layout.atomic_write_json(tmp_path / "zoo.json", {"a": 1})
    layout.append_result(tmp_path, {"epoch": 0})
    import torch
    from safetensors.torch import save_file

    checkpoint = layout.write_checkpoint(  # safetensors writes its files 0600 whatever the umask
        tmp_path, 0, lambda folder: save_file({"w": torch.zeros(2)}, str(folder / layout.WEIGHTS)))
    assert _mode(tmp_path / "zoo.json") == 0o666 & ~umask
    assert _mode(tmp_path / layout.RESULTS) == 0o666 & ~umask
    assert _mode(checkpoint) == 0o777 & ~umask
    assert _mode(checkpoint / layout.WEIGHTS) == 0o666 & ~umask


# ---------------------------------------------------------------- leftovers and damage


def test_trainer_state_removal_prunes_empty_folders(tmp_path):
    zoo = tmp_path / "zoo"
    first = layout.trainer_state_dir(zoo, zoo / "vision" / "finetuning" / "p" / "a")
    second = layout.trainer_state_dir(zoo, zoo / "vision" / "finetuning" / "p" / "b")
    for state in (first, second):
        (state / "checkpoint-4").mkdir(parents=True)
        (state / "checkpoint-4" / "trainer_state.json").write_text("{}")
    layout.remove_trainer_state(first)
    assert not first.exists() and second.is_dir()  # another member's state stays
    layout.remove_trainer_state(second)
    assert not (zoo / layout.TRAINER_STATE_DIR).exists()


def test_a_damaged_result_line_names_the_file_the_line_and_the_repair(tmp_path, capsys, monkeypatch):
    from helpers.zoo_factory import write_member

    from zoo import runs
    from zoo.population import generation as population

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {
        "pretraining": {"config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
                        "fixed": {"num_train_epochs": 2, "checkpoint_every": 1}, "grid": {"seed": [1]}},
        "finetuning": {"config": str(ROOT / "recipes/configs/vision/finetune_tiny.yaml"),
                       "fixed": {"num_train_epochs": 2, "checkpoint_every": 1}, "grid": {"optimizer": ["adamw"]}}}}))
    loaded, stages = population.load_spec(spec)
    population.plan_members(stages)
    zoo_dir = tmp_path / "zoo"
    layout.write_zoo_file(zoo_dir, loaded, population.spec_hash(loaded))
    # the parent still has an epoch to train: the damage is found before it trains
    parent = write_member(zoo_dir, stages[0].members[0].name, "vit-supervised", {"seed": 1}, epochs_done=1)
    child = write_member(zoo_dir, stages[1].members[0].name, "vit-finetune", {"optimizer": "adamw"}, parent=parent)
    results = child.path / layout.RESULTS
    lines = results.read_text().splitlines()
    results.write_text("\n".join([lines[0], lines[1][:-15], *lines[2:]]) + "\n")  # line 2 cut short

    def refuse(*args, **kwargs):
        raise AssertionError("nothing trains before the damaged member is reported")

    monkeypatch.setattr(runs, "MemberRun", refuse)
    monkeypatch.setattr(population, "_init_ray", refuse)
    capsys.readouterr()
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(zoo_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"zoo generate: error: {results.resolve()}:2: not valid JSON (")
    assert err[0].endswith("; to repair it, delete that line (the member then reads as incomplete, and the next run "
                           f"trains it again from its last saved state) or the member folder {child.path.resolve()}")
    # as told: without the line the member is incomplete (status says so), and nothing else is in the way
    results.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert layout.load_member(child.path).state == "incomplete"
