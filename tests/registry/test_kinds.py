"""The registry of member kinds, the BERT masked-LM family it added, and the design rules it keeps."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.paths import CONFIGS, ROOT

from zoo import kinds, layout
from zoo.cli import main as zoo_main
from zoo.runs import recipe_main

SMALL_MLM = ["--max_train_samples", "30", "--max_eval_samples", "10", "--num_train_epochs", "2",
             "--checkpoint_every", "1", "--vocab_size", "512", "--block_size", "32", "--disable_tqdm", "true"]


def _zoo_modules() -> dict[str, Path]:
    return {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
            for path in sorted((ROOT / "zoo").rglob("*.py"))}


def _registry_names() -> set[str]:
    """Every name only the registries may spell out: kinds, modalities, stages and architecture families."""
    from zoo import families

    return (set(kinds.names()) | {k for kind in kinds.REGISTRY.values() for k in kind.member_kinds()}
            | set(kinds.MODALITIES) | set(kinds.STAGES) | set(families.names()))


def test_no_module_outside_the_registries_names_a_kind_modality_stage_or_family():
    names = _registry_names()
    offenders = []
    for module, path in _zoo_modules().items():
        if module.startswith(("zoo.kinds", "zoo.families")):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


def test_every_kind_is_complete():
    for kind in kinds.REGISTRY.values():
        assert (ROOT / "recipes" / kind.script).is_file(), kind.script
        assert kinds.get(kind.name) is kind
        if kinds.is_finetuning(kind.stage):
            parent = kinds.get(kind.parent_kind)
            assert kinds.is_pretraining(parent.stage) and parent.modality == kind.modality
    assert kinds.get("vit-contrastive").name == "vit-pretrain"
    with pytest.raises(kinds.KindError, match="'nosuch'"):
        kinds.get("nosuch")


@pytest.mark.parametrize("grid,needle", [
    ({"head": ["linear", "bogus"]}, "mlm-finetune members ignore 'head'"),  # BERT children have no head choice
    ({"init": ["nonsense"]}, "--init: invalid choice: 'nonsense'"),
    ({"optimizer": ["adamw", "lion"]}, "--optimizer: invalid choice: 'lion'"),
    ({"mlm_probability": [0.15, 1.5]}, "mlm_probability"),
])
def test_dry_run_refuses_bad_grid_values(tmp_path, capsys, grid, needle):
    stage = "finetuning" if "head" in grid or "optimizer" in grid else "pretraining"
    spec = {"name": "bad", "language": {
        "pretraining": {"recipe": "mlm-pretrain", "config": str(CONFIGS / "language/pretrain_mlm_tiny.yaml"),
                        "grid": {"seed": [1]}},
        "finetuning": {"recipe": "mlm-finetune", "config": str(CONFIGS / "language/finetune_mlm_tiny.yaml"),
                       "grid": {"seed": [1]}}}}
    spec["language"][stage]["grid"] = grid
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert zoo_main(["generate", str(path), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and f"language.{stage}" in err[0], err
    assert not (tmp_path / "zoo").exists()


def test_gpt2_llama_and_bert_stages_side_by_side_plan_children_of_their_own_family(capsys):
    assert zoo_main(["generate", str(CONFIGS / "zoos/quickstart_language.yaml"), "--zoo-dir", "unused",
                     "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "9 members: 3 language/pretraining, 6 language/finetuning"
    children = [line.split("/")[2:] for line in lines if "/finetuning/" in line]
    assert {tuple(p[0].split("_")[:2]) + (p[1].split("_")[1],) for p in children} == \
        {("lm", "gpt2", "gpt2"), ("lm", "llama", "llama"), ("mlm", "bert", "bert")}
    assert zoo_main(["generate", str(CONFIGS / "zoos/bert_paper.yaml"), "--zoo-dir", "unused", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "104 members: 8 language/pretraining, 96 language/finetuning"


@pytest.fixture(scope="module")
def bert_parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm")
    assert recipe_main("mlm-pretrain", ["--config", str(CONFIGS / "language" / "pretrain_mlm_tiny.yaml"),
                                        "--output_dir", str(out), *SMALL_MLM]) == 0
    members = layout.scan_members(out)
    assert len(members) == 1
    return members[0]


@pytest.mark.slow
def test_bert_masked_lm_member(bert_parent):
    member = bert_parent
    assert member.state == "complete" and member.checkpoints == [0, 1, 2]
    assert member.config["kind"] == "mlm-pretrain" and member.metric == "test_perplexity"
    rows = member.results
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_perplexity", "train_perplexity"):
        assert all(row[key] is not None for row in rows), key
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # masked-token counts: about mlm_probability of the tokens of an epoch
    assert 0 < rows[1]["samples"] < 0.3 * member.config["data"]["splits"]["train"] * 32
    tokenizer = json.loads((member.checkpoint_dir() / "tokenizer_config.json").read_text())
    assert tokenizer.get("mask_token") == "[MASK]"


@pytest.mark.slow
def test_bert_evaluation_is_repeatable(bert_parent):
    """Evaluation masks with the collator's own seed: the same checkpoint scores the same, twice."""
    from zoo.arguments import parse_config
    from zoo.runs import Arguments, MemberRun

    config = {**yaml.safe_load((CONFIGS / "language/pretrain_mlm_tiny.yaml").read_text()),
              "output_dir": str(bert_parent.path.parent), "vocab_size": 512, "block_size": 32,
              "max_train_samples": 30, "max_eval_samples": 10}
    run = MemberRun("mlm-pretrain", Arguments(*parse_config(config, defaults={"disable_tqdm": True})))
    trainer = run.trainer(run.args, None)
    first, second = trainer.evaluate()["eval_loss"], trainer.evaluate()["eval_loss"]
    assert first == second


@pytest.mark.slow
def test_bert_finetune_and_stock_loading(tmp_path, bert_parent):
    parent = bert_parent.checkpoint_dir()
    assert recipe_main("mlm-finetune", ["--config", str(CONFIGS / "language" / "finetune_mlm_tiny.yaml"),
                                        "--pretrained", str(parent), "--output_dir", str(tmp_path),
                                        "--max_train_samples", "200", "--max_eval_samples", "60",
                                        "--num_train_epochs", "1", "--max_length", "32", "--disable_tqdm", "true"]) == 0
    (child,) = layout.scan_members(tmp_path)
    assert child.state == "complete" and child.parent["member"] == bert_parent.name
    assert child.parent["kind"] == "mlm-pretrain"
    script = ("import sys\nfrom transformers import AutoModel, AutoModelForMaskedLM, "
              "AutoModelForSequenceClassification\n"
              "print(type(AutoModelForMaskedLM.from_pretrained(sys.argv[1])).__name__,"
              " type(AutoModelForSequenceClassification.from_pretrained(sys.argv[2])).__name__,"
              " type(AutoModel.from_pretrained(sys.argv[2])).__name__)")
    out = subprocess.run([sys.executable, "-c", script, str(parent), str(child.checkpoint_dir())],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["BertForMaskedLM", "BertForSequenceClassification", "BertModel"]
    # a GPT-2 finetuning recipe refuses the BERT parent in one line
    code = recipe_main("lm-finetune", ["--config", str(CONFIGS / "language" / "finetune_tiny.yaml"),
                                       "--pretrained", str(parent), "--output_dir", str(tmp_path / "x")])
    assert code == 2


@pytest.mark.slow
def test_studies_and_publishing_work_on_bert_members(tmp_path, bert_parent):
    """Soups, analysis and publishing read BERT members with no BERT-specific code outside the kinds."""
    import shutil

    zoo = tmp_path / "zoo"
    shutil.copytree(bert_parent.path, zoo / bert_parent.name)
    parent = zoo / bert_parent.name / layout.checkpoint_name(bert_parent.checkpoints[-1])
    for lr in ("1e-3", "3e-3"):
        assert recipe_main("mlm-finetune", ["--config", str(CONFIGS / "language" / "finetune_mlm_tiny.yaml"),
                                            "--pretrained", str(parent), "--output_dir", str(zoo / "children"),
                                            "--learning_rate", lr, "--max_train_samples", "120",
                                            "--max_eval_samples", "40", "--num_train_epochs", "1", "--max_length",
                                            "32", "--disable_tqdm", "true"]) == 0
    assert zoo_main(["soup", str(zoo), "--parent", bert_parent.name, "--method", "uniform",
                     "--out", str(tmp_path / "soup")]) == 0
    soup = json.loads((tmp_path / "soup" / "soup.json").read_text())
    assert len(soup["ingredients"]) == 2
    assert zoo_main(["analyze", str(zoo), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "ft_bert_tiny" in report or "mlm_bert_tiny" in report
    assert zoo_main(["publish", str(zoo), "--repo-id", "org/bert-zoo", "--local-dir", str(tmp_path / "hub")]) == 0
    assert zoo_main(["verify", str(tmp_path / "hub")]) == 0
    import pyarrow.parquet as pq

    rows = pq.read_table(next((tmp_path / "hub").rglob("members*.parquet"))).to_pylist()
    assert {row["kind"] for row in rows} == {"mlm-pretrain", "mlm-finetune"}
