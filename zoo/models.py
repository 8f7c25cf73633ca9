"""Stock Hugging Face models for zoo members: new models of a family, classifiers from a parent, initialisation
schemes, heads, loading and saving.

Every saved checkpoint is a stock class of its family (`zoo.families`), so `AutoModel.from_pretrained` loads it with
no code from this project. An MLP head (`MLPHead`, described in the model config's `zoo_head`) has no stock class:
it is stored so that every stock classifier loader refuses it loudly (`classifier.weight` is its hidden layer, whose
shape differs from a linear head's) and `load_member_model` rebuilds it (docs/loading-members.md).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from zoo import families
from zoo.arguments import HEADS, INIT_SCHEMES
from zoo.kinds import check_mlp_head


class CheckpointError(ValueError):
    """A path that is not a checkpoint, or a checkpoint of the wrong architecture."""


def apply_init(model: nn.Module, scheme: str, std: float = 0.02) -> None:
    """Re-initialise every linear (and patch-embedding conv) weight with `scheme`; biases become zero."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init {scheme!r} is not one of {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            weight = module.weight
            if scheme == "kaiming_normal":
                nn.init.kaiming_normal_(weight, nonlinearity="relu")
            elif scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(weight, nonlinearity="relu")
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(weight)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(weight)
            else:
                nn.init.normal_(weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _set_labels(config, num_labels: int, label_names: list[str] | None) -> None:
    names = label_names or [str(i) for i in range(num_labels)]
    config.num_labels = num_labels
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}


def new_model(family: families.Family, task: str, model_args, *, tokenizer=None, positions: int = 0,
              num_labels: int = 0, label_names: list[str] | None = None, **model_kwargs) -> nn.Module:
    """A freshly initialised model of `family` for `task`, sized by the recipe (positions: a language model's)."""
    config = family.build_config(model_args, tokenizer=tokenizer, positions=positions)
    config._attn_implementation = model_args.attn_implementation
    if num_labels:
        _set_labels(config, num_labels, label_names)
    model = family.model_class(task)(config, **model_kwargs)
    if positions and model.can_generate():
        # Generation stops at the model's positions (saved in generation_config.json): `pipeline("text-generation")`
        # otherwise asks for 256 new tokens and runs past the position table.
        model.generation_config.max_length = positions
    apply_init(model, model_args.init, model_args.init_std)
    return model


class MLPHead(nn.Linear):
    """Linear -> GELU -> Linear on the CLS token, laid out so that no stock loader mistakes it for a linear head.

    No stock vision classifier of transformers has this head, so its checkpoint cannot be one that stock classes load
    exactly. Instead the hidden layer is this module's own `weight`/`bias` (saved as `classifier.weight`, shape
    [hidden, in_features]) and the output layer is `out` (`classifier.out.*`): `ViTForImageClassification`, its Auto
    class and `pipeline("image-classification")` expect `classifier.weight` of shape [num_labels, in_features] and
    refuse the checkpoint with a size-mismatch error, instead of silently starting a random linear head. The two
    shapes differ because `make_head` refuses a hidden size equal to the number of labels. The parameters are
    created in the order of an `nn.Sequential(Linear, GELU, Linear)` head (same initial weights for a seed),
    and its state-dict keys (`0.*`, `2.*`, the `nn.Sequential` layout) load too.
    """

    OLD_KEYS = (("0.", ""), ("2.", "out."))  # nn.Sequential layout -> this layout

    def __init__(self, in_features: int, hidden: int, num_labels: int):
        super().__init__(in_features, hidden)
        self.act = nn.GELU()
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(super().forward(features)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self.OLD_KEYS:
            for name in ("weight", "bias"):
                if prefix + old + name in state_dict and prefix + new + name not in state_dict:
                    state_dict[prefix + new + name] = state_dict.pop(prefix + old + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def make_head(kind: str, in_features: int, num_labels: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_labels)
    if kind == "mlp":
        check_mlp_head(hidden, num_labels)
        return MLPHead(in_features, hidden, num_labels)
    raise ValueError(f"head {kind!r} is not one of {', '.join(HEADS)}")


def read_checkpoint_config(path: str | Path, expected: tuple[str, ...], recipe: str) -> dict[str, Any]:
    """The model config of a checkpoint folder, checked to be one of the `expected` model types."""
    path = Path(path)
    config_file = path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if str(config.get("format", "")).startswith("transformer-zoo/member"):
        raise CheckpointError(f"--pretrained {path}: a member folder, not a checkpoint; pick one of its "
                              "checkpoint_* folders")
    if not path.is_dir() or not config_file.is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(f"--pretrained {path}: not a checkpoint folder (needs config.json and "
                              "model.safetensors, e.g. <member>/checkpoint_000004)")
    if config.get("model_type") not in expected:
        raise CheckpointError(f"--pretrained {path}: a {config.get('model_type')!r} checkpoint, but {recipe} "
                              f"needs {' or '.join(expected)}")
    return config


def load_pretrained(model_class, checkpoint: str | Path, **kwargs) -> PreTrainedModel:
    """`model_class.from_pretrained` of a local checkpoint, with the layers' stock torch code.

    transformers may swap layers for kernels downloaded from the Hub at load time (`use_kernels`); a member runs
    no code fetched at run time, and its arithmetic must not depend on what the Hub serves that day.
    """
    with no_progress_bars():
        return model_class.from_pretrained(str(checkpoint), use_kernels=False, **kwargs)


def save_pretrained(model, folder: str | Path) -> None:
    """`save_pretrained` of a model (or processor) into a checkpoint folder, without a progress bar per save."""
    with no_progress_bars():
        model.save_pretrained(str(folder))


@contextmanager
def no_progress_bars():
    """transformers draws a bar for every load and save of a tiny checkpoint: noise in a zoo's progress lines."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def classifier_from_parent(family: families.Family, task: str, pretrained: str | Path, num_labels: int,
                           label_names: list[str], *, tokenizer=None, head: str = "linear", head_hidden: int = 128,
                           freeze_encoder: bool = False, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """The family's classifier for `task` with the parent checkpoint's backbone and a new head."""
    if family.extra.get("classifier_from_backbone"):
        model = _classifier_around_backbone(family, task, pretrained, num_labels, label_names, head, head_hidden)
    else:
        with _quiet_loading():  # the parent's head is dropped and the new one is missing, on purpose
            model = load_pretrained(
                family.model_class(task), pretrained, num_labels=num_labels, id2label=dict(enumerate(label_names)),
                label2id={name: i for i, name in enumerate(label_names)}, attn_implementation=attn_implementation,
                **({"pad_token_id": tokenizer.pad_token_id} if tokenizer is not None else {}))
        model.config.zoo_head = {"type": "linear", "hidden_size": None}
    if freeze_encoder:
        _freeze_encoder(model, family)
    return model


def _classifier_around_backbone(family, task, pretrained, num_labels, label_names, head, head_hidden):
    """A new classifier whose backbone is the parent's (a parent may have saved its backbone only)."""
    with _quiet_loading():  # the parent's head is dropped on purpose
        backbone = load_pretrained(family.model_class("backbone"), pretrained,
                                   **family.extra.get("backbone_kwargs", {}))
    config = backbone.config
    _set_labels(config, num_labels, label_names)
    config.architectures = [family.class_name(task)]
    model = family.model_class(task)(config)
    getattr(model, family.encoder_attribute).load_state_dict(backbone.state_dict())
    setattr(model, family.head_module, make_head(head, config.hidden_size, num_labels, head_hidden))
    config.zoo_head = {"type": head, "hidden_size": head_hidden if head == "mlp" else None}
    return model


def _freeze_encoder(model, family: families.Family) -> None:
    """Train the head only (and the backbone modules a classifier adds, e.g. BERT's pooler)."""
    encoder = getattr(model, family.encoder_attribute)
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    for name in family.new_in_classifier:
        for parameter in getattr(encoder, name).parameters():
            parameter.requires_grad_(True)


@contextmanager
def _quiet_loading():
    """Silence transformers' missing/unexpected-weights report for loads that drop or add a head on purpose."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# ---------------------------------------------------------------- saving and loading members


def stock_model(model: nn.Module) -> PreTrainedModel:
    """The part of a training model that a member checkpoint stores (a training wrapper names it `saved_model`:
    the backbone of a SimCLR model)."""
    return getattr(model, "saved_model", model)


def load_member_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> PreTrainedModel:
    """Load a member checkpoint for evaluation, with its MLP head when it has one (no custom code needed)."""
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    checkpoint = Path(checkpoint)
    config = AutoConfig.from_pretrained(str(checkpoint))
    architecture = (config.architectures or [""])[0]
    head = getattr(config, "zoo_head", None) or {}
    model_class = getattr(transformers, architecture, None) if architecture.isidentifier() else None
    if model_class is None or not issubclass(model_class, PreTrainedModel):
        model_class = AutoModel  # a stock class this transformers lacks: the bare backbone
    if head.get("type") != "mlp":
        return load_pretrained(model_class, checkpoint).to(device).eval()
    # Stock loading refuses the MLP head (or, for the `classifier.0/2` layout of older zoos, starts a fresh linear
    # one): load the rest with the head's mismatch allowed, then put the MLP back from the file.
    with _quiet_loading():
        model = load_pretrained(model_class, checkpoint, ignore_mismatched_sizes=True)
    family = families.of_architecture(architecture)
    head_module = family.head_module if family is not None else "classifier"
    setattr(model, head_module, MLPHead(config.hidden_size, head["hidden_size"], config.num_labels))
    state = load_file(str(checkpoint / "model.safetensors"))
    head_state = {k.removeprefix(f"{head_module}."): v for k, v in state.items() if k.startswith(f"{head_module}.")}
    try:
        getattr(model, head_module).load_state_dict(head_state)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint}: MLP head weights do not match its config ({err})") from None
    return model.to(device).eval()
