"""Names and paths of the zoo layout: format tags, file names, checkpoint and member names, and where a stage's
members, a member's zoo and a member's Trainer state live."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MEMBER_FORMAT = "transformer-zoo/member/v1"
ZOO_FORMAT = "transformer-zoo/zoo/v1"
MEMBER_CONFIG = "config.json"
RESULTS = "result.json"
FAILURE = "error.json"
ZOO_FILE = "zoo.json"
WEIGHTS = "model.safetensors"
TRAINER_STATE_DIR = ".trainer_state"
STATES = ("complete", "incomplete", "failed", "pending")

_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d{6})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_UNSAFE_PREFIX = re.compile(r"[^A-Za-z0-9_.+-]+")


class LayoutError(ValueError):
    """A path or file that does not follow the zoo layout."""


def checkpoint_name(epoch: int) -> str:
    """The folder name of a checkpoint: 2 -> `checkpoint_000002`."""
    return f"checkpoint_{int(epoch):06d}"


def checkpoint_epoch(name: str) -> int | None:
    """The epoch of a checkpoint folder name, None for any other name."""
    match = _CHECKPOINT_RE.match(name)
    return int(match.group(1)) if match else None


def format_value(value: Any) -> str:
    """A short, stable, filesystem-safe rendering of one factor value (0.0001 -> '0.0001', 3e-05 -> '3e-05')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if text.endswith(".0"):
            text = text[:-2]
        return text
    return _UNSAFE.sub("-", str(value)).strip("-") or "none"


def member_name(prefix: str, factors: dict[str, Any]) -> str:
    """`sl_vit_tiny` + {seed: 42, lr: 0.001} -> `sl_vit_tiny_seed_42_lr_0.001`, in the order given."""
    parts = [_UNSAFE_PREFIX.sub("-", prefix).strip("-")]
    for key, value in factors.items():
        parts += [_UNSAFE.sub("-", str(key)), format_value(value)]
    return "_".join(parts)


def planned_checkpoints(epochs: int, every: int) -> list[int]:
    """Epochs that get a checkpoint: 0, every `every` epochs, and always the last."""
    if epochs < 0 or every < 1:
        raise LayoutError(f"epochs must be >= 0 and checkpoint_every >= 1, got {epochs} and {every}")
    return sorted({0, epochs, *range(every, epochs + 1, every)})


def zoo_stage_dir(zoo: str | Path, modality: str, stage: str, parent: str | None = None) -> Path:
    """The folder of a stage's members: `<zoo>/<modality>/<stage>/`, and under it `<parent>/` for the members
    finetuned from one parent (the registry, `zoo.kinds`, says which modalities and stages exist)."""
    for what, value in (("modality", modality), ("stage", stage), ("parent", parent or "_")):
        if not value or _UNSAFE_PREFIX.search(value) or value.strip(".") == "":
            raise LayoutError(f"{what} {value!r} is not a folder name")
    base = Path(zoo) / modality / stage
    return base / parent if parent else base


def zoo_member_dir(zoo: str | Path, modality: str, stage: str, name: str, parent: str | None = None) -> Path:
    """A member's folder in a zoo: its stage folder (see `zoo_stage_dir`) and its name."""
    return zoo_stage_dir(zoo, modality, stage, parent) / name


def zoo_root_of(member_dir: str | Path) -> Path | None:
    """The zoo folder (the nearest parent holding zoo.json) of a member folder, or None outside a zoo."""
    for folder in Path(member_dir).resolve().parents:
        if (folder / ZOO_FILE).is_file():
            return folder
    return None


def trainer_state_dir(root: str | Path, member_dir: str | Path) -> Path:
    """Where the Trainer's own resumable state of a member lives: outside the member folder."""
    root, member_dir = Path(root).resolve(), Path(member_dir).resolve()
    try:
        rel = member_dir.relative_to(root)
    except ValueError:
        rel = Path(member_dir.name)
    return root / TRAINER_STATE_DIR / rel

