"""The four recipes on embedded data: member layout, stock loading, determinism, resume and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.members import only_member, weights
from helpers.paths import CONFIGS, ROOT
from safetensors.numpy import load_file

from zoo import layout
from zoo.runs import recipe_main

SMALL_VISION = ["--max_train_samples", "192", "--max_eval_samples", "96", "--num_train_epochs", "2",
                "--checkpoint_every", "1", "--per_device_train_batch_size", "64", "--disable_tqdm", "true"]
SMALL_LM = ["--max_train_samples", "40", "--max_eval_samples", "20", "--num_train_epochs", "2",
            "--checkpoint_every", "1", "--vocab_size", "512", "--block_size", "32", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def vit_parents(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit")
    for config in ("pretrain_supervised_tiny.yaml", "pretrain_contrastive_tiny.yaml"):
        assert recipe_main("vit-pretrain", ["--config", str(CONFIGS / "vision" / config), "--output_dir", str(out),
                                            *SMALL_VISION]) == 0
    return {m.config["kind"]: m for m in layout.scan_members(out)}


@pytest.fixture(scope="module")
def lm_parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    assert recipe_main("lm-pretrain", ["--config", str(CONFIGS / "language" / "pretrain_tiny.yaml"),
                                       "--output_dir", str(out), *SMALL_LM]) == 0
    return only_member(out)


@pytest.mark.slow
def test_vit_members_follow_the_layout(vit_parents):
    assert set(vit_parents) == {"vit-supervised", "vit-contrastive"}
    for member in vit_parents.values():
        assert member.state == "complete"
        assert member.checkpoints == [0, 1, 2]
        rows = member.results
        assert [row["epoch"] for row in rows] == [0, 1, 2]
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds", "samples"):
            assert all(row[key] is not None for row in rows), key
        assert rows[-1]["train_loss"] < rows[0]["train_loss"]
        assert member.config["factors"]["seed"] == 42
        assert member.config["data"]["splits"]["test"] == 96
        assert not list(member.path.glob(".tmp_*"))
    supervised = vit_parents["vit-supervised"]
    assert supervised.name == "sl_vit_tiny_seed_42_lr_0.002_wd_0.0001_bs_64"
    assert supervised.config["recipe"]["label_smoothing"] == 0.1
    # the trainer's resumable state is outside the member and removed once it is complete
    assert not (supervised.path / "checkpoint-4").exists()
    assert not list((supervised.path.parent / layout.TRAINER_STATE_DIR).rglob("optimizer.pt"))


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_stock_transformers_load_every_checkpoint(vit_parents, lm_parent):
    paths = [str(m.checkpoint_dir(e)) for m in (*vit_parents.values(), lm_parent) for e in m.checkpoints]
    script = (
        "import sys, json\n"
        "from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageClassification\n"
        "out = []\n"
        "for p in sys.argv[1:]:\n"
        "    out.append(type(AutoModel.from_pretrained(p)).__name__)\n"
        f"out.append(type(AutoModelForCausalLM.from_pretrained({str(lm_parent.checkpoint_dir())!r})).__name__)\n"
        f"out.append(type(AutoModelForImageClassification.from_pretrained("
        f"{str(vit_parents['vit-supervised'].checkpoint_dir())!r})).__name__)\n"
        "assert not any(m.startswith('zoo') for m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, cwd="/",
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    names = json.loads(result.stdout.strip().splitlines()[-1])
    assert names[:-2] == ["ViTModel"] * 6 + ["GPT2Model"] * 3
    assert names[-2:] == ["GPT2LMHeadModel", "ViTForImageClassification"]
    # processor / tokenizer files travel with every checkpoint
    assert (vit_parents["vit-contrastive"].checkpoint_dir(0) / "preprocessor_config.json").is_file()
    assert (lm_parent.checkpoint_dir(1) / "tokenizer.json").is_file()


@pytest.mark.slow
def test_contrastive_checkpoint_holds_the_backbone_only(vit_parents):
    keys = weights(vit_parents["vit-contrastive"].checkpoint_dir())
    assert keys and not any("projector" in key for key in keys)


@pytest.mark.slow
@pytest.mark.parametrize("parent_kind,head", [("vit-contrastive", "mlp"), ("vit-supervised", "linear")])
def test_finetune_vit_from_either_parent(tmp_path, vit_parents, parent_kind, head):
    from zoo.models import load_member_model

    parent = vit_parents[parent_kind]
    code = recipe_main("vit-finetune", ["--config", str(CONFIGS / "vision" / "finetune_tiny.yaml"),
                                        "--pretrained", str(parent.checkpoint_dir(2)), "--output_dir", str(tmp_path),
                                        "--head", head, "--optimizer", "sgd", "--learning_rate", "0.05",
                                        *SMALL_VISION])
    assert code == 0
    member = only_member(tmp_path)
    assert member.state == "complete"
    assert member.config["parent"]["member"] == parent.name
    assert member.config["parent"]["checkpoint"] == "checkpoint_000002"
    assert member.config["recipe"]["optim"] == "sgd"
    # the encoder starts from the parent's weights
    start, parent_weights = weights(member.checkpoint_dir(0)), weights(parent.checkpoint_dir(2))
    key = "vit.encoder.layer.0.attention.attention.query.weight"
    parent_key = key if key in parent_weights else key.removeprefix("vit.")
    assert (start[key] == parent_weights[parent_key]).all()
    model = load_member_model(member.checkpoint_dir())
    assert model.config.zoo_head["type"] == head
    assert model(pixel_values=__import__("torch").zeros(2, 3, 28, 28)).logits.shape == (2, 10)


@pytest.mark.slow
def test_lm_pretrain_and_finetune(tmp_path, lm_parent):
    assert lm_parent.state == "complete"
    rows = lm_parent.results
    assert rows[-1]["test_perplexity"] < rows[0]["test_perplexity"]
    assert lm_parent.config["metric"] == "test_perplexity"
    code = recipe_main("lm-finetune", ["--config", str(CONFIGS / "language" / "finetune_tiny.yaml"),
                                       "--pretrained", str(lm_parent.checkpoint_dir()), "--output_dir", str(tmp_path),
                                       "--max_train_samples", "128", "--max_eval_samples", "64",
                                       "--num_train_epochs", "1", "--max_length", "32", "--disable_tqdm", "true"])
    assert code == 0
    member = only_member(tmp_path)
    assert member.state == "complete" and member.checkpoints == [0, 1]
    assert member.config["label_names"] == ["rotten", "fresh"]
    assert 0.0 <= member.results[-1]["test_acc"] <= 1.0


@pytest.mark.slow
def test_same_config_gives_bit_identical_weights(tmp_path):
    args = ["--config", str(CONFIGS / "vision" / "pretrain_supervised_tiny.yaml"), *SMALL_VISION,
            "--num_train_epochs", "1"]
    for run in ("a", "b"):
        assert recipe_main("vit-pretrain", [*args, "--output_dir", str(tmp_path / run)]) == 0
    a, b = only_member(tmp_path / "a"), only_member(tmp_path / "b")
    wa, wb = weights(a.checkpoint_dir()), weights(b.checkpoint_dir())
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert recipe_main("vit-pretrain", [*args, "--output_dir", str(tmp_path / "c"), "--seed", "7"]) == 0
    wc = weights(only_member(tmp_path / "c").checkpoint_dir())
    assert any((wa[k] != wc[k]).any() for k in wa)


@pytest.mark.timeout(600)
@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_and_rerun_resumes_bit_identically(tmp_path):
    """A real SIGKILL mid-training; the rerun resumes from the Trainer state and ends with the same weights."""
    args = [sys.executable, str(ROOT / "recipes" / "pretrain_vit.py"), "--config",
            str(CONFIGS / "vision" / "pretrain_supervised_tiny.yaml"), *SMALL_VISION, "--num_train_epochs", "4",
            "--max_train_samples", "384"]
    reference = tmp_path / "reference"
    subprocess.run([*args, "--output_dir", str(reference)], check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--output_dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once the Trainer has saved epoch 2
        if list((out / layout.TRAINER_STATE_DIR).rglob("checkpoint-12/trainer_state.json")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    member = only_member(out)
    assert member.state == "incomplete"
    before = {row["epoch"]: row for row in member.results}
    assert 2 in before
    subprocess.run([*args, "--output_dir", str(out)], check=True, capture_output=True)
    member = only_member(out)
    assert member.state == "complete"
    after = {row["epoch"]: row for row in member.results}
    assert [after[e]["step"] for e in range(5)] == [0, 6, 12, 18, 24]
    for epoch in (0, 1, 2):  # epochs done before the kill are not trained again
        assert after[epoch] == before[epoch]
    assert not (out / layout.TRAINER_STATE_DIR / member.name).exists()
    expected = only_member(reference)
    for epoch in (3, 4):
        wa, wb = weights(member.checkpoint_dir(epoch)), weights(expected.checkpoint_dir(epoch))
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa), epoch


@pytest.mark.slow
def test_lm_resume_restores_every_weight(tmp_path):
    """Trainer resume of a GPT-2 (renamed and tied weights) continues exactly where it stopped."""
    from zoo.arguments import load_yaml, parse_config
    from zoo.runs import Arguments, MemberRun

    config = load_yaml(CONFIGS / "language" / "pretrain_tiny.yaml")
    config.update(max_train_samples=20, max_eval_samples=10, vocab_size=256, block_size=32, num_train_epochs=2,
                  save_total_limit=None, disable_tqdm=True, eval_strategy="no")
    trainers = []
    for name in ("a", "b"):
        run_config = dict(config, output_dir=str(tmp_path / name))
        args = Arguments(*parse_config(run_config))
        trainers.append(MemberRun("lm-pretrain", args, run_config).trainer(args, None))
    trainers[0].train()
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "a").glob("checkpoint-*"))
    trainers[1].train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{steps[0]}"))
    wa = load_file(str(tmp_path / "a" / f"checkpoint-{steps[-1]}" / "resume_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / f"checkpoint-{steps[-1]}" / "resume_model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def _run_cli(*argv):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("extra,needle", [
    (["--learning_rat", "3e-4"], "learning_rat"),
    (["--learning_rate", "fast"], "learning_rate"),
    (["--dataset", "embedded:nope"], "embedded:nope"),
    (["--mode", "dreaming"], "dreaming"),
    (["--dataset", "/nonexistent/folder"], "/nonexistent/folder"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, extra, needle):
    # in process (the recipe scripts are `sys.exit(recipe_main(kind))`; test_bad_config_file_keys runs one)
    code = recipe_main("vit-pretrain", ["--config", str(CONFIGS / "vision/pretrain_supervised_tiny.yaml"),
                                        "--output_dir", str(tmp_path), *extra])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last
    assert not [m for m in layout.scan_members(tmp_path) if m.is_complete()]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bad_config_file_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-3\nnot_a_key: 3\n")
    result = _run_cli("recipes/pretrain_lm.py", "--config", str(bad), "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "not_a_key" in result.stderr
    assert not (tmp_path / "o").exists() or not layout.scan_members(tmp_path / "o")


@pytest.mark.slow
def test_bad_pretrained_paths(tmp_path, capsys, vit_parents, lm_parent):
    vit_ckpt = str(vit_parents["vit-supervised"].checkpoint_dir())
    cases = [
        ("vit-finetune", CONFIGS / "vision/finetune_tiny.yaml", str(tmp_path), "not a checkpoint"),
        ("vit-finetune", CONFIGS / "vision/finetune_tiny.yaml", str(lm_parent.checkpoint_dir()), "'gpt2' checkpoint"),
        ("lm-finetune", CONFIGS / "language/finetune_tiny.yaml", vit_ckpt, "'vit' checkpoint"),
        ("vit-finetune", CONFIGS / "vision/finetune_tiny.yaml",
         str(vit_parents["vit-supervised"].path), "member folder"),
    ]
    for kind, config, pretrained, needle in cases:
        code = recipe_main(kind, ["--config", str(config), "--pretrained", pretrained,
                                  "--output_dir", str(tmp_path / "ft")])
        err = capsys.readouterr().err
        assert code == 2, err[-500:]
        assert needle in err.strip().splitlines()[-1]
        assert pretrained in err


@pytest.mark.slow
@pytest.mark.multiprocess
def test_local_datasets_with_named_columns(tmp_path, vit_parents, lm_parent):
    """The path a user with Hub data takes: a `datasets` folder or files, PIL images, custom column names."""
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    from zoo.data import embedded

    images, labels, names = embedded.digits()
    pictures = [PILImage.fromarray(image).convert("RGB") for image in images[:240]]
    table = Dataset.from_dict({"img": pictures, "fine_label": labels[:240].tolist()},
                              features=Features({"img": Image(), "fine_label": ClassLabel(names=names)}))
    table.save_to_disk(str(tmp_path / "images"))
    code = recipe_main("vit-finetune", ["--config", str(CONFIGS / "vision" / "finetune_tiny.yaml"),
                                        "--pretrained", str(vit_parents["vit-supervised"].checkpoint_dir()),
                                        "--dataset", str(tmp_path / "images"), "--image_column", "img",
                                        "--label_column", "fine_label", "--output_dir", str(tmp_path / "ft"),
                                        "--num_train_epochs", "1", "--disable_tqdm", "true"])
    assert code == 0
    member = only_member(tmp_path / "ft")
    assert member.state == "complete"
    assert member.config["data"]["source"] == str(tmp_path / "images")
    assert sum(member.config["data"]["splits"].values()) == 240
    # text: a folder of CSV files read by load_dataset, with a `sentence` column
    (tmp_path / "text").mkdir()
    rng = np.random.default_rng(0)
    rows = ["sentence,label"] + [f"{'great fun' if y else 'dull mess'} number {i},{y}"
                                 for i, y in enumerate(rng.integers(0, 2, 200))]
    (tmp_path / "text" / "train.csv").write_text("\n".join(rows))
    code = recipe_main("lm-finetune", ["--config", str(CONFIGS / "language" / "finetune_tiny.yaml"),
                                       "--pretrained", str(lm_parent.checkpoint_dir()), "--dataset",
                                       str(tmp_path / "text"), "--text_column", "sentence", "--max_length", "32",
                                       "--output_dir", str(tmp_path / "lmft"), "--num_train_epochs", "1",
                                       "--disable_tqdm", "true"])
    assert code == 0
    assert only_member(tmp_path / "lmft").config["label_names"] == ["0", "1"]
    bad = _run_cli("recipes/finetune_vit.py", "--config", "recipes/configs/vision/finetune_tiny.yaml",
                   "--pretrained", str(vit_parents["vit-supervised"].checkpoint_dir()), "--dataset",
                   str(tmp_path / "images"), "--image_column", "picture", "--output_dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "picture" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_local_images_are_decoded_once_at_their_native_size(tmp_path, vit_parents, monkeypatch):
    """A Hub or local image set is decoded once per output folder (a zoo), at its own size when every image shares
    it, and reused by the next member; evaluation from the member's config reproduces its test accuracy."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    from zoo.data import PilToPixels, embedded
    from zoo.studies import evaluation

    images, labels, names = embedded.digits()
    pictures = [PILImage.fromarray(image).convert("RGB") for image in images[:200]]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    Dataset.from_dict({"image": pictures, "label": labels[:200].tolist()}, features=features).save_to_disk(
        str(tmp_path / "same"))
    mixed = pictures[:199] + [pictures[199].resize((12, 12))]  # the last image is another size
    Dataset.from_dict({"image": mixed, "label": labels[:200].tolist()}, features=features).save_to_disk(
        str(tmp_path / "mixed"))
    decoded = []
    original = PilToPixels.__call__
    monkeypatch.setattr(PilToPixels, "__call__", lambda self, batch: decoded.append(len(batch["image"])) or
                        original(self, batch))
    common = ["--config", str(CONFIGS / "vision" / "finetune_tiny.yaml"), "--num_train_epochs", "1",
              "--pretrained", str(vit_parents["vit-supervised"].checkpoint_dir()), "--disable_tqdm", "true"]
    for lr in ("1e-3", "2e-3"):
        assert recipe_main("vit-finetune", [*common, "--dataset", str(tmp_path / "same"), "--learning_rate", lr,
                                            "--output_dir", str(tmp_path / "zoo")]) == 0
        if lr == "1e-3":
            assert sum(decoded) == 200  # every image once, in the first member
    assert sum(decoded) == 200  # the second member decoded nothing
    caches = list((tmp_path / "zoo" / ".cache").glob("images-*"))
    assert len(caches) == 1
    members = layout.scan_members(tmp_path / "zoo")
    assert len(members) == 2 and all(m.state == "complete" for m in members)
    size = members[0].config["data"]["stored_size"]
    assert size == 8 < members[0].config["data"]["image_size"]  # the digits' own 8x8, resized on the device
    tasks = evaluation.TaskCache()
    scores = evaluation.evaluate_members(members, tasks, progress=False)
    for member in members:  # evaluation decodes per batch at the recorded size: the same pixels, the same metrics
        assert scores[member.relpath]["test_acc"] == pytest.approx(member.last_result["test_acc"], abs=1e-6)
    # images of different sizes are stored at the model's size
    assert recipe_main("vit-finetune", [*common, "--dataset", str(tmp_path / "mixed"),
                                        "--output_dir", str(tmp_path / "mixed_zoo")]) == 0
    member = only_member(tmp_path / "mixed_zoo")
    assert member.state == "complete"
    assert member.config["data"]["stored_size"] == member.config["data"]["image_size"]


@pytest.mark.timeout(600)
@pytest.mark.slow
@pytest.mark.multiprocess
def test_accelerate_launch(tmp_path):
    accelerate = str(Path(sys.executable).parent / "accelerate")
    result = subprocess.run([accelerate, "launch", "--config_file", "recipes/accelerate_configs/cpu.yaml",
                             "recipes/pretrain_lm.py", "--config", "recipes/configs/language/pretrain_tiny.yaml",
                             "--output_dir", str(tmp_path), *SMALL_LM, "--num_train_epochs", "1"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    member = only_member(tmp_path)
    assert member.state == "complete" and member.checkpoints == [0, 1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_prepare_data_dump_round_trip(tmp_path, vit_parents):
    parent = str(vit_parents["vit-supervised"].checkpoint_dir())
    dump = tmp_path / "digits"
    result = _run_cli("recipes/prepare_data.py", "vit-finetune", "--config",
                      "recipes/configs/vision/finetune_tiny.yaml", "--pretrained", parent, "--max_train_samples", "128",
                      "--dump", str(dump))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (dump / "zoo_data.json").is_file() and (dump / "dataset_dict.json").is_file()
    from zoo.data import load_dump

    task = load_dump(dump)
    assert len(task.splits["train"]) == 128 and task.label_names == [str(i) for i in range(10)]
    assert task.splits["train"][0]["pixel_values"].dtype.name == "uint8"
    code = recipe_main("vit-finetune", ["--config", str(CONFIGS / "vision" / "finetune_tiny.yaml"), "--pretrained",
                                        parent, "--dataset_dump", str(dump), "--output_dir", str(tmp_path / "ft"),
                                        "--num_train_epochs", "1", "--disable_tqdm", "true"])
    assert code == 0
    assert only_member(tmp_path / "ft").config["data"]["splits"]["train"] == 128


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_member_folder_made_with_another_config_is_refused(vit_parents):
    member = vit_parents["vit-supervised"]
    before = (member.path / "config.json").read_text()
    result = _run_cli("recipes/pretrain_vit.py", "--config", "recipes/configs/vision/pretrain_supervised_tiny.yaml",
                      *SMALL_VISION, "--output_dir", str(member.path.parent), "--label_smoothing", "0.3")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "label_smoothing=0.1" in last and "0.3" in last and str(member.path) in last
    assert (member.path / "config.json").read_text() == before
    assert layout.load_member(member.path).is_complete()


@pytest.mark.slow
def test_weights_do_not_depend_on_where_an_earlier_run_was_killed(tmp_path):
    """A rerun that skips the epoch-0 evaluation (done before a kill, or kept when a later checkpoint was corrupted)
    trains on the same random stream as an uninterrupted run: bit-identical weights."""
    import shutil

    args = ["--config", str(CONFIGS / "vision" / "pretrain_supervised_tiny.yaml"), *SMALL_VISION,
            "--num_train_epochs", "1"]
    assert recipe_main("vit-pretrain", [*args, "--output_dir", str(tmp_path / "reference")]) == 0
    reference = only_member(tmp_path / "reference")
    expected = weights(reference.checkpoint_dir(1))
    # killed after the epoch-0 line and checkpoint, before the Trainer's first save: that is all a rerun finds
    killed = tmp_path / "killed" / reference.name
    killed.mkdir(parents=True)
    shutil.copy(reference.path / "config.json", killed)
    shutil.copytree(reference.checkpoint_dir(0), killed / layout.checkpoint_name(0))
    layout.append_result(killed, reference.results[0])
    assert recipe_main("vit-pretrain", [*args, "--output_dir", str(tmp_path / "killed")]) == 0
    rerun = only_member(tmp_path / "killed")
    assert rerun.state == "complete" and rerun.results[0] == reference.results[0]
    got = weights(rerun.checkpoint_dir(1))
    assert all((got[k] == expected[k]).all() for k in expected)
    # a complete member whose last checkpoint got corrupted is trained again, to the same weights
    shutil.copytree(reference.path, tmp_path / "corrupt" / reference.name)
    corrupt = only_member(tmp_path / "corrupt")
    with open(corrupt.checkpoint_dir(1) / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    assert layout.load_member(corrupt.path).state == "incomplete"
    assert recipe_main("vit-pretrain", [*args, "--output_dir", str(tmp_path / "corrupt")]) == 0
    got = weights(only_member(tmp_path / "corrupt").checkpoint_dir(1))
    assert all((got[k] == expected[k]).all() for k in expected)


@pytest.mark.slow
def test_provenance_records_what_bit_identical_weights_depend_on(tmp_path, vit_parents):
    """Thread count, device, world size and library versions, for recipe runs and (through the same
    `prepare_member`, with the trial's host and Ray node added) population trials."""
    import platform

    import accelerate
    import datasets
    import torch
    import transformers

    from zoo.arguments import load_yaml, parse_config
    from zoo.runs import Arguments, MemberRun

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                "datasets": datasets.__version__}
    for member in vit_parents.values():
        provenance = member.config["provenance"]
        assert provenance["torch_threads"] == torch.get_num_threads()
        assert provenance["omp_num_threads"] == os.environ.get("OMP_NUM_THREADS")
        assert provenance["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
        assert provenance["world_size"] == 1
        assert provenance["versions"] == versions
    config = dict(load_yaml(CONFIGS / "vision" / "pretrain_supervised_tiny.yaml"), max_train_samples=64,
                  max_eval_samples=32, output_dir=str(tmp_path))
    args = Arguments(*parse_config(config))
    run = MemberRun("vit-pretrain", args, config)
    run.prepare_member(args, tmp_path / "trial", {"hostname": "node-7", "ray_node_id": "abc"})
    provenance = layout.read_member_config(tmp_path / "trial")["provenance"]
    assert provenance["ray_node_id"] == "abc" and provenance["hostname"] == "node-7"
    assert provenance["world_size"] == 1 and provenance["versions"] == versions
