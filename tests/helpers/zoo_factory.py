"""A tiny but real zoo, written through `zoo.layout`, for the tests that need one (publishing, mostly).

Members are stock `transformers` models (tiny ViT and GPT-2) saved by `save_pretrained` into
`layout.write_checkpoint`, with member configs, result.json lines per epoch and a zoo.json. "Training" is a seeded
perturbation of the weights between epochs, so every checkpoint differs and everything is deterministic.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from zoo import layout

EPOCHS = 2
CHECKPOINTS = [0, 1, 2]
SPEC = {
    "name": "synthetic",
    "description": "tiny synthetic zoo for tests",
    "vision": {"model": "vit-tiny", "dataset": "random-8x8", "grid": {"seed": [0, 1], "optim": ["adamw", "sgd"]}},
    "language": {"model": "gpt2-tiny", "dataset": "random-tokens", "grid": {"seed": [0]}},
}

_KINDS = {  # kind -> (modality, stage, metric)
    "vit-supervised": ("vision", "pretraining", "test_acc"),
    "vit-contrastive": ("vision", "pretraining", "test_acc"),
    "vit-finetune": ("vision", "finetuning", "test_acc"),
    "lm-pretrain": ("language", "pretraining", "test_perplexity"),
    "lm-finetune": ("language", "finetuning", "test_acc"),
}


def _model(kind: str, seed: int):
    import torch
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        GPT2LMHeadModel,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(seed)
    if kind.startswith("vit"):
        config = ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, num_channels=3, num_labels=10)
        return ViTForImageClassification(config)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2, num_labels=2,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config) if kind == "lm-pretrain" else GPT2ForSequenceClassification(config)


def _save(model, kind: str):
    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        if kind.startswith("vit"):
            from transformers import ViTImageProcessor

            ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(folder)

    return save


def write_member(zoo: str | Path, name: str, kind: str, factors: dict[str, Any], *, seed: int = 0,
                 parent: layout.MemberInfo | None = None, epochs_done: int = EPOCHS,
                 junk: bool = False) -> layout.MemberInfo:
    """Write one member; `epochs_done < EPOCHS` leaves it incomplete (fewer checkpoints and result lines)."""
    import torch

    modality, stage, metric = _KINDS[kind]
    zoo = Path(zoo)
    member_dir = layout.zoo_member_dir(zoo, modality, stage, name, parent=parent.name if parent else None)
    parent_ref = None
    if parent is not None:
        parent_ref = {"member": parent.name, "path": parent.relpath, "checkpoint": layout.checkpoint_name(EPOCHS)}
    layout.write_member_config(member_dir, {
        "name": name, "modality": modality, "stage": stage, "kind": kind, "factors": factors, "parent": parent_ref,
        "epochs": EPOCHS, "checkpoint_every": 1, "checkpoints": CHECKPOINTS, "metric": metric,
        "recipe": {"optimizer": factors.get("optim", "adamw"), "learning_rate": factors.get("learning_rate", 1e-3),
                   "batch_size": 8},
        "data": {"dataset": SPEC[modality]["dataset"], "train_samples": 64, "test_samples": 32},
    })
    model = _model(kind, seed)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs_done + 1):
        if epoch:  # one "epoch of training": a small seeded step on every parameter
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(0.01 * torch.randn(param.shape, generator=generator))
        if epoch in CHECKPOINTS:
            layout.write_checkpoint(member_dir, epoch, _save(model, kind))
        test_loss = round(2.3 - 0.3 * epoch - 0.1 * rng.random(), 6)
        row = {"epoch": epoch, "train_loss": round(test_loss - 0.05, 6), "train_acc": round(0.1 + 0.2 * epoch, 6),
               "test_loss": test_loss, "test_acc": round(0.1 + 0.15 * epoch + 0.05 * rng.random(), 6),
               "seconds": round(0.5 + rng.random(), 3), "samples": 64 * epoch}
        if kind == "lm-pretrain":
            row["test_perplexity"] = round(math.exp(test_loss), 6)
        layout.append_result(member_dir, row)
    if junk:  # leftovers a publisher must never copy
        checkpoint = member_dir / layout.checkpoint_name(0)
        (checkpoint / ".model.safetensors.abc.tmp").write_bytes(b"partial")
        (checkpoint / "optimizer.pt").write_bytes(b"not a checkpoint file")
        state = layout.trainer_state_dir(zoo, member_dir)
        state.mkdir(parents=True, exist_ok=True)
        (state / "trainer_state.json").write_text("{}")
    return layout.load_member(member_dir, zoo)


def make_synthetic_zoo(root: str | Path, *, incomplete: bool = False, junk: bool = True,
                       language: bool = True) -> list[layout.MemberInfo]:
    """Write the zoo at `root`: 2 ViT pretraining members (supervised, contrastive), 1 finetuned child of each, and
    (with `language`) 1 GPT-2 pretraining member with 1 finetuned child. With `incomplete`, one more vision
    pretraining member stops after epoch 1. Returns the members in writing order."""
    root = Path(root)
    members = []
    sup = write_member(root, "vit_sup_seed_0_optim_adamw", "vit-supervised",
                       {"seed": 0, "learning_rate": 0.001, "optim": "adamw", "head": "linear"}, seed=0, junk=junk)
    con = write_member(root, "vit_con_seed_1_optim_sgd", "vit-contrastive",
                       {"seed": 1, "learning_rate": 0.01, "optim": "sgd", "head": "mlp"}, seed=1)
    members += [sup, con]
    for index, parent in enumerate((sup, con)):
        members.append(write_member(root, f"ft_seed_{10 + index}", "vit-finetune",
                                    {"seed": 10 + index, "learning_rate": 0.0001, "optim": "adamw"},
                                    seed=10 + index, parent=parent))
    if language:
        lm = write_member(root, "lm_seed_0", "lm-pretrain", {"seed": 0, "learning_rate": 0.0005, "optim": "adamw"},
                          seed=20)
        members += [lm, write_member(root, "lm_ft_seed_0", "lm-finetune",
                                     {"seed": 0, "learning_rate": 3e-05, "optim": "adamw", "head": "linear"},
                                     seed=21, parent=lm)]
    if incomplete:
        members.append(write_member(root, "vit_sup_seed_2_optim_adamw", "vit-supervised",
                                    {"seed": 2, "learning_rate": 0.001, "optim": "adamw", "head": "linear"},
                                    seed=2, epochs_done=1))
    layout.write_zoo_file(root, SPEC, spec_hash="0" * 16)
    return members


# ---------------------------------------------------------------- many tiny members, fast (scale tests, benchmarks)

_TINY_KINDS = {  # kind -> (modality, stage, metric, model class name, config)
    "vit-supervised": ("vision", "pretraining", "test_acc", "ViTForImageClassification"),
    "vit-finetune": ("vision", "finetuning", "test_acc", "ViTForImageClassification"),
    "lm-pretrain": ("language", "pretraining", "test_perplexity", "GPT2LMHeadModel"),
}


def _tiny_templates(folder: Path) -> dict[str, tuple[bytes, dict[str, Any], list[tuple[str, bytes]]]]:
    """Per kind: config.json bytes, safetensors header (names, shapes, dtypes) and extra files, from one stock
    `save_pretrained` of a tiny model."""
    import transformers
    from transformers import GPT2Config, ViTConfig, ViTImageProcessor

    vit = ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=16, num_channels=3, num_labels=10)
    gpt = GPT2Config(vocab_size=32, n_positions=8, n_embd=8, n_layer=1, n_head=2, pad_token_id=0, bos_token_id=1,
                     eos_token_id=2)
    out = {}
    for kind, (_, _, _, cls_name) in _TINY_KINDS.items():
        where = folder / kind
        model = getattr(transformers, cls_name)(vit if kind.startswith("vit") else gpt)
        model.save_pretrained(where)
        if kind.startswith("vit"):
            ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(where)
        extras = [(p.name, p.read_bytes()) for p in sorted(where.iterdir())
                  if p.name not in ("config.json", layout.WEIGHTS)]
        out[kind] = ((where / "config.json").read_bytes(), layout.read_safetensors_header(where / layout.WEIGHTS),
                     extras)
    return out


def write_tiny_zoo(root: str | Path, members: int, *, seed: int = 0) -> int:
    """A zoo of `members` tiny members in the real member format without training: random weights (stock ViT and
    GPT-2 configs, loadable with `AutoModel`), 2 or 3 checkpoints each, result lines for every epoch. 45% vision
    and 45% language pretraining members, 10% finetuned children of the first vision members. Returns the number
    of checkpoints written."""
    import tempfile

    import numpy as np
    from safetensors.numpy import save_file

    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        templates = _tiny_templates(Path(tmp))
    rng = np.random.default_rng(seed)
    n_children = members // 10
    n_vision = (members - n_children) // 2
    parents: list[str] = []
    written = 0
    for index in range(members):
        if index < n_vision:
            kind, name, parent = "vit-supervised", f"vit_seed_{index}", None
            parents.append(name)
        elif index < members - n_children:
            kind, name, parent = "lm-pretrain", f"lm_seed_{index}", None
        else:
            kind, name = "vit-finetune", f"ft_seed_{index}"
            parent = parents[index % min(len(parents), 10)] if parents else None
            if parent is None:
                kind, name = "lm-pretrain", f"lm_seed_{index}"
        modality, stage, metric, _ = _TINY_KINDS[kind]
        config_json, header, extras = templates[kind]
        checkpoints = [0, 1, 2] if index % 2 == 0 else [0, 2]
        member_dir = layout.zoo_member_dir(root, modality, stage, name, parent=parent)
        parent_ref = ({"member": parent, "path": f"{modality}/pretraining/{parent}", "checkpoint": "checkpoint_000002"}
                      if parent else None)
        layout.write_member_config(member_dir, {
            "name": name, "modality": modality, "stage": stage, "kind": kind,
            "factors": {"seed": index, "learning_rate": [1e-4, 1e-3, 1e-2][index % 3]}, "parent": parent_ref,
            "epochs": 2, "checkpoint_every": 1 if index % 2 == 0 else 2, "checkpoints": checkpoints, "metric": metric,
        })
        for epoch in checkpoints:
            tensors = {key: (0.02 * rng.standard_normal(info["shape"])).astype(np.float32)
                       for key, info in header.items() if key != "__metadata__"}

            def save(folder: Path, tensors: dict[str, Any] = tensors, config_json: bytes = config_json,
                     extras: list[tuple[str, bytes]] = extras) -> None:
                (folder / "config.json").write_bytes(config_json)
                save_file(tensors, str(folder / layout.WEIGHTS), metadata={"format": "pt"})
                for extra, data in extras:
                    (folder / extra).write_bytes(data)

            layout.write_checkpoint(member_dir, epoch, save)
            written += 1
        rows = []
        for epoch in range(3):
            loss = round(2.3 - 0.3 * epoch - 0.1 * float(rng.random()), 6)
            row = {"epoch": epoch, "test_loss": loss, "test_acc": round(0.1 + 0.2 * epoch, 6)}
            if metric == "test_perplexity":
                row["test_perplexity"] = round(math.exp(loss), 6)
            rows.append(layout.to_json(row, indent=None) + "\n")
        layout.atomic_write_text(member_dir / layout.RESULTS, "".join(rows))
    layout.write_zoo_file(root, {"name": "tiny", "description": f"{members} untrained tiny members"},
                          spec_hash="1" * 16)
    return written
