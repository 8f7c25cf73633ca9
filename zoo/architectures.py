"""Facts about saved architectures used by the studies (evaluation, soups, analysis, benchmark), gathered from the
registry of architecture families (`zoo.families`): which saved classes are classifiers, which are bare backbones,
and how their parameter names are laid out. A new family's classes appear here by registering the family.
"""

from __future__ import annotations

from zoo import families

# `config.architectures[0]` of checkpoints that output class logits (soups and accuracy need them)
CLASSIFIERS = families.classifier_classes()
# bare backbones whose last hidden state is a representation (behaviour comparisons use them)
BACKBONES = families.backbone_classes()
# the module of a classifier whose input is the member's representation (hooked to read features)
HEAD_MODULES = families.head_modules()
# name prefixes a task wrapper adds to its backbone's parameters: `vit.encoder...` is the parent's `encoder...`
WRAPPER_PREFIXES = families.backbone_prefixes()
# parameters of task heads (not comparable across tasks), after the wrapper prefix is removed
HEAD_PREFIXES = families.head_prefixes()
# the transformer block a parameter belongs to (`encoder.layer.3.`, `h.3.`, `layers.3.`)
LAYER_PATTERN = families.layer_pattern()
