"""A pack's resumable state: after every epoch, `epoch-NNNN/` in the pack's folder holds its stacked weights, its
optimizer state and, in `pack.json`, its epoch, members, failures and lanes; only the newest is kept."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from zoo import layout
from zoo.packs.lanes import Lane
from zoo.packs.optimizer import PackedOptimizer
from zoo.packs.stacked import StackedMembers

logger = logging.getLogger("zoo")

STATE_WEIGHTS, STATE_OPTIMIZER, STATE_INFO = "weights.safetensors", "optimizer.safetensors", "pack.json"


def save_state(state_dir: Path, epoch: int, stacked: StackedMembers, optimizer: PackedOptimizer,
               members: list) -> None:
    """Write the state after `epoch` atomically, then remove the older ones. `members`: the `PackMember`s."""
    from safetensors.torch import save_file

    final = state_dir / f"epoch-{epoch:04d}"
    with layout.atomic_dir(final) as tmp:
        save_file({n: stacked.param(n).detach().contiguous() for n in stacked.names}, str(tmp / STATE_WEIGHTS))
        save_file({k: v.contiguous() for k, v in optimizer.state_tensors().items()}, str(tmp / STATE_OPTIMIZER))
        layout.atomic_write_json(tmp / STATE_INFO, {
            "epoch": epoch, "optimizer_steps": optimizer.steps,
            "members": [m.name for m in members], "failed": {m.name: m.failed for m in members if m.failed},
            "lanes": [m.lane.to_json() for m in members]})
    for old in state_dir.glob("epoch-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def load_state(state_dir: Path, stacked: StackedMembers, optimizer: PackedOptimizer,
               members: list) -> dict[str, Any] | None:
    """Load the newest complete state of this pack into the weights, the optimizer and the members' lanes and
    failures; returns its `pack.json` content, or None (nothing loaded) when there is none."""
    from safetensors.torch import load_file

    states = sorted(p for p in state_dir.glob("epoch-*") if (p / STATE_INFO).is_file())
    if not states:
        return None
    latest = states[-1]
    info = layout.read_json(latest / STATE_INFO)
    if info.get("members") != [m.name for m in members]:
        logger.warning("%s holds another pack; starting afresh", latest)
        return None
    weights = load_file(str(latest / STATE_WEIGHTS))
    with torch.no_grad():
        for name in stacked.names:
            stacked.param(name).copy_(weights[name])
    optimizer.load_state_tensors(load_file(str(latest / STATE_OPTIMIZER)), info["optimizer_steps"])
    failed = info.get("failed", {})
    for k, member in enumerate(members):
        member.lane = Lane.from_json(info["lanes"][k])
        if member.name in failed:
            member.failed = failed[member.name]
            optimizer.active[k] = False
    return info
