"""ZooTrainer against a best-practice plain PyTorch loop on the same model, data and objective (a short form of
`bench_gpu.py`, which also measures the hardware ceiling).

    python bench/bench_training.py --kind vit             # tiny ViT on embedded MNIST, on the CPU
    python bench/bench_training.py --kind lm --repeats 5  # tiny GPT-2
    python bench/bench_training.py --kind simclr --device cuda

Prints samples/s for both and their ratio, the median over repeats (CPU time on a CPU: see bench_gpu.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gpu  # noqa: E402

KINDS = {"vit": "vit", "lm": "gpt2", "gpt2": "gpt2", "simclr": "simclr"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="vit")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch_compile on for both")
    opts = parser.parse_args()
    cpu = opts.device == "cpu"
    if cpu:
        torch.set_num_threads(1)
        bench_gpu.CLOCK = time.process_time
    mode = "compiled" if opts.compile else "eager"
    rows = [f"plain {mode}", f"trainer {mode}"]
    samples: dict[str, list] = {}
    for repeat in range(opts.repeats):
        order = rows if repeat % 2 == 0 else rows[::-1]
        results = bench_gpu.measure(KINDS[opts.kind], cpu, opts.warmup, opts.steps, order, float("inf"))
        for name, row in results.items():
            samples.setdefault(name, []).append(row)
    bench_gpu.report(KINDS[opts.kind], samples, cpu)


if __name__ == "__main__":
    main()
