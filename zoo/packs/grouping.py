"""Which members may share a pack, how a pack is named, and how it runs its members (vmap or loop)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from zoo import families

# Config keys whose values may differ between the members of one pack: everything else must be equal.
PER_MEMBER_KEYS = frozenset({"seed", "learning_rate", "weight_decay", "momentum", "init", "init_std",
                             "member_prefix", "name_factors"})
PACK_MODES = ("auto", "vmap", "loop")

# dropout rates in the configs of every architecture family (zoo.families), and the generic name
DROPOUT_CONFIG_KEYS = (*families.dropout_keys(), "dropout")


def resolve_mode(mode: str, models: list[nn.Module] | None = None) -> str:
    """`auto` is vmap (faster on a GPU, and on a CPU for the quickstart's ViTs: `bench/bench_packs.py`), unless the
    members have dropout: then `loop`, where each member's dropout draws from its own lane, as when it trains alone
    (vmap draws the whole pack's dropout from one stream). A model that vmap cannot batch falls back to `loop` at
    its first step."""
    if mode not in PACK_MODES:
        raise ValueError(f"pack mode {mode!r} is not one of {', '.join(PACK_MODES)}")
    if mode == "auto":
        return "loop" if models and has_dropout(models[0]) else "vmap"
    return mode


def has_dropout(model: nn.Module) -> bool:
    """Whether training draws dropout masks: a dropout module with p > 0, or a dropout rate in the HF config (some
    attention implementations take it as a number, not a module)."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    return any(isinstance(getattr(config, key, None), (int, float)) and getattr(config, key) > 0
               for key in DROPOUT_CONFIG_KEYS)


def pack_signature(params: dict[str, Any]) -> str:
    """Members with the same signature may train in one pack (same shapes, data and schedule)."""
    shared = {k: v for k, v in params.items() if k not in PER_MEMBER_KEYS}
    return json.dumps(shared, sort_keys=True, default=str)


def group_packs(items: list, params_of, size: int) -> list[list]:
    """`items` in packs of at most `size` whose `params_of(item)` share a signature, in their given order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(pack_signature(params_of(item)), []).append(item)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), max(1, size))]


def pack_id(member_dirs: list[Path]) -> str:
    """The pack's name, from its members' folder names (in any order)."""
    digest = hashlib.sha256("\n".join(sorted(str(Path(d).name) for d in member_dirs)).encode()).hexdigest()
    return f"pack-{digest[:12]}"


def check_same_schedule(members: list) -> None:
    """Refuse members (each with `.name` and `.args`) that differ in more than their per-member keys."""
    first = members[0]
    ours = first.args.flat()
    for member in members[1:]:
        theirs = member.args.flat()
        if pack_signature(theirs) != pack_signature(ours):
            key = next(k for k in sorted(ours) if k not in PER_MEMBER_KEYS and ours.get(k) != theirs.get(k))
            raise ValueError(f"{member.name} cannot share a pack with {first.name}: {key} differs")
    if first.args.training.gradient_accumulation_steps != 1:
        raise ValueError("a pack trains with gradient_accumulation_steps 1")
