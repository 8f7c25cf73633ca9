"""One member trained by two processes on the CPU (gloo), started by `accelerate launch` and by `torchrun`.

To pay the start of two processes only twice: the module's fixture first runs the supervised ViT recipe under
`accelerate launch` with the shipped CPU config and SIGKILLs its rank 1 after epoch 1; then one `torchrun` process
group (tests/helpers/two_process_worker.py, which calls `recipe_main`, the body of every recipe script) trains a
member of every recipe kind, resumes the killed member and trains a member whose loss is NaN on rank 1.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers.members import only_member, weights
from helpers.paths import CONFIGS, ROOT

from zoo import layout
from zoo.runs import recipe_main

BIN = Path(sys.executable).parent
WORKER = ROOT / "tests" / "helpers" / "two_process_worker.py"
TORCHRUN = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU (gloo) path, on machines with GPUs too
COMMON = ["--num_train_epochs", "2", "--checkpoint_every", "1", "--disable_tqdm", "true"]
# The members compared with one process train with SGD without gradient clipping: the update is linear in the
# gradient, so a wrong reduction (a sum instead of a mean) shows as a step twice as long; AdamW would hide it (its
# update does not change when the gradient doubles) and turns rounding noise of near-zero gradients into whole steps.
PLAIN_SGD = ["--optimizer", "sgd", "--learning_rate", "0.05", "--max_grad_norm", "0"]
# Supervised ViT with no random augmentation (and no dropout): its loss is a plain function of the batch, so two
# processes x 32 must reach the weights of one process x 64. 192 = 3 global batches; 100 test images pad the last
# evaluation batch of the second process.
PLAIN_VIT = ["--config", str(CONFIGS / "vision" / "pretrain_supervised_tiny.yaml"), *COMMON,
             "--max_train_samples", "192", "--max_eval_samples", "100", "--augment", "false",
             "--mixup_alpha", "0", "--cutmix_alpha", "0", "--random_erasing", "0", *PLAIN_SGD]
# GPT-2 (no dropout) on 4 articles: 108 blocks of 32 tokens = 9 global batches of 12; ~92 test blocks pad the
# second process's evaluation batch.
LM = ["--config", str(CONFIGS / "language" / "pretrain_tiny.yaml"), *COMMON, "--max_train_samples", "4",
      "--max_eval_samples", "4", "--vocab_size", "512", "--block_size", "32", *PLAIN_SGD]


def jobs(out: Path) -> list[dict]:
    """Every recipe kind at half the per-process batch; 200 and 100 training samples leave a padded last batch."""
    vit = ["--max_train_samples", "192", "--max_eval_samples", "96", "--per_device_train_batch_size", "32", *COMMON]
    return [
        {"kind": "vit-pretrain", "argv": [*PLAIN_VIT, "--per_device_train_batch_size", "32",
                                          "--output_dir", str(out / "vit")]},
        {"kind": "vit-pretrain", "argv": [*PLAIN_VIT, "--per_device_train_batch_size", "32",  # the killed member
                                          "--output_dir", str(out / "killed")]},
        {"kind": "vit-pretrain", "argv": ["--config", str(CONFIGS / "vision" / "pretrain_contrastive_tiny.yaml"),
                                          *vit, "--output_dir", str(out / "ssl")]},
        {"kind": "vit-finetune", "argv": ["--config", str(CONFIGS / "vision" / "finetune_tiny.yaml"), *vit,
                                          "--max_train_samples", "200", "--pretrained", f"@last:{out / 'vit'}",
                                          "--output_dir", str(out / "vit_ft")]},
        {"kind": "lm-pretrain", "argv": [*LM, "--per_device_train_batch_size", "6", "--output_dir", str(out / "lm")]},
        {"kind": "lm-finetune", "argv": ["--config", str(CONFIGS / "language" / "finetune_tiny.yaml"), *COMMON,
                                         "--max_train_samples", "100", "--max_eval_samples", "40", "--max_length", "32",
                                         "--per_device_train_batch_size", "16", "--pretrained", f"@last:{out / 'lm'}",
                                         "--output_dir", str(out / "lm_ft")]},
        {"kind": "vit-pretrain", "nan_on_rank": 1,  # last: the loss of every later job would be NaN on rank 1
         "argv": [*PLAIN_VIT, "--per_device_train_batch_size", "32", "--num_train_epochs", "1",
                  "--output_dir", str(out / "nan")]},
    ]


def _rank_pids(launcher: subprocess.Popen, deadline: float) -> dict[int, int]:
    """PIDs of the training processes this test started, by their RANK."""
    while time.time() < deadline:
        ranks = {}
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                rank = child.environ().get("RANK")
            except psutil.Error:
                continue
            if rank is not None and "pretrain_vit.py" in " ".join(child.cmdline()):
                ranks[int(rank)] = child.pid
        if len(ranks) == 2:
            return ranks
        time.sleep(0.05)
    raise AssertionError("the launcher did not start two training processes")


def kill_rank_1_after_epoch_1(out: Path) -> dict:
    """`accelerate launch` of the recipe script with multi_cpu.yaml; SIGKILL of rank 1 once the Trainer state of
    epoch 1 is saved (both ranks' RNG states included). Returns what the killed run left."""
    launcher = subprocess.Popen([str(BIN / "accelerate"), "launch", "--config_file",
                                 str(ROOT / "recipes" / "accelerate_configs" / "multi_cpu.yaml"),
                                 str(ROOT / "recipes" / "pretrain_vit.py"), *PLAIN_VIT,
                                 "--per_device_train_batch_size", "32", "--output_dir", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CPU_ONLY)
    try:
        deadline = time.time() + 300
        pids = _rank_pids(launcher, deadline)
        state = out / layout.TRAINER_STATE_DIR
        while time.time() < deadline and not (list(state.rglob("checkpoint-3/trainer_state.json"))
                                              and list(state.rglob("checkpoint-3/rng_state_1.pth"))):
            time.sleep(0.02)
        os.kill(pids[1], signal.SIGKILL)
        code = launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    member = only_member(out)
    return {"launcher_exit": code, "state": member.state, "epochs": [row["epoch"] for row in member.results]}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    killed = kill_rank_1_after_epoch_1(out / "killed")
    (out / "jobs.json").write_text(json.dumps(jobs(out)))
    result = subprocess.run([*TORCHRUN, str(WORKER), str(out / "jobs.json"), str(out)], capture_output=True,
                            text=True, timeout=600, env=CPU_ONLY)
    assert result.returncode == 0, result.stderr[-8000:]
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    return out, reports, killed, result.stdout


@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("index,folder,kind", [(0, "vit", "vit-supervised"), (2, "ssl", "vit-contrastive"),
                                               (3, "vit_ft", "vit-finetune"), (4, "lm", "lm-pretrain"),
                                               (5, "lm_ft", "lm-finetune")])
def test_each_recipe_kind_trains_one_member_with_two_processes(two_processes, index, folder, kind):
    from transformers import AutoModel

    out, reports, _, _ = two_processes
    assert [r["jobs"][index]["outcome"] for r in reports] == [0, 0]
    member = only_member(out / folder)
    assert member.state == "complete" and member.config["kind"] == kind
    assert [row["epoch"] for row in member.results] == [0, 1, 2] and member.checkpoints == [0, 1, 2]
    provenance = member.config["provenance"]
    assert provenance["world_size"] == 2 and provenance["device"].startswith("cpu")
    # only the main process wrote the member: config.json once, one line and one checkpoint per epoch
    writes = reports[0]["jobs"][index]["writes"]
    assert [writes.get(name, 0) for name in ("write_member_config", "append_result", "write_checkpoint",
                                              "record_failure")] == [1, 3, 3, 0]
    assert not any(reports[1]["jobs"][index]["writes"].values())
    # each epoch counts the training split once, though the processes padded their last batch to step together
    split = member.config["data"]["splits"]["train"]
    per_sample = {"lm-pretrain": member.config["recipe"]["block_size"] - 1,  # LMs count predicted tokens,
                  "vit-contrastive": 2}.get(kind, 1)  # SimCLR counts views
    assert [row["samples"] for row in member.results[1:]] == [split * per_sample] * 2
    for epoch in member.checkpoints:
        assert AutoModel.from_pretrained(str(member.checkpoint_dir(epoch))) is not None


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("kind,folder,one_process", [
    ("vit-pretrain", "vit", PLAIN_VIT + ["--per_device_train_batch_size", "64"]),
    ("lm-pretrain", "lm", LM + ["--per_device_train_batch_size", "12"])])
def test_two_processes_at_half_batch_match_one_process(tmp_path, two_processes, kind, folder, one_process):
    """2 processes x B/2 against 1 process x B (SGD, see PLAIN_SGD): gradients are averaged over the processes, so
    the weights agree up to float rounding. Measured on 2 CPU cores: largest difference 8.9e-8 (ViT, largest move
    0.37) and 3.7e-8 (GPT-2, move 0.13), i.e. ~3e-7 of the move: float32 rounds each gradient sum to ~1e-7, and
    6 to 18 steps add that up. The tolerance, 1e-5 of the move, leaves 30x room for other thread counts; a summed
    instead of averaged gradient doubles every step (a difference of about the move), and overlapping shards or
    another data order change the gradients themselves (a sizeable fraction of the move)."""
    out = two_processes[0]
    assert recipe_main(kind, [*one_process, "--output_dir", str(tmp_path)]) == 0
    one, two = only_member(tmp_path), only_member(out / folder)
    w1, w2 = weights(one.checkpoint_dir(2)), weights(two.checkpoint_dir(2))
    w0 = weights(one.checkpoint_dir(0))
    assert w1.keys() == w2.keys()
    largest = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
    moved = max(float(np.abs(w1[k] - w0[k]).max()) for k in w1)
    batch = one.config["recipe"]["per_device_train_batch_size"]
    print(f"{kind}: 2 x {batch // 2} vs 1 x {batch}: largest weight difference {largest:.3g}, largest move {moved:.3g}")
    assert largest < 1e-5 * moved
    # evaluation gathered over both processes: the initial model's test metrics are those of one process
    for key in ("test_loss", "test_acc", "train_loss", "train_acc"):
        assert one.results[0][key] == pytest.approx(two.results[0][key], rel=1e-5), key
    for epoch in (1, 2):
        for key in ("test_loss", "test_acc", "train_loss", "train_acc", "samples"):
            assert one.results[epoch][key] == pytest.approx(two.results[epoch][key], rel=1e-3, abs=1e-4), key


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_nan_on_one_rank_is_recorded_once(two_processes):
    out, reports, _, _ = two_processes
    outcomes = [r["jobs"][6]["outcome"] for r in reports]
    assert all(str(o).startswith("TrainingDiverged") for o in outcomes), outcomes  # both stop together
    assert reports[0]["jobs"][6]["writes"]["record_failure"] == 1
    assert not any(reports[1]["jobs"][6]["writes"].values())
    member = only_member(out / "nan")
    assert member.state == "failed" and "TrainingDiverged" in member.error
    assert [row["epoch"] for row in member.results] == [0, 1]



@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_one_rank_and_rerun_resumes(two_processes):
    """Rank 1 of an `accelerate launch` run killed with SIGKILL after epoch 1: the launcher stops rank 0 and fails;
    the rerun (under `torchrun`) resumes the member from epoch 1's Trainer state to the weights of the
    uninterrupted run."""
    out, reports, killed, stdout = two_processes
    assert killed["launcher_exit"] != 0
    assert killed["state"] in ("incomplete", "failed") and 1 in killed["epochs"]
    assert [r["jobs"][1]["outcome"] for r in reports] == [0, 0]
    assert stdout.count(f"member {out / 'killed'}") == 1  # one process reports
    member = only_member(out / "killed")
    assert member.state == "complete" and [row["epoch"] for row in member.results] == [0, 1, 2]
    assert [row["step"] for row in member.results] == [0, 3, 6]
    assert reports[0]["jobs"][1]["writes"].get("append_result") == 1  # epoch 2 only: 0 and 1 are not redone
    expected = weights(only_member(out / "vit").checkpoint_dir(2))
    got = weights(member.checkpoint_dir(2))
    assert all((got[k] == expected[k]).all() for k in expected)

def test_gpus_per_trial_above_one_is_refused(tmp_path, capsys):
    from zoo.cli import main

    zoo_dir = tmp_path / "zoo"
    code = main(["generate", str(CONFIGS / "zoos" / "quickstart.yaml"), "--zoo-dir", str(zoo_dir),
                 "--gpus-per-trial", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--gpus-per-trial 2" in err[0] and "accelerate launch" in err[0]
    assert not zoo_dir.exists()


def test_processes_that_did_not_join_one_group_are_refused(monkeypatch):
    """torchrun's CPU processes that did not join one process group would each train alone as rank 0 of 1, all
    writing the same member: such a run is refused in one line (checked by hand under torchrun: exit 2, nothing
    written)."""
    from types import SimpleNamespace

    from zoo.training import check_process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    alone = SimpleNamespace(world_size=1, distributed_state=SimpleNamespace(distributed_type="NO"))
    with pytest.raises(ValueError, match="WORLD_SIZE=2 but the processes did not join one group"):
        check_process_group(alone)
    check_process_group(SimpleNamespace(world_size=2, distributed_state=None))
