"""Zoo specs the tests generate from: two tiny vision stages (`write_spec`), their pretraining stage alone
(`pretraining_spec`), one pretraining member on the recipe's own settings (`one_member_spec`)."""

from pathlib import Path

import yaml

from .paths import CONFIGS


def write_spec(path: Path, **changes) -> Path:
    """A pretraining stage of one supervised ViT and a finetuning stage of two optimizers, 2 epochs each; a change
    `a__b__c=value` sets spec["a"]["b"]["c"]."""
    spec = {
        "name": "test",
        "vision": {
            "pretraining": {
                "config": str(CONFIGS / "vision/pretrain_supervised_tiny.yaml"),
                "fixed": {"num_train_epochs": 2, "checkpoint_every": 1, "max_train_samples": 128,
                          "max_eval_samples": 64, "per_device_train_batch_size": 64},
                "grid": {"seed": [1]},
            },
            "finetuning": {
                "config": str(CONFIGS / "vision/finetune_tiny.yaml"),
                "fixed": {"num_train_epochs": 2, "checkpoint_every": 1, "max_train_samples": 128,
                          "max_eval_samples": 64},
                "grid": {"optimizer": ["adamw", "sgd"]},
            },
        },
    }
    for dotted, value in changes.items():
        node = spec
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(spec))
    return path


def pretraining_spec(path: Path, **changes) -> Path:
    """`write_spec` with the vision pretraining stage only."""
    spec = write_spec(path, **changes)
    data = yaml.safe_load(spec.read_text())
    del data["vision"]["finetuning"]
    spec.write_text(yaml.safe_dump(data))
    return spec


def one_member_spec(folder: Path) -> Path:
    """folder/spec.yaml: one supervised ViT (seed 1) with the tiny recipe's own settings."""
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {"pretraining": {
        "config": str(CONFIGS / "vision/pretrain_supervised_tiny.yaml"), "grid": {"seed": [1]}}}}))
    return spec
