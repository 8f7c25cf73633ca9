"""Recipe arguments: unknown keys suggest the nearest one, metrics are the package's own evaluate modules, a trial's
grid values take their fields' types."""

import pytest
import yaml

from zoo.arguments import ConfigError, parse_config
from zoo.cli import main as zoo_main


def test_unknown_keys_suggest_the_nearest_one(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown argument '--num_epochs' \(did you mean '--num_train_epochs'\?\)"):
        parse_config({}, ["--num_epochs", "3"])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {"pretraining": {
        "fixed": {"learning_rat": 0.1}, "grid": {"seed": [1]}}}}))
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo")]) == 2
    assert "did you mean 'learning_rate'?" in capsys.readouterr().err


def test_unknown_metrics_are_a_config_error():
    with pytest.raises(ConfigError, match="eval_metrics: unknown metric 'glue'.*available: accuracy, f1"):
        parse_config({"eval_metrics": ["glue"]})
    with pytest.raises(ConfigError, match="unknown metric 'someone/remote_code'"):
        parse_config({}, ["--eval_metrics", "accuracy", "someone/remote_code"])


def test_metrics_are_the_packages_own_evaluate_modules(monkeypatch):
    import numpy as np
    from transformers import EvalPrediction

    from zoo.runs import _load_extra_metrics
    from zoo.training import accuracy_metrics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metrics = _load_extra_metrics(["accuracy", "f1", "matthews_correlation"])
    predictions, labels = np.array([0, 1, 2, 1, 0]), np.array([0, 1, 1, 1, -100])
    out = accuracy_metrics(metrics)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert out["acc"] == out["accuracy"] == 0.75
    assert 0 < out["f1"] < 1 and 0 < out["matthews_correlation"] < 1


def test_trial_values_take_their_fields_types():
    """Grid values arrive from YAML (where `1e-3` is text); a trial's arguments get the fields' types."""
    from zoo.arguments import ConfigError, parse_config
    from zoo.runs import Arguments

    args = Arguments(*parse_config({"output_dir": "/tmp/unused"}))
    trial = args.with_params({"learning_rate": "1e-3", "augment": "false", "seed": "3", "optimizer": "sgd"})
    assert trial.training.learning_rate == 0.001 and trial.zoo.augment is False and trial.training.seed == 3
    assert trial.training.optim == "sgd" and args.training.optim != "sgd"  # the base stays as it was
    with pytest.raises(ConfigError, match="learning_rate"):
        args.with_params({"learning_rate": "fast"})
