"""A stage of 8 quickstart-size members: trained as one pack, against the same 8 one by one, through `zoo generate`.

    python bench/bench_packs.py                       # ViT and GPT-2 finetuning stages, on the CPU
    python bench/bench_packs.py --family vision --stage pretraining --pack 4 --cpus-per-pack 1 --pack-mode loop

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


def stage_spec(family: str, stage: str, members: int) -> dict:
    """The quickstart's `stage` of `family` with a grid of `members` (seeds x two learning rates); finetuning
    gets one short pretrained parent (trained before the clock starts)."""
    quickstart = yaml.safe_load(QUICKSTART.read_text())
    spec: dict = {"name": f"bench-{family}-{stage}", "resources": {"cpu": 1, "gpu": 0}, family: {}}
    for name in ("pretraining", "finetuning"):
        section = dict(quickstart[family][name])
        section["config"] = str((QUICKSTART.parent / section["config"]).resolve())
        for key in ("groups", "pack", "grid"):
            section.pop(key, None)
        fixed = dict(section.get("fixed") or {})
        if family == "vision" and name == "pretraining":
            fixed.update(member_prefix="sl_vit_tiny", mode="supervised")
        if name == "finetuning" and family == "vision":
            fixed["head"] = "mlp"
        if name == "finetuning" and family == "language":
            fixed["optimizer"] = "adamw"
        if name != stage:  # the parent of a finetuning benchmark: one member, a short run
            fixed.update(num_train_epochs=1, checkpoint_every=1)
            section["grid"] = {"seed": [1]}
        else:
            rates = [1e-3, 2e-3]
            section["grid"] = {"seed": list(range(1, members // len(rates) + 1)), "learning_rate": rates}
        section["fixed"] = fixed
        spec[family][name] = section
        if name == stage:
            break
    return spec
def last_checkpoint_time(zoo_dir: Path) -> float:
    return max(p.stat().st_mtime for p in zoo_dir.rglob("checkpoint_*") if p.is_dir())


def generate(spec: Path, zoo_dir: Path, extra: list[str], stage: str) -> tuple[float, list[float]]:
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir), *extra]
    start = time.time()
    result = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if result.returncode not in (0, 1):  # 1: members of other stages are still to train
        sys.exit(f"{' '.join(command)} exited {result.returncode}: {result.stderr[-2000:]}")
    members = [m for m in layout.scan_members(zoo_dir) if m.stage == stage]
    if not members or not all(m.is_complete() for m in members):
        sys.exit(f"{zoo_dir}: not every member is complete")
    folders = [p for m in members for p in Path(m.path).glob("checkpoint_*")]
    last = max(p.stat().st_mtime for p in folders)
    return last - start, [m.final_metric() for m in sorted(members, key=lambda m: m.name)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["vision", "language", "both"], default="both")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--stage", choices=["pretraining", "finetuning"], default="finetuning")
    parser.add_argument("--pack", type=int, default=None, help="members per pack (default: all in one)")
    parser.add_argument("--cpus-per-pack", type=float, default=None, help="default: every core")
    parser.add_argument("--pack-mode", choices=["auto", "vmap", "loop"], default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the zoos (in a temporary folder)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-packs-"))
    families = ["vision", "language"] if args.family == "both" else [args.family]
    print(f"{args.members} members of the quickstart's {args.stage} stage, {cores} cores, pack mode {args.pack_mode}")
    for family in families:
        spec = stage_spec(family, args.stage, args.members)
        spec[family][args.stage]["pack_mode"] = args.pack_mode
        path = work / f"{family}.yaml"
        path.write_text(yaml.safe_dump(spec))
        alone_dir, pack_dir = work / f"{family}-alone", work / f"{family}-pack"
        if args.stage == "finetuning":  # the parent, untimed, shared by both runs
            generate(path, alone_dir, ["--stage", "pretraining"], "pretraining")
            shutil.copytree(alone_dir, pack_dir)
        timed = ["--stage", args.stage]
        alone, alone_metrics = generate(path, alone_dir, [*timed, "--cpus-per-trial", "1"], args.stage)
        packs = [*timed, "--pack", str(args.pack or args.members), "--cpus-per-trial",
                 str(args.cpus_per_pack or cores)]
        packed, packed_metrics = generate(path, pack_dir, packs, args.stage)
        print(f"{family} {args.stage}: one by one {alone:.1f} s, packed {packed:.1f} s: {alone / packed:.2f}x")
        print(f"  final test metric, one by one: {[round(m, 4) for m in alone_metrics]}")
        print(f"  final test metric, packed:     {[round(m, 4) for m in packed_metrics]}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"zoos kept in {work}")


if __name__ == "__main__":
    main()
