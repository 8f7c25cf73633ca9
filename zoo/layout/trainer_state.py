"""Removal of a member's resumable Trainer state, kept under `<zoo>/.trainer_state/` (see `trainer_state_dir`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .locks import check_writer
from .names import TRAINER_STATE_DIR


def remove_trainer_state(state_dir: str | Path) -> None:
    """Delete a member's Trainer state and the folders it leaves empty, up to and including `.trainer_state`."""
    check_writer()
    state_dir = Path(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    top = next((p for p in state_dir.parents if p.name == TRAINER_STATE_DIR), None)
    if top is None:
        return
    for folder in [p for p in state_dir.parents if p == top or top in p.parents]:
        try:
            folder.rmdir()  # only when empty: another member's state stays
        except OSError:
            break
