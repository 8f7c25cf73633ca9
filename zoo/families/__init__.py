"""Architecture families: the registry that says how a member's model is built and read.

A family (`vit`, `gpt2`, `bert`, ...) names its stock `transformers` classes per task, builds its config from
the recipe's sizes, and tells the rest of the library how its parameters are laid out: the attribute that holds the
backbone in a task model, its head modules and prefixes, the parameter prefix of its blocks, the config keys of its
dropout, the config key of its position count and the special tokens of a tokenizer trained for it. A member kind
(`zoo.kinds`) says what is trained; its family says with which model. No other module names a family.

Adding a family: a module here with one `Family(...)` registered, a YAML config under `recipes/configs/`, tests.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Tasks a family can build a model for (the kinds' `task` values, plus the bare backbone)
TASKS = ("image_classification", "contrastive", "causal_lm", "masked_lm", "sequence_classification", "backbone")


class FamilyError(ValueError):
    """An unknown architecture family, or a task a family has no model for."""


@dataclass(frozen=True)
class TokenizerScheme:
    """Special tokens of a byte-level BPE trained for a family; `template` wraps each encoded text (BERT's
    `[CLS] $A [SEP]`), and `eos_token` ends each document when a corpus is packed into blocks."""

    special_tokens: dict[str, str]
    eos_token: str
    template: tuple[str, str] | None = None  # (single, pair) TemplateProcessing patterns

    @property
    def vocabulary(self) -> list[str]:
        return list(dict.fromkeys([*self.special_tokens.values(), self.eos_token]))


@dataclass(frozen=True)
class Family:
    name: str  # the `architecture` config value
    modality: str
    model_type: str  # `model_type` in its checkpoints' config.json
    classes: dict[str, str]  # task -> stock transformers class name, or "module:Class" for a training wrapper
    build_config: Callable[..., Any]  # (model_args, **sizes) -> the transformers config of a new model
    encoder_attribute: str  # the attribute of a task model that holds the backbone (`vit`, `transformer`, ...)
    head_module: str = ""  # the classifier's head (its input is the member's representation)
    head_prefixes: tuple[str, ...] = ()  # task-head parameters (after the encoder prefix), not comparable
    layer_prefix: str = "layers"  # block i's parameters start with `<layer_prefix>.<i>.` in the backbone
    dropout_keys: tuple[str, ...] = ()  # config keys of dropout rates
    positions_key: str | None = None  # config key of the number of positions (language)
    tokenizer: TokenizerScheme | None = None
    vocabulary_head: str = ""  # the language model's head module (projects hidden states onto the vocabulary)
    new_in_classifier: tuple[str, ...] = ()  # backbone modules a classifier adds (trained with a frozen encoder)
    absent: dict[str, Any] = field(default_factory=dict)  # model arguments it has no such part for: their only value
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def class_name(self, task: str) -> str:
        if task not in self.classes:
            raise FamilyError(f"architecture {self.name!r} has no model for {task} (it has: "
                              f"{', '.join(self.classes)})")
        return self.classes[task]

    def model_class(self, task: str) -> type:
        """The class that builds this family's model for `task` (imported on use)."""
        name = self.class_name(task)
        module, _, attr = name.rpartition(":")
        return getattr(importlib.import_module(module or "transformers"), attr)

    @property
    def backbone_prefix(self) -> str:
        return f"{self.encoder_attribute}."

    def check(self, model_args) -> None:
        """Refuses model arguments this architecture has no part for (a value other than the neutral one)."""
        for key, neutral in self.absent.items():
            if getattr(model_args, key) != neutral:
                raise FamilyError(f"{key} {getattr(model_args, key)!r}: the {self.name} architecture has no such "
                                  f"part (keep {key} at {neutral!r})")

    def positions(self, config: dict[str, Any]) -> int | None:
        return config.get(self.positions_key) if self.positions_key else None


REGISTRY: dict[str, Family] = {}


def with_tasks(tasks: tuple[str, ...]) -> list[str]:
    """The families that have a model for every one of `tasks`, in registration order."""
    return [name for name, family in REGISTRY.items() if all(task in family.classes for task in tasks)]


def register(family: Family) -> Family:
    REGISTRY[family.name] = family
    return family


def get(name: str) -> Family:
    if name not in REGISTRY:
        raise FamilyError(f"architecture {name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def names() -> list[str]:
    return list(REGISTRY)


def of_model_type(model_type: str | None) -> Family | None:
    """The family of a checkpoint from its config's `model_type` (None when no family has it)."""
    return next((f for f in REGISTRY.values() if f.model_type == model_type), None)


def of_architecture(architecture: str) -> Family | None:
    """The family whose classes include a saved `config.architectures[0]`."""
    return next((f for f in REGISTRY.values() if architecture in f.classes.values()), None)


def _union(values: Callable[[Family], Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for family in REGISTRY.values() for item in values(family) if item))


def classifier_classes() -> tuple[str, ...]:
    """Saved classes whose members output class logits."""
    return _union(lambda f: [f.classes.get(t) for t in ("image_classification", "sequence_classification")])


def backbone_classes() -> tuple[str, ...]:
    """Saved bare backbones whose last hidden state is a representation."""
    return _union(lambda f: [f.classes.get("backbone")])


def head_modules() -> tuple[str, ...]:
    return _union(lambda f: [f.head_module])


def backbone_prefixes() -> tuple[str, ...]:
    return _union(lambda f: [f.backbone_prefix])


def head_prefixes() -> tuple[str, ...]:
    return _union(lambda f: f.head_prefixes)


def dropout_keys() -> tuple[str, ...]:
    return _union(lambda f: f.dropout_keys)


def layer_pattern() -> re.Pattern:
    """Matches the block index of a backbone parameter name of any family (`encoder.layer.3.` -> 3)."""
    prefixes = _union(lambda f: [f.layer_prefix])
    return re.compile(r"^(?:" + "|".join(re.escape(p) for p in prefixes) + r")\.(\d+)\.")


def discover() -> None:
    """Import every family module of this package (each registers its family); a new family is a new module.
    Modules whose name starts with `_` are shared helpers and training wrappers, imported on use."""
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


discover()
