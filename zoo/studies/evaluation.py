"""Evaluating zoo members, shared by soups and analysis: rebuild a member's held-out splits from its config (splits
are fixed by `split_seed`, so a whole zoo shares them), load a checkpoint (optionally with other weights) and run it
in batches, one model in memory at a time. Zoos are read through `zoo.layout` only; weights with safetensors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from zoo import architectures, kinds, layout


class EvaluationError(ValueError):
    """A member that cannot be evaluated: no data set named in its config."""


def data_arguments(member: layout.MemberInfo):
    """The member's DataArguments, rebuilt from the recipe in its config.json."""
    from zoo.arguments import DataArguments

    recipe = member.config.get("recipe") or {}
    names = {f.name for f in dataclasses.fields(DataArguments) if f.init}
    kwargs = {key: value for key, value in recipe.items() if key in names}
    if not kwargs.get("dataset"):
        source = (member.config.get("data") or {}).get("source")
        if source:
            kwargs["dataset"] = source
    if not kwargs.get("dataset"):
        raise EvaluationError(f"member {member.relpath or member.name}: its config names no data set to evaluate on")
    return DataArguments(**kwargs)


def model_architecture(checkpoint: str | Path) -> str:
    config = layout.read_json(Path(checkpoint) / "config.json")
    return (config.get("architectures") or [""])[0]


def is_classifier(member: layout.MemberInfo) -> bool:
    return bool(member.checkpoints) and model_architecture(member.checkpoint_dir()) in architectures.CLASSIFIERS


def has_representation(member: layout.MemberInfo) -> bool:
    """A classifier or a bare backbone: its last hidden representation can be compared with other members'."""
    return bool(member.checkpoints) and model_architecture(member.checkpoint_dir()) in (
        *architectures.CLASSIFIERS, *architectures.BACKBONES)


@dataclasses.dataclass
class Task:
    """The held-out splits of one data configuration, ready to be fed to a model."""

    key: str
    data: str  # the member kind's data (zoo.kinds): how its examples become model inputs
    splits: Any
    mean: float = 0.5
    std: float = 0.5
    image_size: int = 0  # the model's input size (images may be stored smaller)
    tokenizer: Any = None
    collator: Any = None


def _data_of(member: layout.MemberInfo) -> str:
    """The member kind's data, refused when evaluation has no inputs for it."""
    kind = kinds.of_member(member.config)
    if kind is None or kind.data not in _TASKS:
        raise EvaluationError(f"member {member.relpath or member.name}: no evaluation for kind "
                              f"{member.config.get('kind')!r} ({kind.data if kind else 'unknown kind'})")
    return kind.data


class TaskCache:
    """Held-out splits per data configuration, loaded once per process."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def task_key(self, member: layout.MemberInfo, checkpoint: str | Path | None = None) -> str:
        checkpoint = Path(checkpoint or member.checkpoint_dir())
        data_args = dataclasses.asdict(data_arguments(member))
        data_args.pop("preprocessing_num_workers", None)
        config = layout.read_json(checkpoint / "config.json")
        extra = _TASKS[_data_of(member)].key_extra(member, checkpoint, config)
        return hashlib.sha256(json.dumps([member.modality, data_args, extra], default=str).encode()).hexdigest()[:16]

    def get(self, member: layout.MemberInfo, checkpoint: str | Path | None = None) -> Task:
        checkpoint = Path(checkpoint or member.checkpoint_dir())
        key = self.task_key(member, checkpoint)
        if key not in self._tasks:
            config = layout.read_json(checkpoint / "config.json")
            self._tasks[key] = _TASKS[_data_of(member)].load(key, member, checkpoint, config)
        return self._tasks[key]


class _ImageTask:
    @staticmethod
    def key_extra(member, checkpoint, config):
        return [config.get("image_size"), config.get("num_channels"), _stored_size(member)]

    @staticmethod
    def load(key, member, checkpoint, config) -> Task:
        from zoo.data import load_images

        data_args = data_arguments(member)
        data = load_images(data_args, int(config["image_size"]), int(config.get("num_channels", 3)),
                           stored_size=_stored_size(member))
        return Task(key, "images", data.splits, float(data_args.image_mean), float(data_args.image_std),
                    image_size=int(config["image_size"]))

    @staticmethod
    def batch(task: Task, rows) -> dict:
        import torch

        from zoo import augment

        # exactly the trainer's evaluation transform (zoo.training's ImageClassification.eval_loss), so that the
        # metrics here reproduce the members' result.json
        images = augment.resize(augment.to_unit(torch.as_tensor(rows["pixel_values"])), task.image_size)
        return {"pixel_values": augment.normalize(images, task.mean, task.std)}


class _TextTask:
    @staticmethod
    def key_extra(member, checkpoint, config):
        tokenizer_file = checkpoint / "tokenizer.json"
        return hashlib.sha256(tokenizer_file.read_bytes()).hexdigest() if tokenizer_file.is_file() else str(checkpoint)

    @staticmethod
    def load(key, member, checkpoint, config) -> Task:
        from transformers import AutoTokenizer, DataCollatorWithPadding

        from zoo.data import load_text_classification

        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        data = load_text_classification(data_arguments(member), tokenizer)
        return Task(key, "text_classification", data.splits, tokenizer=tokenizer,
                    collator=DataCollatorWithPadding(tokenizer))

    @staticmethod
    def batch(task: Task, rows) -> dict:
        keys = [key for key in ("input_ids", "attention_mask") if key in rows]
        batch = task.collator([dict(zip(keys, values)) for values in zip(*(rows[key] for key in keys))])
        return {key: batch[key] for key in keys}


# Evaluation inputs per kind data (zoo.kinds)
_TASKS = {"images": _ImageTask, "text_classification": _TextTask}


def _stored_size(member: layout.MemberInfo) -> int | None:
    """The size the member's training images were stored at (Hub and local sets decoded once), when recorded."""
    return (member.config.get("data") or {}).get("stored_size")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _batches(task: Task, split: str, batch_size: int):
    import torch

    data = task.splits[split]
    for start in range(0, len(data), batch_size):
        rows = data[start : start + batch_size]
        yield _TASKS[task.data].batch(task, rows), torch.as_tensor(rows["labels"])


def _head(model):
    """The module whose input is the member's representation, or None for a bare backbone."""
    return next((getattr(model, name) for name in architectures.HEAD_MODULES if getattr(model, name, None)
                 is not None), None)


def _representation(model, inputs: dict, output, head_input, has_head: bool):
    """One vector per example: the head's input (CLS token for ViT, last non-pad token for GPT-2), or a bare
    backbone's normalised last hidden state at the same position."""
    import torch

    hidden = head_input if has_head else output.last_hidden_state
    if hidden.ndim == 2:
        return hidden
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if "input_ids" in inputs and has_head:
        ids, pad = inputs["input_ids"], model.config.pad_token_id
        if pad is None:
            return hidden[:, -1]
        index = torch.arange(ids.shape[-1], device=ids.device)
        return hidden[rows, (index * (ids != pad).int()).argmax(-1)]
    if "attention_mask" in inputs:
        return hidden[rows, inputs["attention_mask"].sum(-1) - 1]
    return hidden[:, 0]


def run_model(model, task: Task, split: str = "test", batch_size: int = 256,
              features: bool = False) -> dict[str, np.ndarray]:
    """Logits (classifiers), labels and, with `features`, the last hidden representation on one split (see
    `_representation`)."""
    import torch

    model_device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    head = _head(model)
    hook = head.register_forward_hook(lambda module, args, out: captured.append(args[0])) \
        if features and head is not None else None
    logits, labels, feats = [], [], []
    try:
        with torch.no_grad():
            for inputs, batch_labels in _batches(task, split, batch_size):
                inputs = {key: value.to(model_device) for key, value in inputs.items()}
                captured.clear()
                output = model(**inputs)
                if hasattr(output, "logits"):
                    logits.append(output.logits.float().cpu())
                if features:
                    hidden = _representation(model, inputs, output, captured[0] if captured else None,
                                             head is not None)
                    feats.append(hidden.float().cpu())
                labels.append(batch_labels)
    finally:
        if hook is not None:
            hook.remove()
    out = {"labels": torch.cat(labels).numpy()}
    if logits:
        out["logits"] = torch.cat(logits).numpy()
    if feats:
        out["features"] = torch.cat(feats).numpy()
    return out


def metrics_of(outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy and cross-entropy of `run_model` outputs."""
    logits, labels = outputs["logits"].astype(np.float64), outputs["labels"]
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")
    acc = float((logits.argmax(-1) == labels).mean()) if len(labels) else float("nan")
    return {"acc": acc, "loss": loss}


def evaluate_model(model, task: Task, splits: Iterable[str] = ("validation", "test"),
                   batch_size: int = 256) -> dict[str, float]:
    """{'validation_acc', 'validation_loss', 'test_acc', 'test_loss'} of a classifier."""
    out: dict[str, float] = {}
    for split in splits:
        for key, value in metrics_of(run_model(model, task, split, batch_size)).items():
            out[f"{split}_{key}"] = value
    return out


def load_model(checkpoint: str | Path, weights: dict[str, np.ndarray] | None = None):
    """A member checkpoint's model for evaluation (MLP heads included), with `weights` (named as saved in
    model.safetensors) in place of its own. Saved names can differ from the in-memory module names, so the weights go
    through a temporary checkpoint folder and the stock loader."""
    import tempfile

    from safetensors.numpy import save_file
    from transformers.utils import logging as hf_logging

    from zoo.models import load_member_model

    checkpoint = Path(checkpoint)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        if weights is None:
            layout.read_safetensors_header(checkpoint / layout.WEIGHTS)
            return load_member_model(checkpoint, device()).eval()
        with tempfile.TemporaryDirectory(prefix="zoo-eval-") as tmp:
            shutil.copy2(checkpoint / "config.json", Path(tmp) / "config.json")
            save_file({key: np.ascontiguousarray(value) for key, value in weights.items()},
                      str(Path(tmp) / layout.WEIGHTS), metadata={"format": "pt"})
            return load_member_model(tmp, device()).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def evaluate_members(members: list[layout.MemberInfo], tasks: TaskCache, batch_size: int = 256,
                     progress: bool = True) -> dict[str, dict[str, float]]:
    """Validation and test metrics of each member's last checkpoint, one model in memory at a time."""
    from tqdm.auto import tqdm

    out = {}
    for member in tqdm(members, desc="evaluating members", disable=not progress or len(members) < 2, leave=False):
        model = load_model(member.checkpoint_dir())
        out[member.relpath] = evaluate_model(model, tasks.get(member), batch_size=batch_size)
        del model
    return out
