"""Config keys that only some kinds read (see zoo.models, zoo.training, zoo.data), as a table of the registry.

A grid over one of them in a stage of another kind makes members that differ in name only: `check_keys_read`
refuses it. Keys missing from the table are read by every kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo import kinds
from zoo.arguments import ConfigError


@dataclass(frozen=True)
class Readers:
    """The kinds that read some config keys: those of `modality`, `stage` and `objective` (None: any)."""

    description: str  # for messages: "vision pretraining (...)"
    modality: str | None = None
    stage: str | None = None
    objective: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in (None, *kinds.MODALITIES) or self.stage not in (None, *kinds.STAGES):
            raise ValueError(f"{self.description}: modality/stage must be in {kinds.MODALITIES}/{kinds.STAGES}")

    def read(self, kind: kinds.MemberKind) -> bool:
        return (self.modality in (None, kind.modality) and self.stage in (None, kind.stage)
                and self.objective in (None, kind.objective))


_TABLE: tuple[tuple[Readers, tuple[str, ...]], ...] = (
    (Readers("vision kinds", modality="vision"),
     ("label_smoothing", "mixup_alpha", "cutmix_alpha", "mix_prob", "mix_switch_prob", "random_erasing",
      "crop_scale_min", "hflip", "augment", "image_column", "image_mean", "image_std")),
    (Readers("vision pretraining (a finetuned ViT takes its parent's size)", "vision", kinds.PRETRAINING),
     ("mode", "color_jitter", "temperature", "projection_dim", "image_size", "patch_size", "num_channels")),
    (Readers("pretraining kinds (a finetuned member takes its parent's architecture)", stage=kinds.PRETRAINING),
     ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_dropout",
      "attention_dropout", "init", "init_std")),
    (Readers("finetuning kinds", stage=kinds.FINETUNING), ("freeze_encoder",)),
    (Readers("vision finetuning", "vision", kinds.FINETUNING), ("head", "head_hidden_size")),
    (Readers("language kinds", modality="language"), ("text_column",)),
    (Readers("language pretraining (a finetuned member takes its parent's tokenizer)", "language",
             kinds.PRETRAINING), ("block_size", "tokenizer_name", "vocab_size")),
    (Readers("language finetuning", "language", kinds.FINETUNING), ("max_length",)),
    (Readers("masked-LM pretraining", stage=kinds.PRETRAINING, objective="masked_lm"), ("mlm_probability",)),
    (Readers("pretraining kinds (a finetuned member takes its parent's)", stage=kinds.PRETRAINING),
     ("architecture",)),
)

READ_BY: dict[str, Readers] = {key: readers for readers, keys in _TABLE for key in keys}


def check_keys_read(where: str, kind: kinds.MemberKind, section: dict[str, Any]) -> None:
    """Refuse a grid (or Optuna range) over a key that the stage's kind never reads."""
    groups = section.get("groups") if isinstance(section.get("groups"), list) else [section]
    varied = [(f"{where}.ranges", key) for key in section.get("ranges") or {}]
    for number, group in enumerate(groups):
        grid = group.get("grid") if isinstance(group, dict) else None
        gwhere = f"{where}.groups[{number}].grid" if "groups" in section else f"{where}.grid"
        varied += [(gwhere, key) for key in (grid if isinstance(grid, dict) else {})]
    for place, key in varied:
        readers = READ_BY.get(key)
        if readers is not None and not readers.read(kind):
            raise ConfigError(f"{place}.{key}: {kind.name} members ignore {key!r} (read by {readers.description} "
                              f"only): each value would make the same member under another name; remove it from "
                              "the stage")
