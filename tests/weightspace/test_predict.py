"""zoo.weightspace.predict: the flat MLP and the token transformer train a few steps on a tiny zoo and return
finite scores, the same for the same seed; the members they learn from; recipes/weightspace_predict_accuracy.py
(its --help, and one run that prints the table).

The zoo is `helpers.zoo_factory.write_tiny_zoo` (stock ViT and GPT-2 configs, random weights, no training): the
ViTs report test_acc as their metric, the GPT-2 language models test_perplexity.
"""

import importlib.util
import math

import pytest
import torch
from helpers.paths import ROOT
from helpers.zoo_factory import write_tiny_zoo

from zoo.weightspace import LocalZoo
from zoo.weightspace.predict import (
    TrainingSettings,
    flat_population,
    predict_from_flat,
    predict_from_tokens,
    tokens_population,
)
from zoo.weightspace.predictors import random_windows

MEMBERS = 24  # 11 ViT and 11 GPT-2 pretraining members, 2 finetuned ViT children
FEW_STEPS = TrainingSettings(epochs=2, batch_size=8)
SCRIPT = ROOT / "recipes" / "weightspace_predict_accuracy.py"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The tiny zoo, shared by this module's tests: each writes the same default splits.json and statistics."""
    root = tmp_path_factory.mktemp("predict") / "zoo"
    write_tiny_zoo(root, MEMBERS)
    return root


def _script():
    spec = importlib.util.spec_from_file_location("weightspace_predict_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_populations_are_the_members_judged_by_test_accuracy(zoo):
    flat, flat_description = flat_population(LocalZoo(zoo))
    tokens, tokens_description = tokens_population(LocalZoo(zoo))
    kinds = {member.kind for member in tokens.members()}
    assert kinds == {"vit-supervised", "vit-finetune"}  # the GPT-2s report test_perplexity
    assert len(flat.members()) == len(tokens.members()) == 13
    assert "most common tensor layout" in flat_description and "of 1 tensor layout " in tokens_description


@pytest.mark.parametrize("run", [predict_from_flat, predict_from_tokens])
def test_predictors_train_and_score_the_test_split(zoo, run):
    result = run(zoo, FEW_STEPS)
    assert math.isfinite(result.r2) and math.isfinite(result.kendall_tau) and math.isfinite(result.train_mean_r2)
    assert -1 <= result.kendall_tau <= 1
    assert result.members["train"] > 0 and result.members["test"] > 0
    assert result.checkpoints["train"] >= result.members["train"]  # every checkpoint of each member
    assert (zoo / "splits.json").is_file()


def test_the_same_seed_gives_the_same_scores(zoo):
    first, again = (predict_from_tokens(zoo, FEW_STEPS, window=16) for _ in range(2))
    assert (first.r2, first.kendall_tau) == (again.r2, again.kendall_tau)


def test_random_windows_stay_within_each_sequence():
    lengths = torch.tensor([3, 10, 7])
    index, real = random_windows(lengths, padded=10, window=5, generator=torch.Generator().manual_seed(0))
    assert index.shape == real.shape == (3, 5)
    assert real.sum(1).tolist() == [3, 5, 5]
    assert all(int(index[row][real[row]].max()) < int(lengths[row]) for row in range(3))


def test_script_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "ZOO_DIR" in out and "--epochs" in out and "--seed" in out


def test_script_prints_the_table(zoo, capsys):
    assert _script().main([str(zoo), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("MLP on flat weights", "transformer on weight tokens", "zoo benchmark statistics", "Kendall tau"):
        assert name in out
