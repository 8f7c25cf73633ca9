"""Stock Hugging Face models for zoo members, their initialisation schemes and heads.

Every saved checkpoint is a stock class (`ViTForImageClassification`, `ViTModel`, `GPT2LMHeadModel`,
`GPT2ForSequenceClassification`, `BertForMaskedLM`, `BertForSequenceClassification`), so `AutoModel.from_pretrained`
loads it with no code from this project. An MLP head (`MLPHead`, described in the model config's `zoo_head`) has no
stock class: it is stored so that every stock classifier loader refuses it loudly (`classifier.weight` is its hidden
layer, whose shape differs from a linear head's) and `load_member_model` rebuilds it (docs/loading-members.md).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)
from transformers.models.vit.modeling_vit import ViTPreTrainedModel

from zoo.kinds import HEADS, INIT_SCHEMES, check_mlp_head


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


def _encoder_sizes(model_args) -> dict[str, Any]:
    """Sizes and dropout in the config names that ViT and BERT share."""
    return {"hidden_size": model_args.hidden_size, "num_hidden_layers": model_args.num_hidden_layers,
            "num_attention_heads": model_args.num_attention_heads, "intermediate_size": model_args.intermediate_size,
            "hidden_dropout_prob": model_args.hidden_dropout,
            "attention_probs_dropout_prob": model_args.attention_dropout, "initializer_range": model_args.init_std}


def _check_heads(model_args) -> None:
    if model_args.hidden_size % model_args.num_attention_heads:
        raise ValueError(f"hidden_size {model_args.hidden_size} is not a multiple of num_attention_heads "
                         f"{model_args.num_attention_heads}")


# ---------------------------------------------------------------- ViT


def vit_config(model_args, num_labels: int = 0, label_names: list[str] | None = None) -> ViTConfig:
    if model_args.image_size % model_args.patch_size:
        raise ValueError(f"image_size {model_args.image_size} is not a multiple of patch_size {model_args.patch_size}")
    _check_heads(model_args)
    config = ViTConfig(image_size=model_args.image_size, patch_size=model_args.patch_size,
                       num_channels=model_args.num_channels, **_encoder_sizes(model_args))
    config._attn_implementation = model_args.attn_implementation
    if num_labels:
        _set_labels(config, num_labels, label_names)
    return config


def _set_labels(config, num_labels: int, label_names: list[str] | None) -> None:
    names = label_names or [str(i) for i in range(num_labels)]
    config.num_labels = num_labels
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}


class ViTForSimCLR(ViTPreTrainedModel):
    """A ViT backbone and a SimCLR projection head; only the backbone (`.vit`) is saved into a member."""

    def __init__(self, config: ViTConfig, projection_dim: int = 64):
        super().__init__(config)
        self.vit = ViTModel(config, add_pooling_layer=False)
        hidden = config.hidden_size
        self.projector = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, projection_dim))
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        cls = self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]
        return self.projector(cls)


def build_vit(model_args, mode: str, num_labels: int, label_names: list[str], projection_dim: int = 64) -> nn.Module:
    if mode == "supervised":
        model = ViTForImageClassification(vit_config(model_args, num_labels, label_names))
    elif mode == "contrastive":
        model = ViTForSimCLR(vit_config(model_args), projection_dim)
    else:
        raise ValueError(f"mode {mode!r} is not one of supervised, contrastive")
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


def vit_for_finetuning(pretrained: str | Path, num_labels: int, label_names: list[str], head: str,
                       head_hidden: int, freeze_encoder: bool) -> ViTForImageClassification:
    read_checkpoint_config(pretrained, ("vit",), "finetune_vit.py")
    with _quiet_loading():  # the parent's head is dropped on purpose
        backbone = load_pretrained(ViTModel, pretrained, add_pooling_layer=False)
    config = backbone.config
    _set_labels(config, num_labels, label_names)
    config.architectures = ["ViTForImageClassification"]
    model = ViTForImageClassification(config)
    model.vit.load_state_dict(backbone.state_dict())
    model.classifier = make_head(head, config.hidden_size, num_labels, head_hidden)
    config.zoo_head = {"type": head, "hidden_size": head_hidden if head == "mlp" else None}
    if freeze_encoder:
        for parameter in model.vit.parameters():
            parameter.requires_grad_(False)
    return model


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


# ---------------------------------------------------------------- GPT-2


def build_gpt2(model_args, tokenizer, n_positions: int) -> GPT2LMHeadModel:
    _check_heads(model_args)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=model_args.hidden_size,
        n_layer=model_args.num_hidden_layers,
        n_head=model_args.num_attention_heads,
        n_inner=model_args.intermediate_size,
        resid_pdrop=model_args.hidden_dropout,
        embd_pdrop=model_args.hidden_dropout,
        attn_pdrop=model_args.attention_dropout,
        initializer_range=model_args.init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # GPT-2's tanh GELU as one fused kernel: the default `gelu_new` computes the same formula in 8 small ops
        # (a fifth of a tiny GPT-2's CPU step)
        activation_function="gelu_pytorch_tanh",
    )
    config._attn_implementation = model_args.attn_implementation
    model = GPT2LMHeadModel(config)
    # Generation stops at the model's positions (saved in generation_config.json): `pipeline("text-generation")`
    # otherwise asks for 256 new tokens and runs past the position table.
    model.generation_config.max_length = n_positions
    apply_init(model, model_args.init, model_args.init_std)
    return model


def gpt2_for_classification(pretrained: str | Path, num_labels: int, label_names: list[str], tokenizer,
                            freeze_encoder: bool, attn_implementation: str = "sdpa") -> GPT2ForSequenceClassification:
    read_checkpoint_config(pretrained, ("gpt2",), "finetune_lm.py")
    with _quiet_loading():  # the new `score` head is missing from the parent on purpose
        model = load_pretrained(
            GPT2ForSequenceClassification, pretrained, num_labels=num_labels, id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)}, pad_token_id=tokenizer.pad_token_id,
            attn_implementation=attn_implementation,
        )
    model.config.zoo_head = {"type": "linear", "hidden_size": None}
    if freeze_encoder:
        for parameter in model.transformer.parameters():
            parameter.requires_grad_(False)
    return model


# ---------------------------------------------------------------- BERT


def build_bert(model_args, tokenizer, max_positions: int) -> BertForMaskedLM:
    _check_heads(model_args)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                        pad_token_id=tokenizer.pad_token_id, **_encoder_sizes(model_args))
    config._attn_implementation = model_args.attn_implementation
    model = BertForMaskedLM(config)
    apply_init(model, model_args.init, model_args.init_std)
    return model


def bert_for_classification(pretrained: str | Path, num_labels: int, label_names: list[str], freeze_encoder: bool,
                            attn_implementation: str = "sdpa") -> BertForSequenceClassification:
    read_checkpoint_config(pretrained, ("bert",), "finetune_mlm.py")
    with _quiet_loading():  # the MLM head is dropped and a pooler + classifier are new, on purpose
        model = load_pretrained(
            BertForSequenceClassification, pretrained, num_labels=num_labels, id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)}, attn_implementation=attn_implementation,
        )
    model.config.zoo_head = {"type": "linear", "hidden_size": None}
    if freeze_encoder:
        for parameter in model.bert.parameters():
            parameter.requires_grad_(False)
        for parameter in model.bert.pooler.parameters():  # the pooler is new: it trains with the head
            parameter.requires_grad_(True)
    return model


# ---------------------------------------------------------------- saving and loading members


def stock_model(model: nn.Module) -> PreTrainedModel:
    """The part of a training model that a member checkpoint stores (the backbone of a SimCLR model)."""
    return model.vit if isinstance(model, ViTForSimCLR) else model


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
    model.classifier = MLPHead(config.hidden_size, head["hidden_size"], config.num_labels)
    state = load_file(str(checkpoint / "model.safetensors"))
    head_state = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
    try:
        model.classifier.load_state_dict(head_state)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint}: MLP head weights do not match its config ({err})") from None
    return model.to(device).eval()
