"""A weight dataset at zoo scale: a synthetic zoo of N tiny untrained members (default 10,000; real member format,
2 or 3 checkpoints each, written by `helpers.zoo_factory.write_tiny_zoo`), then one epoch of
`WeightDataset(format="flat")` through a DataLoader with workers, for each modality (flat needs one tensor layout:
the vision members and their finetuned children share one, the language members another).

    python bench/bench_weightspace.py                      # 10,000 members
    python bench/bench_weightspace.py --members 500 --work /tmp/ws-bench --checkpoints all

Each epoch runs in a process of its own and reports the time to build the dataset (scanning the zoo, splits,
layouts), items per second, and the peak RSS (`resource.getrusage`) of that process and of its DataLoader workers.
No test asserts these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

EPOCH = """
import json, resource, sys, time
from torch.utils.data import DataLoader
from zoo.weightspace import WeightDataset, collate_flat

zoo, modality, checkpoints = sys.argv[1:4]
batch_size, workers = int(sys.argv[4]), int(sys.argv[5])
start = time.monotonic()
dataset = WeightDataset(zoo, format="flat", modality=modality, checkpoints=checkpoints)
built = time.monotonic() - start
start, items = time.monotonic(), 0
for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_flat):
    items += batch["weights"].shape[0]
seconds = time.monotonic() - start
print(json.dumps({
    "modality": modality, "items": items, "values_per_item": dataset.layout[-1].offset + dataset.layout[-1].length,
    "build_seconds": round(built, 1), "epoch_seconds": round(seconds, 1), "items_per_second": round(items / seconds),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "workers_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
}))
"""


def run(argv: list[str], env: dict[str, str]) -> str:
    """Run `argv`; its output, or exit with it when it fails."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(argv[:3])} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--work", default=None, help="folder for the zoo (default: a temp folder, removed)")
    parser.add_argument("--checkpoints", default="last", choices=["last", "all"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-weightspace-"))
    zoo = work / "zoo"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "TQDM_DISABLE": "1"}
    py = sys.executable
    try:
        if not (zoo / "zoo.json").is_file():
            start = time.monotonic()
            written = run([py, "-c", "import sys; from helpers.zoo_factory import write_tiny_zoo; "
                           f"print(write_tiny_zoo(sys.argv[1], {args.members}))", str(zoo)], env).split()[-1]
            print(f"wrote {args.members} members, {written} checkpoints in {time.monotonic() - start:.0f} s",
                  flush=True)
        for modality in ("vision", "language"):
            out = run([py, "-c", EPOCH, str(zoo), modality, args.checkpoints, str(args.batch_size),
                       str(args.workers)], env)
            print(json.dumps(json.loads(out.strip().splitlines()[-1])), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
