"""Throughput of a zoo member's training step: ZooTrainer against a plain PyTorch loop on the same model and data.

    python bench/bench_training.py --kind vit --steps 50            # tiny ViT on embedded MNIST
    python bench/bench_training.py --kind lm --steps 50 --device cuda --bf16

Prints samples/s for both and their ratio. Numbers go into the notes of the issues, not into tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.arguments import parse_config  # noqa: E402
from zoo.runs import Arguments, MemberRun  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def build(kind: str, steps: int, device: str, bf16: bool, batch: int, extra: dict):
    config_file = CONFIGS / ("vision/pretrain_supervised_tiny.yaml" if kind == "vit" else "language/pretrain_tiny.yaml")
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config.update(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                  eval_strategy="no", save_strategy="no", logging_strategy="no", disable_tqdm=True,
                  use_cpu=device == "cpu", bf16=bf16, dataloader_num_workers=0, **extra)
    config.pop("num_train_epochs", None)
    args = Arguments(*parse_config(config))
    run = MemberRun("vit-pretrain" if kind == "vit" else "lm-pretrain", args, config)
    return run, args


def bench_trainer(run, args) -> float:
    trainer = run.trainer(args, None)
    start = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return args.training.max_steps * args.training.per_device_train_batch_size / (time.perf_counter() - start)


def bench_plain(run, args, device: str, bf16: bool) -> float:
    """The original zoo's way: a hand-written loop with the same objective, optimiser and data order."""
    model = run.build_model(args).to(device).train()
    objective = run.objective(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.training.learning_rate,
                                  weight_decay=args.training.weight_decay)
    loader = torch.utils.data.DataLoader(run.data.splits["train"], batch_size=args.training.per_device_train_batch_size,
                                         shuffle=True, collate_fn=run.collator, drop_last=True)
    steps, seen = args.training.max_steps, 0
    start = time.perf_counter()
    while seen < steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                loss, _, _ = objective.training_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += 1
            if seen >= steps:
                break
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return steps * args.training.per_device_train_batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["vit", "lm"], default="vit")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--image-size", type=int, default=None, help="ViT: e.g. 224 with --patch-size 16")
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--hidden-size", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    opts = parser.parse_args()
    extra = {k: v for k, v in {"image_size": opts.image_size, "patch_size": opts.patch_size,
                               "hidden_size": opts.hidden_size, "num_hidden_layers": opts.layers}.items() if v}
    run, args = build(opts.kind, opts.steps, opts.device, opts.bf16, opts.batch, extra)
    plain = bench_plain(run, args, opts.device, opts.bf16)
    run, args = build(opts.kind, opts.steps, opts.device, opts.bf16, opts.batch, extra)
    zoo = bench_trainer(run, args)
    print(f"{opts.kind} on {opts.device} (bf16={opts.bf16}, batch {opts.batch}, {opts.steps} steps): "
          f"ZooTrainer {zoo:.0f} samples/s, plain loop {plain:.0f} samples/s, ratio {zoo / plain:.2f}")


if __name__ == "__main__":
    main()
