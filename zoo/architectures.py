"""Per-architecture facts used by the studies (evaluation, soups, analysis, benchmark), gathered from the registry of
member kinds (`zoo.kinds`): which saved architectures are classifiers, which are bare backbones, and how their
parameter names are laid out. A new kind's architectures appear here by registering the kind.
"""

from __future__ import annotations

import re

from zoo import kinds

# `config.architectures[0]` of checkpoints that output class logits (soups and accuracy need them)
CLASSIFIERS = kinds.classifier_architectures()
# bare backbones whose last hidden state is a representation (behaviour comparisons use them)
BACKBONES = kinds.backbone_architectures()
# the module of a classifier whose input is the member's representation (hooked to read features)
HEAD_MODULES = kinds.head_modules()
# name prefixes a task wrapper adds to its backbone's parameters: `vit.encoder...` is the parent's `encoder...`
WRAPPER_PREFIXES = kinds.backbone_prefixes()
# parameters of task heads (not comparable across tasks), after the wrapper prefix is removed
HEAD_PREFIXES = kinds.head_prefixes()
# the transformer block a parameter belongs to: ViT and BERT `encoder.layer.3.`, GPT-2 `h.3.`, others `layers.3.`
LAYER_PATTERN = re.compile(r"^(?:encoder\.layer|h|layers)\.(\d+)\.")
