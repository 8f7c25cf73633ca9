"""Reruns of a zoo: a complete zoo prepares no data and starts no Ray, Optuna adds no member, an interrupt is one
line and frees the zoo, a trial resumes from its saved state, and what a killed run left (Trainer states, Ray's
scratch) is dropped."""

import json

import pytest
import yaml
from helpers.paths import ROOT
from helpers.specs import write_spec

from zoo import layout
from zoo.cli import main as zoo_main


def test_a_rerun_on_a_complete_zoo_prepares_no_data_and_starts_no_ray(tmp_path, monkeypatch):
    from helpers.zoo_factory import write_member

    from zoo import runs
    from zoo.population import generation as population

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {
        "pretraining": {"config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
                        "fixed": {"num_train_epochs": 2, "checkpoint_every": 1}, "grid": {"seed": [1]}},
        "finetuning": {"config": str(ROOT / "recipes/configs/vision/finetune_tiny.yaml"),
                       "fixed": {"num_train_epochs": 2, "checkpoint_every": 1},
                       "grid": {"optimizer": ["adamw", "sgd"]}},
    }}))
    loaded, stages = population.load_spec(spec)
    population.plan_members(stages)
    zoo_dir = tmp_path / "zoo"
    layout.write_zoo_file(zoo_dir, loaded, population.spec_hash(loaded))  # the zoo of an earlier run
    parent = write_member(zoo_dir, stages[0].members[0].name, "vit-supervised", {"seed": 1})
    for member in stages[1].members:
        write_member(zoo_dir, member.name, "vit-finetune", {"optimizer": member.name}, parent=parent)

    def refuse(*args, **kwargs):
        raise AssertionError("a complete zoo needs no data and no Ray")

    monkeypatch.setattr(runs, "MemberRun", refuse)
    monkeypatch.setattr(population, "_init_ray", refuse)
    members = population.generate(spec, zoo_dir)
    assert len(members) == 3 and all(m.is_complete() for m in members)


@pytest.mark.slow
def test_optuna_samples_n_members_and_a_rerun_adds_none(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "optuna", "vision": {"pretraining": {
        "config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
        "fixed": {"num_train_epochs": 1, "max_train_samples": 64, "max_eval_samples": 32},
        "ranges": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                   "weight_decay": {"choices": [0.0, 0.01]}},
    }}}))
    zoo_dir = tmp_path / "zoo"
    # in this process: Optuna samples and trains its members here, and no Ray is started
    command = ["generate", str(spec), "--zoo-dir", str(zoo_dir)]
    assert zoo_main(command) == 2 and "--optuna" in capsys.readouterr().err
    for _ in range(2):
        assert zoo_main([*command, "--optuna", "2"]) == 0
        members = layout.scan_members(zoo_dir)
        assert len(members) == 2 and all(m.state == "complete" for m in members)
    rates = [m.config["factors"]["learning_rate"] for m in members]
    assert all(1e-4 <= rate <= 1e-2 for rate in rates) and rates[0] != rates[1]


def test_an_interrupt_is_one_line_and_frees_the_zoo(tmp_path, capsys, monkeypatch):
    from zoo.population import cli as population

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(population, "generate", interrupted)
    zoo_dir = tmp_path / "zoo"
    assert zoo_main(["generate", str(write_spec(tmp_path / "spec.yaml")), "--zoo-dir", str(zoo_dir)]) == 130
    assert capsys.readouterr().err.splitlines() == [population.INTERRUPTED]
    assert "rerun the same command to resume" in population.INTERRUPTED
    with layout.ZooLock(zoo_dir):  # released
        pass


def test_resume_epoch_reads_the_state_a_trial_resumes_from(tmp_path):
    from zoo.population import PlannedMember, duration, resume_epoch

    zoo_dir = tmp_path / "zoo"
    one = PlannedMember("vision", "pretraining", "vit-pretrain", "a", {}, None, 6)
    assert resume_epoch(zoo_dir, [one], "a") is None  # nothing saved: it starts afresh
    state = layout.trainer_state_dir(zoo_dir, zoo_dir / one.relpath())
    for step, epoch in ((16, 2.0), (24, 3.0)):
        (state / f"checkpoint-{step}").mkdir(parents=True)
        (state / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"epoch": epoch}))
    (state / "checkpoint-32").mkdir()  # a save cut short (no trainer_state.json): not resumed from
    assert resume_epoch(zoo_dir, [one], "a") == 3
    pack = [PlannedMember("vision", "finetuning", "vit-finetune", n, {}, "p", 4) for n in ("b", "c")]
    pack_state = layout.trainer_state_dir(zoo_dir, zoo_dir / "vision" / "finetuning" / "p") / "pack-x" / "epoch-0002"
    pack_state.mkdir(parents=True)
    (pack_state / "pack.json").write_text(json.dumps({"epoch": 2, "members": ["b", "c"]}))
    assert resume_epoch(zoo_dir, pack, "pack-x") == 2
    assert resume_epoch(zoo_dir, pack[:1] + [pack[0]], "pack-x") is None  # another pack's state: starts afresh
    assert [duration(s) for s in (4.4, 59.6, 72, 3600 + 5 * 60 + 9)] == ["4 s", "1 min 0 s", "1 min 12 s", "1 h 5 min"]


def test_states_left_for_complete_members_are_dropped_by_the_rerun(tmp_path):
    """A run killed between a member's last epoch and the removal of its Trainer state leaves that state; the rerun
    skips the complete member, so it drops the state (and a pack's, once all its members are complete)."""
    from helpers.zoo_factory import write_member

    from zoo.population import drop_finished_states

    zoo = tmp_path / "zoo"
    folder = zoo / "vision" / "pretraining"
    done = [write_member(zoo, name, "vit-supervised", {"seed": 1}) for name in ("a", "b", "c")]
    running = write_member(zoo, "d", "vit-supervised", {"seed": 1}, epochs_done=1)
    root = layout.trainer_state_dir(zoo, folder)
    states = {"a": root / "a" / "checkpoint-8", "d": root / "d" / "checkpoint-8",
              "pack-done": root / "pack-done" / "epoch-0002", "pack-running": root / "pack-running" / "epoch-0001"}
    for state in states.values():
        state.mkdir(parents=True)
        (state / "optimizer.pt").write_bytes(b"x")
    (states["pack-done"] / "pack.json").write_text(json.dumps({"epoch": 2, "members": ["b", "c"]}))
    (states["pack-running"] / "pack.json").write_text(json.dumps({"epoch": 1, "members": ["c", "d"]}))
    drop_finished_states(zoo, folder)
    assert sorted(p.name for p in root.iterdir()) == ["d", "pack-running"]  # still needed to resume d
    assert all(m.is_complete() for m in done) and not layout.load_member(running.path).is_complete()


def test_ray_scratch_folders_are_removed(tmp_path, monkeypatch):
    from zoo.population import search as population

    monkeypatch.setattr(population.tempfile, "gettempdir", lambda: str(tmp_path))
    storage = population._scratch_dir(tmp_path / "zoo")
    (storage / "vision-pretraining" / "trial").mkdir(parents=True)
    population._remove_scratch(storage, "vision-pretraining")
    assert not (tmp_path / "transformer-zoo-ray").exists()
