"""Every member works in the stock `transformers.pipeline` for its task, loaded by path with nothing of this project
imported (tests/helpers/pipeline_worker.py, in a fresh process): image-classification (a supervised ViT parent and a
finetuned child), image-feature-extraction (the SimCLR backbone), text-generation (GPT-2 and Llama LMs), fill-mask
(BERT masked LM) and text-classification (GPT-2, Llama and BERT classifiers). A classifier's pipeline accuracy on the
raw test images or texts is its recorded test accuracy; an MLP-head member is refused by every stock classifier loader
and loads as the docs say.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import CONFIGS, ROOT

from zoo import layout
from zoo.runs import recipe_main

WORKER = ROOT / "tests" / "helpers" / "pipeline_worker.py"
QUIET = ["--disable_tqdm", "true", "--num_train_epochs", "1", "--checkpoint_every", "1"]
# trained just enough to be real members: the checks compare every test example's probabilities, not how good they are
VISION = [*QUIET, "--max_train_samples", "64", "--max_eval_samples", "64", "--per_device_train_batch_size", "32"]
SIMCLR = [*QUIET, "--max_train_samples", "32", "--max_eval_samples", "32", "--per_device_train_batch_size", "32"]
# both language families learn the reviews' words, their BPE is trained on them; one small layer
LM = [*QUIET, "--dataset", "embedded:rotten_tomatoes", "--max_train_samples", "64", "--max_eval_samples", "16",
      "--vocab_size", "400", "--block_size", "32", "--hidden_size", "32", "--num_hidden_layers", "1",
      "--intermediate_size", "64"]
CLASSIFY = [*QUIET, "--max_train_samples", "64", "--max_eval_samples", "64", "--max_length", "24"]
LONG_TEXT = " ".join(["a long and winding review of a film that goes on and on"] * 40)  # far over any max length


def _train(kind: str, config: str, out: Path, *argv: str) -> layout.MemberInfo:
    assert recipe_main(kind, ["--config", str(CONFIGS / config), "--output_dir", str(out), *argv]) == 0
    (member,) = layout.scan_members(out)
    assert member.state == "complete"
    return member


def _heldout_digest(splits) -> str:
    """`zoo.data.split_info`'s digest of the held-out labels: the rows rebuilt here are the member's own."""
    digest = hashlib.sha256()
    for name in ("validation", "test"):
        digest.update(np.asarray(splits[name]["labels"], dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def raw_test_images(member: layout.MemberInfo, folder: Path) -> dict:
    """The member's test split as the raw embedded images (before any resizing), saved for the worker."""
    from datasets import Dataset, DatasetDict

    from zoo.data import embedded, make_splits
    from zoo.studies.evaluation import data_arguments

    data_args = data_arguments(member)
    images, labels, names = getattr(embedded, data_args.dataset.split(":", 1)[1])()
    rows = DatasetDict({"train": Dataset.from_dict({"row": np.arange(len(labels)), "labels": labels})})
    splits = make_splits(rows, data_args)
    assert _heldout_digest(splits) == member.config["data"]["heldout_labels_sha256"]
    index = np.asarray(splits["test"]["row"])
    path = folder / f"{member.name}.npy"
    np.save(path, images[index])
    return {"images": str(path), "labels": labels[index].tolist(), "label_names": names}


def raw_test_texts(member: layout.MemberInfo) -> dict:
    from zoo.data import load_texts
    from zoo.studies.evaluation import data_arguments

    source, splits, names = load_texts(data_arguments(member), "embedded:rotten_tomatoes")
    return {"texts": list(splits["test"]["text"]), "labels": list(splits["test"]["labels"]), "label_names": names,
            "long_text": LONG_TEXT}


def zoo_probabilities(member: layout.MemberInfo) -> np.ndarray:
    """Test-set probabilities from the zoo's own evaluation path (the one that reproduces result.json)."""
    import torch

    from zoo.studies.evaluation import TaskCache, load_model, run_model

    outputs = run_model(load_model(member.checkpoint_dir()), TaskCache().get(member))
    return torch.softmax(torch.as_tensor(outputs["logits"]), -1).numpy()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One tiny member of every kind (the MLP head and the linear head on the supervised parent), 1 epoch each."""
    root = tmp_path_factory.mktemp("pipelines")
    supervised = _train("vit-pretrain", "vision/pretrain_supervised_tiny.yaml", root / "vit", *VISION)
    simclr = _train("vit-pretrain", "vision/pretrain_contrastive_tiny.yaml", root / "simclr", *SIMCLR)
    parent = ["--pretrained", str(supervised.checkpoint_dir())]
    linear = _train("vit-finetune", "vision/finetune_tiny.yaml", root / "linear", *parent, "--head", "linear",
                    "--learning_rate", "0.003", *VISION)
    mlp = _train("vit-finetune", "vision/finetune_tiny.yaml", root / "mlp", *parent, "--head", "mlp",
                 "--head_hidden_size", "48", "--learning_rate", "0.003", *VISION)
    gpt2 = _train("lm-pretrain", "language/pretrain_tiny.yaml", root / "gpt2", *LM)
    gpt2_cls = _train("lm-finetune", "language/finetune_tiny.yaml", root / "gpt2_cls",
                      "--pretrained", str(gpt2.checkpoint_dir()), *CLASSIFY)
    llama = _train("lm-pretrain", "language/pretrain_llama_tiny.yaml", root / "llama", *LM)
    llama_cls = _train("lm-finetune", "language/finetune_tiny.yaml", root / "llama_cls",
                       "--pretrained", str(llama.checkpoint_dir()), *CLASSIFY)
    bert = _train("mlm-pretrain", "language/pretrain_mlm_tiny.yaml", root / "bert", *LM)
    bert_cls = _train("mlm-finetune", "language/finetune_mlm_tiny.yaml", root / "bert_cls",
                      "--pretrained", str(bert.checkpoint_dir()), *CLASSIFY)
    return {"root": root, "supervised": supervised, "simclr": simclr, "linear": linear, "mlp": mlp, "gpt2": gpt2,
            "gpt2_cls": gpt2_cls, "llama": llama, "llama_cls": llama_cls, "bert": bert, "bert_cls": bert_cls}


@pytest.fixture(scope="module")
def report(zoo):
    """What the stock pipelines made of every member, in a process that imports nothing of this project."""
    folder = zoo["root"]
    checkpoint = {name: str(member.checkpoint_dir()) for name, member in zoo.items() if name != "root"}
    jobs = {
        "supervised": {"task": "image_classification", "checkpoint": checkpoint["supervised"],
                       **raw_test_images(zoo["supervised"], folder)},
        "linear": {"task": "image_classification", "checkpoint": checkpoint["linear"],
                   **raw_test_images(zoo["linear"], folder)},
        "mlp": {"task": "mlp_head", "checkpoint": checkpoint["mlp"], **raw_test_images(zoo["mlp"], folder)},
        "simclr": {"task": "feature_extraction", "checkpoint": checkpoint["simclr"],
                   **raw_test_images(zoo["simclr"], folder)},
        "gpt2_cls": {"task": "text_classification", "checkpoint": checkpoint["gpt2_cls"],
                     **raw_test_texts(zoo["gpt2_cls"])},
        "bert_cls": {"task": "text_classification", "checkpoint": checkpoint["bert_cls"],
                     **raw_test_texts(zoo["bert_cls"])},
        "llama_cls": {"task": "text_classification", "checkpoint": checkpoint["llama_cls"],
                      **raw_test_texts(zoo["llama_cls"])},
        "llama": {"task": "text_generation", "checkpoint": checkpoint["llama"], "prompt": "the film is",
                  "long_text": LONG_TEXT},
        "bert": {"task": "fill_mask", "checkpoint": checkpoint["bert"], "text": "the film is <mask> and funny",
                 "long_text": LONG_TEXT},
        "gpt2": {"task": "text_generation", "checkpoint": checkpoint["gpt2"], "prompt": "the film is",
                 "long_text": LONG_TEXT},
    }
    (folder / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run([sys.executable, str(WORKER), str(folder / "jobs.json"), str(folder / "report.json")],
                            capture_output=True, text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((folder / "report.json").read_text())
    assert out.pop("zoo_imported") is False
    return out


def _entry(report: dict, name: str) -> dict:
    """What the worker reported for one job; a pipeline that raised fails the test with its traceback."""
    entry = report[name]
    assert "failed" not in entry, entry.get("failed")
    return entry


def _recorded_acc(member: layout.MemberInfo) -> float:
    (row,) = [row for row in member.results if row["epoch"] == member.checkpoints[-1]]
    return row["test_acc"]


def _check_classifier(member: layout.MemberInfo, entry: dict, flips: int, atol: float) -> None:
    """The pipeline's accuracy is the recorded one (to `flips` test examples), and every test example's probabilities
    are those of the zoo's own evaluation (to `atol`; up to `flips` predictions may differ)."""
    predicted, probs, expected = np.asarray(entry["predicted"]), np.asarray(entry["probs"]), zoo_probabilities(member)
    n = len(predicted)
    assert probs.shape == expected.shape and n == member.config["data"]["splits"]["test"]
    assert abs(entry["acc"] - _recorded_acc(member)) <= flips / n + 1e-9, (entry["acc"], _recorded_acc(member))
    assert np.abs(probs - expected).max() <= atol, np.abs(probs - expected).max()
    assert (predicted != expected.argmax(-1)).sum() <= flips


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_vit_parent_in_the_image_classification_pipeline(zoo, report):
    # MNIST digits at the model's size: no resizing, the pipeline's pixels are training's evaluation pixels
    _check_classifier(zoo["supervised"], _entry(report, "supervised"), flips=0, atol=1e-5)


@pytest.mark.slow
def test_finetuned_vit_in_the_image_classification_pipeline(zoo, report):
    # 8x8 digits upsampled to 28 px by PIL's bilinear filter, in the data path and in the stock PIL processor: the
    # same pixels. The torchvision processor (where torchvision is installed) rounds some pixels the other way.
    entry = _entry(report, "linear")
    exact = entry["processor"] == "ViTImageProcessorPil"
    _check_classifier(zoo["linear"], entry, flips=0 if exact else 1, atol=1e-5 if exact else 0.01)
    config = json.loads((zoo["linear"].checkpoint_dir() / "preprocessor_config.json").read_text())
    assert config["do_convert_rgb"] is True and config["size"] == {"height": 28, "width": 28}
    assert config["image_mean"] == [0.5] * 3 and config["image_std"] == [0.5] * 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2_cls", "llama_cls", "bert_cls"])
def test_text_classifiers_in_the_text_classification_pipeline(zoo, report, name):
    entry = _entry(report, name)
    _check_classifier(zoo[name], entry, flips=0, atol=1e-5)
    assert entry["model_max_length"] == 24  # the max_length it was trained and evaluated at
    assert entry["long"] in zoo[name].config["label_names"]  # a text far over the positions, truncated


@pytest.mark.slow
def test_mlp_head_member_is_refused_by_every_stock_classifier_loader(zoo, report):
    entry = _entry(report, "mlp")
    for path in ("ViTForImageClassification", "AutoModelForImageClassification", "pipeline"):
        assert entry[path]["raised"], f"{path} loaded the MLP-head member (a random linear head)"
        assert "ignore_mismatched_sizes" in entry[path]["error"] or "classifier.weight" in entry[path]["error"]
    assert entry["AutoModel"] == "ViTModel"  # the backbone still loads
    # loaded by hand as docs/loading-members.md says, the stock pipeline gives the recorded accuracy
    exact = entry["by_hand"]["processor"] == "ViTImageProcessorPil"  # see the linear head's test
    _check_classifier(zoo["mlp"], entry["by_hand"], flips=0 if exact else 1, atol=1e-5 if exact else 0.01)
    from safetensors import safe_open

    with safe_open(str(zoo["mlp"].checkpoint_dir() / "model.safetensors"), "pt") as handle:
        shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys() if key.startswith("classifier")}
    assert shapes == {"classifier.weight": [48, 64], "classifier.bias": [48], "classifier.out.weight": [10, 48],
                      "classifier.out.bias": [10]}


@pytest.mark.slow
def test_mlp_head_loads_with_zoo_in_both_layouts(zoo, tmp_path):
    """`load_member_model` reads the MLP head in both layouts a checkpoint may hold: `classifier` and
    `classifier.out`, or the `torch.nn.Sequential` keys `classifier.0` and `classifier.2`."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from zoo.models import MLPHead, load_member_model

    checkpoint = zoo["mlp"].checkpoint_dir()
    state = load_file(str(checkpoint / "model.safetensors"))
    renames = {"classifier.weight": "classifier.0.weight", "classifier.bias": "classifier.0.bias",
               "classifier.out.weight": "classifier.2.weight", "classifier.out.bias": "classifier.2.bias"}
    shutil.copy2(checkpoint / "config.json", tmp_path / "config.json")
    save_file({renames.get(key, key): value for key, value in state.items()}, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    pixels = torch.randn(3, 3, 28, 28)
    new, old = load_member_model(checkpoint), load_member_model(tmp_path)
    assert isinstance(new.classifier, MLPHead) and isinstance(old.classifier, MLPHead)
    with torch.no_grad():
        assert torch.equal(new(pixel_values=pixels).logits, old(pixel_values=pixels).logits)
    # and a module state in the Sequential layout (as a Trainer state may hold it) loads strictly
    head = MLPHead(64, 48, 10)
    head.load_state_dict({"0.weight": state["classifier.weight"], "0.bias": state["classifier.bias"],
                          "2.weight": state["classifier.out.weight"], "2.bias": state["classifier.out.bias"]})
    assert torch.equal(head.out.weight, state["classifier.out.weight"])


def test_mlp_head_as_wide_as_the_labels_is_refused_in_one_line(tmp_path, capsys):
    """With as many hidden units as labels the hidden layer would pass for a linear head: refused before anything
    is read (the embedded digits have 10 labels), naming the key."""
    code = recipe_main("vit-finetune", ["--config", str(CONFIGS / "vision" / "finetune_tiny.yaml"),
                                        "--pretrained", str(tmp_path), "--output_dir", str(tmp_path / "out"),
                                        "--head", "mlp", "--head_hidden_size", "10"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "head_hidden_size 10 equals the number of labels" in err[0], err


@pytest.mark.slow
def test_simclr_backbone_in_the_image_feature_extraction_pipeline(report):
    entry = _entry(report, "simclr")
    assert entry["model"] == "ViTModel"
    assert entry["shape"] == [1, 1 + (28 // 7) ** 2, 64]  # CLS + 16 patches, hidden size 64
    assert entry["finite"] and entry["differ"]


@pytest.mark.slow
def test_bert_in_the_fill_mask_pipeline(report):
    entry = _entry(report, "bert")
    assert entry["model"] == "BertForMaskedLM"
    assert entry["n"] == 5 and entry["long_n"] == 5
    assert entry["scores"] == sorted(entry["scores"], reverse=True) and 0 < sum(entry["scores"]) <= 1 + 1e-6
    assert entry["model_max_length"] == 32  # block_size: its positions


@pytest.mark.slow
@pytest.mark.parametrize("name,model", [("gpt2", "GPT2LMHeadModel"), ("llama", "LlamaForCausalLM")])
def test_causal_lms_in_the_text_generation_pipeline(report, name, model):
    entry = _entry(report, name)
    assert entry["model"] == model
    assert entry["greedy"].startswith("the film is") and len(entry["greedy"]) > len("the film is")
    assert entry["model_max_length"] == 32 and entry["padding_side"] == "left"
    # the pipeline's default asks 256 new tokens; generation_config.json stops at the 32 positions
    assert entry["prompt_tokens"] < entry["default_tokens"] <= 32
    # a prompt far over the positions, with the pipeline's `handle_long_generation="hole"`: cut to fit
    assert entry["long_tokens"] == 32
