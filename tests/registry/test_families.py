"""Architecture families: every registered family builds stock models whose parameter names the studies can read,
and the Llama-style decoders go end to end (a zoo generated with packs, souped, analysed, published, verified)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.paths import CONFIGS, ROOT

from zoo import families, kinds, layout
from zoo.arguments import ModelArguments
from zoo.cli import main as zoo_main
from zoo.models import new_model

TINY = ModelArguments(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16,
                      patch_size=8)


class _Tokenizer:
    """What a family's config builder reads of a tokenizer."""

    bos_token_id = eos_token_id = pad_token_id = 0

    def __len__(self):
        return 128


def _new(family: families.Family, task: str):
    labels = {"num_labels": 3} if task in kinds.LABELLED_OBJECTIVES else {}
    return new_model(family, task, TINY, tokenizer=_Tokenizer(), positions=16, **labels)


@pytest.mark.parametrize("name", families.names())
def test_every_family_builds_stock_models_whose_layout_the_studies_read(name):
    from zoo import architectures
    from zoo.studies.weights import canonical, is_backbone, layer_group

    family = families.get(name)
    kind_tasks = {task for kind in kinds.REGISTRY.values() if name in kind.families for task in kind.family_tasks}
    assert kind_tasks and kind_tasks <= set(family.classes) | {"backbone"}
    for task in family.classes:
        if task == "backbone":
            continue
        model = _new(family, task)
        keys = list(model.state_dict())
        assert any(k.startswith(family.backbone_prefix) for k in keys), (task, keys[:5])
        blocks = {architectures.LAYER_PATTERN.match(canonical(k)).group(1) for k in keys
                  if architectures.LAYER_PATTERN.match(canonical(k))}
        assert blocks == {"0", "1"}, (task, keys[:8])  # both blocks found, named alike across tasks
        assert all(layer_group(k) for k in keys if is_backbone(k))
        config = model.config.to_dict()
        assert any(key in config for key in family.dropout_keys)
    classifier = _new(family, "image_classification" if "image_classification" in family.classes
                      else "sequence_classification")
    assert getattr(classifier, family.head_module) is not None
    assert getattr(classifier, family.encoder_attribute) is not None


def test_a_family_refuses_a_part_it_does_not_have_and_a_kind_a_family_it_does_not_train(tmp_path, capsys):
    spec = {"name": "bad", "language": {"pretraining": {
        "recipe": "lm-pretrain", "config": str(CONFIGS / "language" / "pretrain_llama_tiny.yaml"),
        "grid": {"seed": [1]}, "fixed": {"hidden_dropout": 0.1}}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert zoo_main(["generate", str(path), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden_dropout 0.1: the llama architecture has no such part" in err[0], err
    spec["language"]["pretraining"]["fixed"] = {"architecture": "bert"}
    path.write_text(yaml.safe_dump(spec))
    assert zoo_main(["generate", str(path), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "architecture 'bert': lm-pretrain trains gpt2, llama" in err[0], err


def _llama_spec(path: Path) -> Path:
    fixed = {"num_train_epochs": 2, "checkpoint_every": 1, "max_train_samples": 60, "max_eval_samples": 20,
             "vocab_size": 512, "block_size": 32, "per_device_train_batch_size": 16}
    spec = {"name": "llama-test", "license": "apache-2.0", "resources": {"cpu": 1, "gpu": 0}, "language": {
        "pretraining": {"recipe": "lm-pretrain", "config": str(CONFIGS / "language" / "pretrain_llama_tiny.yaml"),
                        "fixed": fixed, "grid": {"seed": [1]}},
        "finetuning": {"recipe": "lm-finetune", "config": str(CONFIGS / "language" / "finetune_tiny.yaml"),
                       "fixed": {"num_train_epochs": 2, "checkpoint_every": 1, "max_train_samples": 120,
                                 "max_eval_samples": 60, "max_length": 32},
                       "grid": {"learning_rate": [1.0e-3, 3.0e-3]}, "pack": 2}}}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def llama_zoo(tmp_path_factory):
    """A Llama zoo from `zoo generate`: one pretrained parent, two children trained as one pack."""
    from helpers.processes import OwnRay

    folder = tmp_path_factory.mktemp("llama")
    spec, zoo_dir = _llama_spec(folder / "spec.yaml"), folder / "zoo"
    planned = subprocess.run([sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir),
                              "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    ray = OwnRay()
    try:
        result = subprocess.run([sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir)],
                                cwd=ROOT, capture_output=True, text=True, env=ray.env, timeout=900)
    finally:
        ray.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    return zoo_dir, planned.stdout


@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.multiprocess
def test_llama_members_are_generated_in_packs_as_planned_and_load_as_stock_llama(llama_zoo):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    zoo_dir, planned = llama_zoo
    members = layout.scan_members(zoo_dir)
    (parent,) = [m for m in members if kinds.is_pretraining(m.stage)]
    children = [m for m in members if kinds.is_finetuning(m.stage)]
    assert parent.is_complete() and len(children) == 2 and all(c.is_complete() for c in children)
    assert parent.name.startswith("lm_llama_tiny_") and all(c.name.startswith("ft_llama_tiny_") for c in children)
    assert all(m.name in planned for m in members)  # the dry run named every member as the run did
    assert {c.config["provenance"]["pack"]["size"] for c in children} == {2}
    assert all(c.config["recipe"]["architecture"] == "llama" for c in [parent, *children])
    lm = AutoModelForCausalLM.from_pretrained(str(parent.checkpoint_dir()))
    assert type(lm).__name__ == "LlamaForCausalLM" and lm.config.tie_word_embeddings
    for child in children:
        classifier = AutoModelForSequenceClassification.from_pretrained(str(child.checkpoint_dir()))
        assert type(classifier).__name__ == "LlamaForSequenceClassification"
        assert classifier.config.num_labels == child.config["num_labels"]
        assert 0.0 <= child.last_result["test_acc"] <= 1.0


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.multiprocess
def test_llama_children_soup_and_the_zoo_is_analysed(llama_zoo, tmp_path):
    from transformers import AutoModelForSequenceClassification

    zoo_dir, _ = llama_zoo
    (parent,) = [m for m in layout.scan_members(zoo_dir) if kinds.is_pretraining(m.stage)]
    soup = tmp_path / "soup"
    assert zoo_main(["soup", str(zoo_dir), "--parent", parent.name, "--method", "uniform", "--out", str(soup)]) == 0
    souped = AutoModelForSequenceClassification.from_pretrained(str(soup))
    assert type(souped).__name__ == "LlamaForSequenceClassification"
    report = tmp_path / "report"
    assert zoo_main(["analyze", str(zoo_dir), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "ft_llama_tiny" in text or "lm_llama_tiny" in text
    tables = {p.stem for p in (report / "tables").glob("*.csv")}
    assert tables, "no tables written"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.multiprocess
def test_a_llama_zoo_publishes_and_verifies(llama_zoo, tmp_path, capsys):
    zoo_dir, _ = llama_zoo
    out = tmp_path / "published"
    assert zoo_main(["publish", str(zoo_dir), "--repo-id", "org/llama-zoo", "--local-dir", str(out),
                     "--with-weights"]) == 0
    capsys.readouterr()
    datasets = [p for p in out.iterdir() if (p / "README.md").is_file() and (p / "data").is_dir()]
    assert len(datasets) == 1
    assert zoo_main(["verify", str(datasets[0])]) == 0
    weights = list((out).rglob("model.safetensors"))
    assert weights and all(layout.read_safetensors_header(w) for w in weights)
    for checkpoint in {w.parent for w in weights}:
        assert layout.read_json(checkpoint / "config.json")["model_type"] == "llama"


def test_llama_pretraining_computes_the_loss_of_its_full_logits(tmp_path):
    """The causal-LM objective's fast path (hidden states projected chunk by chunk) gives the stock model's loss."""
    from zoo.training import CausalLM

    family = families.get("llama")
    torch.manual_seed(0)
    model = _new(family, "causal_lm").eval()
    ids = torch.randint(0, 128, (3, 16))
    inputs = {"input_ids": ids, "labels": ids}
    with torch.no_grad():
        loss, _, _ = CausalLM().loss(model, inputs)
        logits = model(input_ids=ids).logits[:, :-1]
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 128), ids[:, 1:].reshape(-1))
    assert float(loss) == pytest.approx(float(reference), rel=1e-5)
