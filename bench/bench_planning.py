"""Planning time of a large grid: `zoo generate SPEC --dry-run` of a 10 x 10 x 10 x 10 = 10,000-member spec.

    python bench/bench_planning.py                 # 10 values per key: 10,000 members
    python bench/bench_planning.py --values 5      # 625 members

Writes the spec to a temporary folder, runs the dry run in this process (its member list to /dev/null; the imports of
torch and transformers it needs included) and prints the members planned, the wall time, the time per member and
the CPU time (which a busy machine inflates less than the wall time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.cli import main as zoo_main  # noqa: E402


def spec(values: int) -> dict:
    return {"name": "planning-bench", "vision": {"pretraining": {
        "config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
        "grid": {"seed": list(range(values)),
                 "learning_rate": [round(1e-4 * (i + 1), 6) for i in range(values)],
                 "weight_decay": [round(1e-3 * i, 6) for i in range(values)],
                 "label_smoothing": [round(0.01 * i, 4) for i in range(values)]}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10, help="values per grid key (4 keys): values**4 members")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zoo-bench-planning-") as work:
        path = Path(work) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec(args.values)))
        start, cpu = time.perf_counter(), time.process_time()
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            code = zoo_main(["generate", str(path), "--zoo-dir", str(Path(work) / "zoo"), "--dry-run"])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    members = args.values ** 4
    print(f"dry run of {members:,} members: exit {code}, {seconds:.2f} s ({1000 * seconds / members:.3f} ms a member), "
          f"{cpu:.2f} s of CPU (imports included)")


if __name__ == "__main__":
    main()
