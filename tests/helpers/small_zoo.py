"""A tiny zoo trained for real with the recipes, shared by the soup and analysis tests.

One supervised ViT parent (2 epochs) and four finetuned children (3 epochs each, a checkpoint every epoch): three
with an MLP head (soupable together) and one with a linear head (a different architecture, to exercise grouping).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from zoo import layout
from zoo.runs import recipe_main

from .paths import CONFIGS

VISION = CONFIGS / "vision"
SMALL = ["--max_train_samples", "192", "--max_eval_samples", "96", "--checkpoint_every", "1",
         "--per_device_train_batch_size", "64", "--disable_tqdm", "true"]
CHILDREN = [  # head, learning rate, seed
    ("mlp", "0.001", "1"),
    ("mlp", "0.002", "2"),
    ("mlp", "0.0005", "3"),
    ("linear", "0.001", "4"),
]


def build_small_zoo(root: str | Path) -> dict:
    """Train the zoo under `root`; returns {'parent': MemberInfo, 'children': [MemberInfo, ...]} (children in
    CHILDREN order)."""
    root = Path(root)
    layout.write_zoo_file(root, {"name": "small-test-zoo"}, spec_hash="0" * 16)
    pre_dir = root / "vision" / "pretraining"
    code = recipe_main("vit-pretrain", ["--config", str(VISION / "pretrain_supervised_tiny.yaml"),
                                        "--output_dir", str(pre_dir), "--num_train_epochs", "2", *SMALL])
    assert code == 0, "parent training failed"
    (parent,) = layout.scan_members(pre_dir)
    ft_dir = root / "vision" / "finetuning" / parent.name
    for head, lr, seed in CHILDREN:
        code = recipe_main("vit-finetune", ["--config", str(VISION / "finetune_tiny.yaml"),
                                            "--pretrained", str(parent.checkpoint_dir(2)), "--output_dir", str(ft_dir),
                                            "--head", head, "--learning_rate", lr, "--seed", seed,
                                            "--num_train_epochs", "3", *SMALL])
        assert code == 0, f"child {head} {lr} {seed} failed"
    members = {m.relpath: m for m in layout.scan_members(root)}
    children = []
    for head, lr, seed in CHILDREN:
        (match,) = [m for m in members.values() if m.stage == "finetuning" and m.factors.get("head") == head
                    and str(m.factors.get("learning_rate")) == str(float(lr)) and str(m.factors.get("seed")) == seed]
        children.append(match)
    return {"root": root, "parent": layout.load_member(parent.path, root), "children": children}


_BUILT: dict = {}


def shared_small_zoo() -> dict:
    """The zoo of `build_small_zoo`, trained once per test process (both test modules share it); read-only."""
    if not _BUILT:
        root = Path(tempfile.mkdtemp(prefix="zoo-small-"))
        atexit.register(shutil.rmtree, root, True)
        _BUILT.update(build_small_zoo(root / "zoo"))
    return {**_BUILT, "children": list(_BUILT["children"])}
