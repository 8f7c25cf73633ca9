"""zoo benchmark: which members it benchmarks, and why; options choosing them; unknown values refused with a hint.

The zoo is written with `zoo_factory.write_member` (tiny stock models, no training): a vision lineage of 5 finetuned
children and a language one of 4, so the modality with the most members is vision and language must be asked for.
"""

import json

import pytest
from helpers.zoo_factory import write_member

from zoo import layout
from zoo.cli import main
from zoo.studies import benchmark


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "zoo"
    vit = write_member(root, "vit_sup", "vit-supervised", {"seed": 0, "optim": "adamw"}, seed=0)
    for index in range(5):
        write_member(root, f"vit_ft_{index}", "vit-finetune",
                     {"seed": index, "optim": ["adamw", "sgd"][index % 2], "learning_rate": 0.001}, seed=10 + index,
                     parent=vit)
    lm = write_member(root, "lm", "lm-pretrain", {"seed": 0, "optim": "adamw"}, seed=20)
    for index in range(4):
        write_member(root, f"lm_ft_{index}", "lm-finetune", {"seed": index, "optim": ["adamw", "sgd"][index % 2]},
                     seed=30 + index, parent=lm)
    layout.write_zoo_file(root, {"name": "bench"}, spec_hash="0" * 16)
    return root


def run(capsys, *argv):
    code = main(["benchmark", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_population_is_printed_with_its_reason(zoo, tmp_path, capsys):
    out_file = tmp_path / "scores.json"
    code, out, _ = run(capsys, zoo, "--task", "predict-accuracy", "--out", out_file)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "benchmarking 5 finetuned classification members: vision finetuning (kind vit-finetune)"
    assert lines[1] == ("  modality vision: the one with the most finetuned classification members (vision 5, "
                        "language 4); choose another with --modality")
    assert lines[2].startswith("  stage finetuning: finetuned members first; --stage all adds")
    result = json.loads(out_file.read_text())
    assert (result["modality"], result["stages"], result["kinds"], result["members"]) == (
        "vision", ["finetuning"], ["vit-finetune"], 5)
    assert result["why"] == [line.strip() for line in lines[1:3]]
    assert "modality     vision" in out


def test_modality_stage_and_kind_choose_the_members(zoo, capsys):
    code, out, _ = run(capsys, zoo, "--task", "predict-accuracy", "--modality", "language")
    assert code == 0
    assert out.splitlines()[:2] == ["benchmarking 4 finetuned classification members: language finetuning "
                                    "(kind lm-finetune)", "  modality language: chosen with --modality"]
    everything = benchmark.benchmark(zoo, "predict-accuracy", stage="all")
    assert everything["members"] == 6 and everything["stages"] == ["pretraining", "finetuning"]
    assert everything["kinds"] == ["vit-finetune", "vit-supervised"]
    assert "stages pretraining + finetuning: chosen with --stage all" in everything["why"]
    by_kind = benchmark.benchmark(zoo, "predict-factor", "optim", kind="vit-finetune")
    assert by_kind["members"] == 5 and by_kind["kinds"] == ["vit-finetune"] and by_kind["classes"] == ["adamw", "sgd"]
    pooled = benchmark.benchmark(zoo, "predict-factor", "optim")  # the vision parent has the factor too
    assert pooled["members"] == 6 and any(why.startswith("stages pretraining + finetuning pooled") for why in
                                          pooled["why"])
    assert benchmark.benchmark(zoo, "predict-factor")["target"] == "optim"  # the default factor, as found


def test_unknown_factor_lists_factors_and_suggests(zoo, capsys):
    code, out, err = run(capsys, zoo, "--task", "predict-factor", "--factor", "optm")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["zoo benchmark: error: unknown --factor 'optm': did you mean 'optim'? "
                                        "available factors of these members: learning_rate, optim, seed"]
    code, _, err = run(capsys, zoo, "--task", "predict-factor", "--factor", "zzz", "--modality", "language")
    assert code == 2 and "did you mean" not in err and err.strip().endswith("available factors of these members: "
                                                                           "optim, seed")


def test_unknown_kind_and_too_few_name_the_choice(zoo, capsys):
    code, _, err = run(capsys, zoo, "--task", "predict-accuracy", "--kind", "vit-finetun")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown --kind 'vit-finetun': did you mean 'vit-finetune'? available kinds in this zoo: lm-finetune, " \
           "lm-pretrain, vit-finetune, vit-supervised" in err
    code, _, err = run(capsys, zoo, "--task", "predict-accuracy", "--modality", "language", "--stage", "pretraining")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "too few classification members among the language pretraining members for --task predict-accuracy: 0" \
        in err


def test_single_valued_factor_is_refused_before_reading_weights(zoo, capsys, monkeypatch):
    def no_features(members):
        raise AssertionError("weights read")

    monkeypatch.setattr(benchmark, "checkpoint_features", no_features)
    code, _, err = run(capsys, zoo, "--task", "predict-factor", "--factor", "learning_rate")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "factor 'learning_rate' takes one value (0.001) among the 5 members" in err
