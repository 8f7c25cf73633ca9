"""Per-architecture facts used by the studies (evaluation, soups, analysis, benchmark), in one place so that they can
move into the registry of member kinds: which saved architectures are classifiers, which are bare backbones, and
how their parameter names are laid out. Plain data; imports nothing.
"""

from __future__ import annotations

import re

# `config.architectures[0]` of checkpoints that output class logits (soups and accuracy need them)
CLASSIFIERS = ("ViTForImageClassification", "GPT2ForSequenceClassification")
# bare backbones whose last hidden state is a representation (behaviour comparisons use them)
BACKBONES = ("ViTModel",)
# the module of a classifier whose input is the member's representation (hooked to read features)
HEAD_MODULES = ("classifier", "score")
# name prefixes a task wrapper adds to its backbone's parameters: `vit.encoder...` is the parent's `encoder...`
WRAPPER_PREFIXES = ("vit.", "transformer.")
# parameters of task heads (not comparable across tasks), after the wrapper prefix is removed
HEAD_PREFIXES = ("classifier", "score", "lm_head", "pooler")
# the transformer block a parameter belongs to: ViT `encoder.layer.3.`, GPT-2 `h.3.`, others `layers.3.`
LAYER_PATTERN = re.compile(r"^(?:encoder\.layer|h|layers)\.(\d+)\.")
