"""Recipe arguments: dataclasses read by `HfArgumentParser` from a YAML config plus command-line overrides.

Importing this module loads no transformers (planning and `zoo status` stay fast): `TrainingArguments` and the
parser are imported where they are used (`ALL_ARGUMENTS` and `_Parser` are resolved on first access).

`python recipes/X.py --config c.yaml --learning_rate 3e-4`: the YAML is turned into command-line tokens placed
before the real ones, so the command line wins and both go through the same type checks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # pragma: no cover
    from transformers import TrainingArguments

INIT_SCHEMES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "normal")
HEADS = ("linear", "mlp")
OPTIMIZERS = ("adamw", "sgd")
# Short names of factors in member names: sl_vit_tiny_seed_42_lr_0.001_wd_0.0001_bs_128
ALIASES = {"learning_rate": "lr", "weight_decay": "wd", "per_device_train_batch_size": "bs", "optimizer": "opt",
           "num_train_epochs": "ep", "label_smoothing": "ls", "temperature": "temp", "head_hidden_size": "hh",
           "freeze_encoder": "frozen", "hidden_dropout": "do", "mixup_alpha": "mixup", "cutmix_alpha": "cutmix",
           "random_erasing": "re", "mlm_probability": "mlm", "architecture": "arch"}
DEFAULT_NAME_FACTORS = ("seed", "learning_rate", "weight_decay", "per_device_train_batch_size")


class ConfigError(ValueError):
    """A config key or value that a recipe cannot accept."""


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} {value!r} is not one of {', '.join(choices)}")


@dataclass
class ModelArguments:
    """Architecture and sizes of a new model (ignored by finetuning recipes, which take the parent's)."""

    architecture: str | None = field(
        default=None, metadata={"help": "architecture family of a new model (one of zoo.families that the kind "
                                "trains); default: the kind's"})
    image_size: int = field(default=28, metadata={"help": "ViT input size in pixels"})
    patch_size: int = field(default=7, metadata={"help": "ViT patch size"})
    num_channels: int = field(default=3, metadata={"help": "ViT input channels (grayscale data is expanded)"})
    hidden_size: int = field(default=64, metadata={"help": "width (ViT hidden_size, GPT-2 n_embd)"})
    num_hidden_layers: int = field(default=2, metadata={"help": "depth (ViT layers, GPT-2 n_layer)"})
    num_attention_heads: int = field(default=4, metadata={"help": "attention heads"})
    intermediate_size: int = field(default=128, metadata={"help": "MLP width (ViT intermediate_size, GPT-2 n_inner)"})
    hidden_dropout: float = field(default=0.0, metadata={"help": "dropout on hidden states / residuals"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities"})
    init: str = field(default="default", metadata={"help": "weight init of linear layers ('default': the model's "
                                                    "own)", "choices": INIT_SCHEMES})
    init_std: float = field(default=0.02, metadata={"help": "std of init=normal and of the model's own init"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager or sdpa (or flash_attention_2)"})
    vocab_size: int = field(default=4096, metadata={"help": "size of the byte-level BPE trained when offline"})

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        check_choice("init", self.init, INIT_SCHEMES)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                              f"{self.num_attention_heads}")


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "embedded:<mnist5k|digits|bbcnews|rotten_tomatoes>, a Hub dataset name, or a local "
                  "folder (load_dataset / load_from_disk); default: the recipe's embedded set"},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name of a Hub dataset"})
    dataset_dump: str | None = field(default=None, metadata={"help": "a dump written by recipes/prepare_data.py"})
    image_column: str | None = field(default=None, metadata={"help": "image column (default: image or img)"})
    text_column: str | None = field(default=None, metadata={"help": "text column (default: text or sentence)"})
    label_column: str | None = field(default=None, metadata={"help": "label column (default: label, labels, ...)"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    test_split: str | None = field(
        default=None, metadata={"help": "split to test on (default: test; carved from train when missing)"}
    )
    validation_split: str | None = field(
        default=None, metadata={"help": "held-out split for model selection (default: carved from train)"}
    )
    test_fraction: float = field(default=0.2, metadata={"help": "fraction of train held out as test when needed"})
    validation_fraction: float = field(default=0.1, metadata={"help": "fraction of train held out as validation"})
    split_seed: int = field(default=0, metadata={"help": "seed of the held-out splits (shared by a whole zoo)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "truncate train (after shuffling)"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "truncate validation and test"})
    block_size: int = field(default=64, metadata={"help": "LM pretraining: tokens per packed block"})
    max_length: int = field(default=64, metadata={"help": "text classification: max tokens per example"})
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Hub tokenizer for LM pretraining; default: train a byte-level BPE"}
    )
    image_mean: float = field(default=0.5, metadata={"help": "normalisation mean (all channels)"})
    image_std: float = field(default=0.5, metadata={"help": "normalisation std (all channels)"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for datasets.map"})


@dataclass
class ZooArguments:
    """What makes a zoo member: its name, losses, augmentation, head and optimiser."""

    member_prefix: str | None = field(default=None, metadata={"help": "name prefix, e.g. sl_vit_tiny"})
    name_factors: list[str] = field(
        default_factory=lambda: list(DEFAULT_NAME_FACTORS),
        metadata={"help": "config keys whose values name the member"},
    )
    checkpoint_every: int = field(default=1, metadata={"help": "epochs between member checkpoints"})
    mode: str = field(default="supervised", metadata={"help": "ViT pretraining: supervised or contrastive"})
    label_smoothing: float = field(default=0.0, metadata={"help": "supervised: label smoothing"})
    mixup_alpha: float = field(default=0.0, metadata={"help": "supervised: mixup Beta(alpha, alpha), 0 = off"})
    cutmix_alpha: float = field(default=0.0, metadata={"help": "supervised: cutmix Beta(alpha, alpha), 0 = off"})
    mix_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch"})
    mix_switch_prob: float = field(default=0.5, metadata={"help": "cutmix instead of mixup when both are on"})
    random_erasing: float = field(default=0.0, metadata={"help": "probability of random erasing per image"})
    crop_scale_min: float = field(default=0.35, metadata={"help": "random resized crop: min area scale"})
    hflip: bool = field(default=False, metadata={"help": "random horizontal flips (off for digits)"})
    augment: bool = field(default=True, metadata={"help": "random resized crop (+ flips) during training"})
    color_jitter: float = field(default=0.4, metadata={"help": "contrastive: colour jitter strength"})
    temperature: float = field(default=0.1, metadata={"help": "contrastive: InfoNCE temperature"})
    projection_dim: int = field(default=64, metadata={"help": "contrastive: projection output size"})
    mlm_probability: float = field(default=0.15, metadata={"help": "masked LM: fraction of tokens masked"})
    pretrained: str | None = field(default=None, metadata={"help": "finetuning: a parent member's checkpoint"})
    head: str = field(default="linear", metadata={"help": "finetuning: the new head", "choices": HEADS})
    head_hidden_size: int = field(default=128, metadata={"help": "finetuning: hidden size of the MLP head"})
    freeze_encoder: bool = field(default=False, metadata={"help": "finetuning: train the head only"})
    optimizer: str = field(default="adamw", metadata={"help": "the optimizer", "choices": OPTIMIZERS})
    momentum: float = field(default=0.9, metadata={"help": "sgd momentum"})
    fused_optimizer: bool = field(default=True, metadata={"help": "fused AdamW where the device supports it"})
    eval_metrics: list[str] = field(
        default_factory=list,
        metadata={"help": "extra test metrics, the project's `evaluate` modules: accuracy, f1, precision, recall, "
                  "matthews_correlation (f1/precision/recall macro-averaged)"},
    )

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        check_choice("head", self.head, HEADS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")


def all_arguments() -> tuple[type, ...]:
    """The four argument dataclasses, in the order of `Arguments`."""
    from transformers import TrainingArguments

    return ModelArguments, DataArguments, ZooArguments, TrainingArguments


def __getattr__(name: str):  # ALL_ARGUMENTS and _Parser import transformers on first use
    if name == "ALL_ARGUMENTS":
        return all_arguments()
    if name == "_Parser":
        return _parser_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Defaults of TrainingArguments that a zoo member needs; a config may still override them.
TRAINING_DEFAULTS: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "logging_strategy": "epoch",
    "logging_nan_inf_filter": False,
    "report_to": "none",
    "remove_unused_columns": False,
    "dataloader_drop_last": False,
    "disable_tqdm": False,
    "use_cpu": False,
}


def field_names() -> dict[str, str]:
    """Every accepted key and the dataclass it belongs to."""
    return {f.name: cls.__name__ for cls in all_arguments() for f in dataclasses.fields(cls) if f.init}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)  # <file>:<line>:<column>, as editors and compilers point
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        tabs = " (YAML indents with spaces, not tabs)" if "\\t" in problem else ""
        raise ConfigError(f"{where}: not valid YAML: {problem}{tabs}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    return data


def did_you_mean(key: str, known) -> str:
    """' (did you mean 'num_train_epochs'?)' for a near miss of a known key, else ''."""
    import difflib

    key = key.lstrip("-")
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not close:  # `num_epochs` -> `num_train_epochs`: every word of the key in one known key
        words = [w for w in key.lower().split("_") if w]
        close = sorted((k for k in known if words and all(w in k.split("_") for w in words)), key=len)[:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(config: dict[str, Any], where: str) -> None:
    known = field_names()
    for key in config:
        if key not in known:
            raise ConfigError(f"{where}: unknown config key {key!r}{did_you_mean(str(key), known)}")


def to_tokens(config: dict[str, Any]) -> list[str]:
    """{learning_rate: 0.001, name_factors: [seed, lr]} -> ['--learning_rate', '0.001', '--name_factors', ...]"""
    tokens: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        tokens.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            tokens.extend(str(item) for item in value)
        elif isinstance(value, bool):
            tokens.append(str(value).lower())
        elif isinstance(value, dict):
            import json

            tokens.append(json.dumps(value))
        else:
            tokens.append(str(value))
    return tokens


@functools.cache
def _parser_class() -> type:
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser):
        def __init__(self, dataclass_types):
            super().__init__(dataclass_types, allow_abbrev=False)  # `--learning_rat` is a typo, not a prefix

        def error(self, message: str):  # one line, non-zero exit, like argparse but without the usage block
            raise ConfigError(message)

    return _Parser


def parse_config(
    config: dict[str, Any], argv: list[str] | None = None, defaults: dict[str, Any] | None = None
) -> tuple[ModelArguments, DataArguments, ZooArguments, TrainingArguments]:
    """Recipe defaults < config dict < command-line tokens, all type-checked by HfArgumentParser."""
    check_keys(config, "config")
    merged = {**TRAINING_DEFAULTS, **(defaults or {}), **config}
    tokens = to_tokens(merged) + list(argv or [])
    parser = _parser_class()(all_arguments())
    try:
        model_args, data_args, zoo_args, training_args, rest = parser.parse_args_into_dataclasses(
            args=tokens, return_remaining_strings=True
        )
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    from zoo.metrics import UnknownMetricError, check_names

    try:
        check_names(zoo_args.eval_metrics)
    except UnknownMetricError as err:
        raise ConfigError(str(err)) from None
    if rest:
        hint = did_you_mean(rest[0], field_names()) if rest[0].startswith("--") else ""
        if hint:
            hint = hint.replace("'", "'--", 1)
        raise ConfigError(f"unknown argument {rest[0]!r}{hint}")
    return model_args, data_args, zoo_args, training_args


def parse_recipe_args(defaults: dict[str, Any] | None = None, argv: list[str] | None = None):
    """`--config file.yaml` (optional) plus overrides, as a recipe script receives them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config: dict[str, Any] = {}
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file")
        config = load_yaml(argv[index + 1])
        check_keys(config, argv[index + 1])
        del argv[index : index + 2]
    return parse_config(config, argv, defaults), config


def as_dict(*arguments: Any) -> dict[str, Any]:
    """Every field of the given dataclasses, JSON-ready (for a member's config.json)."""
    from transformers import TrainingArguments

    out: dict[str, Any] = {}
    for obj in arguments:
        if isinstance(obj, TrainingArguments):
            items = obj.to_dict()
        else:
            items = dataclasses.asdict(obj)
        for key, value in items.items():
            if key.startswith("_") or "token" in key:
                continue
            if hasattr(value, "value"):
                value = value.value
            out[key] = value
    return out


@dataclass
class Arguments:
    """The four argument groups of one member."""

    model: ModelArguments
    data: DataArguments
    zoo: ZooArguments
    training: TrainingArguments

    def parts(self) -> tuple:
        return self.model, self.data, self.zoo, self.training

    def flat(self) -> dict[str, Any]:
        return as_dict(*self.parts())

    def check(self) -> None:
        """Every value check of the four groups (values set after parsing, e.g. a trial's, included)."""
        self.model.check()
        self.zoo.check()
        epochs = self.training.num_train_epochs
        if epochs != int(epochs) or epochs < 1:
            raise ConfigError(f"num_train_epochs must be a whole number >= 1, got {epochs}")
        if self.training.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.training.learning_rate}")
        flat = self.flat()
        for key in self.zoo.name_factors:
            if key not in flat:
                raise ConfigError(f"name_factors: unknown config key {key!r}")

    def with_params(self, params: dict[str, Any]) -> Arguments:
        """A copy with `params` (a trial's values) applied to whichever group owns each key."""
        out = Arguments(*(copy.deepcopy(part) for part in self.parts()))
        for key, value in params.items():
            part = next((p for p in out.parts() if any(f.name == key for f in dataclasses.fields(p))), None)
            if part is None:
                raise ConfigError(f"unknown config key {key!r}")
            setattr(part, key, _coerce(getattr(part, key), value, key))
        out.model.check()
        out.zoo.check()
        apply_optimizer(out.training, out.zoo)  # `optimizer` decides the Trainer's `optim`
        return out


def _coerce(old: Any, value: Any, key: str) -> Any:
    """A YAML value in the type of the field it replaces (PyYAML reads `1e-3` as text, for instance)."""
    if not isinstance(value, str) or old is None or isinstance(old, str):
        return value
    try:
        if isinstance(old, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(old, (int, float)):
            number = float(value)
            return int(number) if isinstance(old, int) and number.is_integer() else number
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not a valid {type(old).__name__}") from None
    return value


def apply_optimizer(training: TrainingArguments, zoo: ZooArguments) -> None:
    """The Trainer's `optim` (and its arguments) for the member's `optimizer`."""
    import torch
    from transformers.training_args import OptimizerNames

    if zoo.optimizer == "sgd":
        training.optim, training.optim_args = OptimizerNames("sgd"), f"momentum={zoo.momentum}"
    else:
        fused = zoo.fused_optimizer and torch.cuda.is_available()
        training.optim, training.optim_args = OptimizerNames("adamw_torch_fused" if fused else "adamw_torch"), None
