"""The model weights of the Trainer's resumable state, saved and loaded under the module's own parameter names.

transformers 5 renames weights between a model's modules and its saved files, and `Trainer._load_from_checkpoint`
loads the saved names with `strict=False`: on resume every renamed weight (a ViT's or GPT-2's whole encoder) would
silently keep its fresh initialisation. These weights therefore keep the module's names and load strictly.
"""

from __future__ import annotations

import os

from torch import nn

RESUME_WEIGHTS = "resume_model.safetensors"


def save_resume_weights(model: nn.Module, output_dir: str) -> None:
    """Write the weights atomically (a temporary file, then a rename): a process killed while writing leaves none."""
    from safetensors.torch import save_model

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RESUME_WEIGHTS)
    partial = f"{path}.{os.getpid()}.tmp"
    save_model(model, partial)
    os.replace(partial, path)


def load_resume_weights(model: nn.Module, checkpoint_dir: str) -> bool:
    """Load the weights `save_resume_weights` wrote into `checkpoint_dir`; False when it holds none."""
    path = os.path.join(checkpoint_dir, RESUME_WEIGHTS)
    if not os.path.isfile(path):
        return False
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, path, strict=True)
    if missing or unexpected:
        raise RuntimeError(f"{path}: does not match the model ({missing or unexpected})")
    return True
