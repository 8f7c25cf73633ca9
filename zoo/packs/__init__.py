"""Packs: K members of one stage trained at once, in one process, by one `PackTrainer`.

The members of a pack share their architecture (parameter shapes), data and schedule; each keeps its own
initialisation seed, data order, augmentation randomness, learning rate, weight decay, momentum and head values.

- **Stacked weights** (`stacked`): every parameter of the K members lives in one `[K, ...]` tensor, of which each
  member's stock model holds views. A step runs the K forward and backward passes as one `torch.func.vmap` over
  `functional_call` (`mode="vmap"`), or member after member on the same storage (`mode="loop"`).
- **Lanes** (`lanes`): a member's random streams; its data order, augmentation and evaluation draws are made on its
  lane, so a packed member sees the batches of its solo run (vmap draws dropout from the pack's stream).
- **Per-member optimizer** (`optimizer`): AdamW or SGD on the flat `[K, P]` storage, each member's update the one
  torch makes for it alone, with per-member gradient clipping.
- **Evaluation once per pack** (`evaluation`): each member runs its own Trainer's evaluation loop, and every
  evaluation batch's forward passes are computed once for the whole pack.
- **Failures stay local, state resumable** (`trainer`, `state`): a member whose loss is not finite is recorded as
  failed and frozen while the others go on; after every epoch the pack writes each member's results and checkpoint,
  then its own state, from which a rerun continues.
- **Grouping** (`grouping`): which members may share a pack, and its name.
"""

from zoo.packs.grouping import (
    DROPOUT_CONFIG_KEYS,
    PACK_MODES,
    PER_MEMBER_KEYS,
    group_packs,
    has_dropout,
    pack_id,
    pack_signature,
    resolve_mode,
)
from zoo.packs.lanes import Lane
from zoo.packs.optimizer import PackedOptimizer
from zoo.packs.stacked import StackedMembers
from zoo.packs.state import STATE_INFO, STATE_OPTIMIZER, STATE_WEIGHTS
from zoo.packs.trainer import PackMember, PackTrainer, train_pack

__all__ = ["DROPOUT_CONFIG_KEYS", "PACK_MODES", "PER_MEMBER_KEYS", "STATE_INFO", "STATE_OPTIMIZER", "STATE_WEIGHTS",
           "Lane", "PackMember", "PackTrainer", "PackedOptimizer", "StackedMembers", "group_packs", "has_dropout",
           "pack_id", "pack_signature", "resolve_mode", "train_pack"]
