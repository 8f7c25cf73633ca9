"""The member and zoo format: names, atomic writes, results, completeness."""

import json

import pytest
import torch
from safetensors.torch import save_file

from zoo import layout


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
