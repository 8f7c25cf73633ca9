"""Whole recipe runs with `torch_compile` off and on: wall time per epoch and graphs compiled.

    python bench/bench_compile.py                      # tiny ViT on the CPU, 2 epochs with evaluations
    python bench/bench_compile.py --config language/pretrain_tiny.yaml --kind lm-pretrain

Unlike bench_gpu.py this keeps the recipe's data order, last partial batch and per-epoch evaluations, which is
where a compiled Trainer can lose time to recompiles.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.arguments import parse_config  # noqa: E402
from zoo.runs import Arguments, MemberRun  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def run_once(config_name: str, kind: str, epochs: int, compiled: bool) -> tuple[float, int]:
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    config = yaml.safe_load((CONFIGS / config_name).read_text())
    with tempfile.TemporaryDirectory() as root:
        config.update(output_dir=root, num_train_epochs=epochs, checkpoint_every=epochs, torch_compile=compiled,
                      disable_tqdm=True, use_cpu=not torch.cuda.is_available(), save_strategy="no")
        args = Arguments(*parse_config(config))
        run = MemberRun(kind, args, config)
        start = time.perf_counter()
        run.train_member(args, Path(root) / "member", Path(root))
        seconds = time.perf_counter() - start
    return seconds, int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vision/pretrain_supervised_tiny.yaml")
    parser.add_argument("--kind", default="vit-pretrain")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    eager, _ = run_once(opts.config, opts.kind, opts.epochs, False)
    compiled, graphs = run_once(opts.config, opts.kind, opts.epochs, True)
    print(f"{opts.config}, {opts.epochs} epochs: eager {eager:.1f} s, compiled {compiled:.1f} s "
          f"(compiled/eager speed {eager / compiled:.2f}, {graphs} graphs compiled)")


if __name__ == "__main__":
    main()
