"""The on-disk format of zoo members and zoos.

This package is the single owner of names, paths and file formats; every other part of `zoo`
reads and writes members through it. It imports nothing else of `zoo`.

A member::

    <member>/
      config.json          # MEMBER_FORMAT: factors, recipe, lineage, planned epochs and checkpoints
      result.json          # JSON lines, one per evaluated epoch (epoch 0 = the initialised model)
      error.json           # only while the member's last run failed
      checkpoint_000000/   # stock `save_pretrained` folders: config.json, model.safetensors, processor files
      checkpoint_000002/

A zoo::

    <zoo>/zoo.json                                            # the spec it was generated from, and its hash
    <zoo>/<modality>/pretraining/<member>/
    <zoo>/<modality>/finetuning/<pretrained member>/<member>/
    <zoo>/.trainer_state/...                                  # resumable Trainer state, never published

Modules: `names` (format tags, file names, checkpoint and member names, zoo paths), `locks` (one writer per zoo:
`ZooLock`, `WriterGuard`, `check_writer`), `atomic` (atomic writes, JSON, leftovers of interrupted writes),
`trainer_state` (removing a member's Trainer state), `checkpoints` (write, list, verify), `member_files`
(config.json, result.json, error.json), `members` (`MemberInfo`, loading and scanning members), `zoo_file`
(zoo.json), `splits` (splits.json and the rule that gives a member its split), `tensors` (the documented order of
a checkpoint's tensors and its tensor layout). Callers use the names below
through the package (`layout.<name>`), so replacing one on the package
(as tests do) reaches every caller.
"""

import os as os  # `layout.os` and `layout.Path`: used and patched through the package by callers and tests
from pathlib import Path as Path

from .atomic import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_temporaries,
    current_umask,
    fsync_dir,
    read_json,
    to_json,
)
from .checkpoints import list_checkpoints, read_safetensors_header, verify_checkpoint, write_checkpoint
from .locks import (
    LOCK_FILE,
    WRITERS_FILE,
    WriterGone,
    WriterGuard,
    ZooLock,
    ZooLockedError,
    check_writer,
    held_writer_id,
    lock_held_by,
)
from .member_files import (
    append_result,
    clear_failure,
    is_member_dir,
    read_failure,
    read_member_config,
    read_results,
    read_results_and_problem,
    record_failure,
    write_member_config,
)
from .members import MemberInfo, children_of, find_member, load_member, scan_members
from .names import (
    FAILURE,
    MEMBER_CONFIG,
    MEMBER_FORMAT,
    RESULTS,
    STATES,
    TRAINER_STATE_DIR,
    WEIGHTS,
    ZOO_FILE,
    ZOO_FORMAT,
    LayoutError,
    checkpoint_epoch,
    checkpoint_name,
    format_value,
    member_name,
    planned_checkpoints,
    trainer_state_dir,
    zoo_member_dir,
    zoo_root_of,
    zoo_stage_dir,
)
from .splits import SPLITS_FILE, SplitAssignment, hashed_split, read_splits
from .tensors import layout_id, module_of, natural_key, tensor_layout, tensor_order_key
from .trainer_state import remove_trainer_state
from .zoo_file import read_zoo_file, write_zoo_file

__all__ = [
    "SPLITS_FILE", "SplitAssignment", "hashed_split", "read_splits",
    "layout_id", "module_of", "natural_key", "tensor_layout", "tensor_order_key",
    "FAILURE", "LOCK_FILE", "MEMBER_CONFIG", "MEMBER_FORMAT", "RESULTS", "STATES",
    "TRAINER_STATE_DIR", "WEIGHTS", "WRITERS_FILE", "ZOO_FILE", "ZOO_FORMAT",
    "LayoutError", "MemberInfo", "WriterGone", "WriterGuard", "ZooLock", "ZooLockedError",
    "append_result", "atomic_dir", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_writer",
    "checkpoint_epoch", "checkpoint_name", "children_of", "clean_temporaries", "clear_failure", "current_umask",
    "find_member", "format_value", "fsync_dir", "held_writer_id", "is_member_dir", "list_checkpoints", "load_member",
    "lock_held_by", "member_name", "planned_checkpoints", "read_failure", "read_json", "read_member_config",
    "read_results", "read_results_and_problem", "read_safetensors_header", "read_zoo_file", "record_failure",
    "remove_trainer_state", "scan_members", "to_json", "trainer_state_dir", "verify_checkpoint", "write_checkpoint",
    "write_member_config", "write_zoo_file", "zoo_member_dir", "zoo_root_of", "zoo_stage_dir",
]
