"""The record of where a member was trained: what decides whether its weights reproduce bit for bit."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from zoo.environment import environment_record


def run_provenance(training_args) -> dict[str, Any]:
    """What decides whether a member's weights reproduce bit for bit: threads, device, world size, versions."""
    import socket

    import accelerate
    import datasets
    import transformers

    return {
        "hostname": socket.gethostname(),
        "device": str(training_args.device),
        "world_size": int(training_args.world_size),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                     "datasets": datasets.__version__},
        "environment": environment_record(),
    }
