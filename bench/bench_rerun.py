"""Time of `zoo generate` run again on a zoo (what `make demo` does the second time).

    python bench/bench_rerun.py --zoo-dir zoos/quickstart                  # after `make demo`
    python bench/bench_rerun.py --zoo-dir /tmp/qs --spec recipes/configs/zoos/quickstart.yaml --runs 3

Generates the zoo first when it is missing (not timed), then times `--runs` reruns. On a complete zoo a rerun does
only the spec check and the status scan: no data preparation, no Ray. It prints times; no test asserts them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "recipes" / "configs" / "zoos" / "quickstart.yaml"))
    parser.add_argument("--zoo-dir", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    command = [sys.executable, "-m", "zoo", "generate", args.spec, "--zoo-dir", args.zoo_dir]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not Path(args.zoo_dir, "zoo.json").is_file():
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"zoo generate exited {result.returncode}: {result.stderr.strip().splitlines()[-1:]}")
    print(f"rerun of {args.zoo_dir}: " + ", ".join(f"{s:.1f} s" for s in seconds) + f" (best {min(seconds):.1f} s)")


if __name__ == "__main__":
    main()
