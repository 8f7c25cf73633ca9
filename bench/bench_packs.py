"""A stage of 8 quickstart-size members: trained as one pack, against the same 8 one by one, through `zoo generate`.

    python bench/bench_packs.py                       # ViT and GPT-2 stages, on the CPU
    python bench/bench_packs.py --family vision --members 8 --pack-mode loop

Both runs are side by side in one invocation, on the same machine, each timed from the start of `zoo generate` to
its last checkpoint written (the newest checkpoint folder's time). One by one, Ray runs one member per trial with
`--cpus-per-trial 1` (as many trials at once as there are cores); the pack is one trial given every core. The
members of each run are checked to be complete, and their final test metrics are printed side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo import layout  # noqa: E402

QUICKSTART = ROOT / "recipes" / "configs" / "zoos" / "quickstart.yaml"


def stage_spec(family: str, members: int) -> dict:
    """The quickstart's pretraining stage of `family`, with a grid of `members` seeds and learning rates."""
    spec = yaml.safe_load(QUICKSTART.read_text())
    stage = spec[family]["pretraining"]
    stage["config"] = str((QUICKSTART.parent / stage["config"]).resolve())
    stage.pop("groups", None)
    stage.pop("pack", None)
    fixed = dict(stage.get("fixed") or {})
    if family == "vision":
        fixed.update(member_prefix="sl_vit_tiny", mode="supervised")
    stage["fixed"] = fixed
    rates = [1e-3, 2e-3]
    stage["grid"] = {"seed": list(range(1, members // len(rates) + 1)), "learning_rate": rates}
    return {"name": f"bench-{family}", "resources": {"cpu": 1, "gpu": 0}, family: {"pretraining": stage}}


def last_checkpoint_time(zoo_dir: Path) -> float:
    return max(p.stat().st_mtime for p in zoo_dir.rglob("checkpoint_*") if p.is_dir())


def generate(spec: Path, zoo_dir: Path, extra: list[str]) -> tuple[float, list[float]]:
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir), *extra]
    start = time.time()
    result = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {result.returncode}: {result.stderr[-2000:]}")
    members = layout.scan_members(zoo_dir)
    if not members or not all(m.is_complete() for m in members):
        sys.exit(f"{zoo_dir}: not every member is complete")
    return last_checkpoint_time(zoo_dir) - start, [m.final_metric() for m in sorted(members, key=lambda m: m.name)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["vision", "language", "both"], default="both")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--pack-mode", choices=["auto", "vmap", "loop"], default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the zoos (in a temporary folder)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-packs-"))
    families = ["vision", "language"] if args.family == "both" else [args.family]
    print(f"{args.members} members per stage, {cores} cores, pack mode {args.pack_mode}")
    for family in families:
        spec = stage_spec(family, args.members)
        spec[family]["pretraining"]["pack_mode"] = args.pack_mode
        path = work / f"{family}.yaml"
        path.write_text(yaml.safe_dump(spec))
        alone, alone_metrics = generate(path, work / f"{family}-alone", ["--cpus-per-trial", "1"])
        packed, packed_metrics = generate(path, work / f"{family}-pack",
                                          ["--pack", str(args.members), "--cpus-per-trial", str(cores)])
        print(f"{family}: one by one {alone:.1f} s, one pack {packed:.1f} s: {alone / packed:.2f}x")
        print(f"  final test metric, one by one: {[round(m, 4) for m in alone_metrics]}")
        print(f"  final test metric, packed:     {[round(m, 4) for m in packed_metrics]}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"zoos kept in {work}")


if __name__ == "__main__":
    main()
