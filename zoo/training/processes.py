"""The processes that train one member: joining a launcher's processes into one group, and which of them writes."""

from __future__ import annotations

import os

import torch


def join_cpu_processes() -> None:
    """Let the processes of `torchrun` / `accelerate launch` form one group on a machine without GPUs.

    Accelerate joins launched processes into a group only for a GPU, or when `ACCELERATE_USE_CPU` is set; without it
    each CPU process trains alone as rank 0 of 1 and all of them write the same member. Call before any
    `TrainingArguments` is built (they set up the device and the process group when created).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"  # -> DistributedType.MULTI_CPU with the gloo backend


def check_process_group(training_args) -> None:
    """Refuse to train N unconnected copies of one member when a launcher started N processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != training_args.world_size:
        raise ValueError(f"WORLD_SIZE={launched} but the processes did not join one group (world size "
                         f"{training_args.world_size}, {training_args.distributed_state.distributed_type})")


def is_main_process() -> bool:
    """True in the one process that writes members (always true without a launcher)."""
    from accelerate import PartialState

    if PartialState._shared_state:
        return PartialState().is_main_process
    return int(os.environ.get("RANK", "0")) == 0
