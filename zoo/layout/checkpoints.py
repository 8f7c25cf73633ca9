"""A member's checkpoint folders: writing one atomically, listing them, and checking that one is whole."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import atomic_dir, read_json
from .names import WEIGHTS, LayoutError, checkpoint_epoch, checkpoint_name


def write_checkpoint(member_dir: str | Path, epoch: int, save: Callable[[Path], None]) -> Path:
    """Call `save(tmp_folder)` and rename the folder to `checkpoint_<epoch>` once it is complete."""
    final = Path(member_dir) / checkpoint_name(epoch)
    with atomic_dir(final) as tmp:
        save(tmp)
        if not (tmp / WEIGHTS).is_file():
            raise LayoutError(f"checkpoint for epoch {epoch} wrote no {WEIGHTS}")
    return final


def list_checkpoints(member_dir: str | Path) -> list[int]:
    """The epochs of the member's checkpoint folders, sorted."""
    member_dir = Path(member_dir)
    if not member_dir.is_dir():
        return []
    epochs = [checkpoint_epoch(item.name) for item in member_dir.iterdir() if item.is_dir()]
    return sorted(epoch for epoch in epochs if epoch is not None)


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """Parse and check a safetensors file's header without loading any tensor."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise LayoutError(f"{path}: truncated safetensors file")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise LayoutError(f"{path}: truncated safetensors header")
        try:
            header = json.loads(handle.read(header_len))
        except json.JSONDecodeError:
            raise LayoutError(f"{path}: corrupt safetensors header") from None
    end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise LayoutError(f"{path}: size {size} does not match its header ({8 + header_len + end})")
    return header


def verify_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """None when the checkpoint folder is whole, else the reason it is not."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return f"{checkpoint_dir}: missing"
    try:
        config = read_json(checkpoint_dir / "config.json")
        if "model_type" not in config:
            return f"{checkpoint_dir / 'config.json'}: no model_type"
        read_safetensors_header(checkpoint_dir / WEIGHTS)
    except (LayoutError, OSError) as err:
        return str(err)
    return None

