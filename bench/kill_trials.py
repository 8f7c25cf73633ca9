"""Kill trials: SIGKILL `zoo generate` at random moments, rerun it, and compare the zoo with an uninterrupted one.

    python bench/kill_trials.py --trials 10                # a small vision zoo (1 parent, 2 children), packs off
    python bench/kill_trials.py --trials 5 --pack 2 --seed 1

One uninterrupted run makes the reference zoo. Each trial starts `zoo generate` in its own process group with a Ray
of its own (own temp dir), kills the whole group with SIGKILL at a random moment (by default once the zoo holds a
random number of `result.json` lines, so that kills land inside training, plus up to 0.2 s; `--by-time` after a
random share of the uninterrupted run's time instead), stops what is left of that Ray (its own processes only, found
by its temp dir), reruns the same command to completion and checks: exit 0, every planned member complete, the same
members as the reference, every checkpoint's tensors bit-identical to the reference's, and no Trainer state, temp
folder or lock left behind. Prints one row per trial.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from processes import OwnRay  # noqa: E402

from zoo import layout  # noqa: E402

CONFIGS = ROOT / "recipes" / "configs"


def spec() -> dict:
    return {"name": "kill-trials", "resources": {"cpu": 1, "gpu": 0}, "vision": {
        "pretraining": {"config": str(CONFIGS / "vision/pretrain_supervised_tiny.yaml"),
                        "fixed": {"num_train_epochs": 3, "checkpoint_every": 1, "max_train_samples": 512,
                                  "max_eval_samples": 128}, "grid": {"seed": [1]}},
        "finetuning": {"config": str(CONFIGS / "vision/finetune_tiny.yaml"),
                       "fixed": {"num_train_epochs": 3, "checkpoint_every": 1, "max_train_samples": 512,
                                 "max_eval_samples": 128}, "grid": {"optimizer": ["adamw", "sgd"]}}}}


def tensors(zoo_dir: Path) -> dict[str, dict]:
    from safetensors.numpy import load_file

    out = {}
    for member in layout.scan_members(zoo_dir):
        for folder in sorted(Path(member.path).glob("checkpoint_*")):
            for file in sorted(folder.glob("*.safetensors")):
                out[str(file.relative_to(zoo_dir))] = load_file(str(file))
    return out


def result_lines(zoo_dir: Path) -> int:
    """The result lines written so far in the zoo's member folders (read while the run writes them)."""
    if not zoo_dir.exists():
        return 0
    count = 0
    for path in zoo_dir.rglob("result.json"):
        if not any(part.startswith(".") for part in path.relative_to(zoo_dir).parts):
            try:
                count += len(layout.read_results(path.parent, lenient=True))
            except (OSError, layout.LayoutError):
                continue
    return count


def leftovers(zoo_dir: Path) -> list[str]:
    found = [p for p in zoo_dir.rglob("*") if p.name.startswith((".tmp_", ".old_", ".publish_staging"))]
    found += [p for p in zoo_dir.rglob(layout.TRAINER_STATE_DIR) if any(p.iterdir())]
    return [str(p.relative_to(zoo_dir)) for p in found]


def run_until_kill(command: list[str], env: dict[str, str], zoo: Path, *, by_time: bool, delay: float,
                   target: int, extra_wait: float) -> tuple[bool, float]:
    """Start `command` in its own process group and SIGKILL the group after `delay` seconds (`by_time`), or
    `extra_wait` seconds after the zoo holds `target` result lines. Returns whether it was killed (it may finish
    first) and the seconds it ran."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while proc.poll() is None:
        if by_time and time.perf_counter() - started >= delay:
            break
        if not by_time and result_lines(zoo) >= target:
            time.sleep(extra_wait)
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed, time.perf_counter() - started


def differing_files(got: dict[str, dict], reference: dict[str, dict]) -> list[str]:
    """Checkpoint files present in both whose tensors (names or values) differ."""
    return [name for name in set(got) & set(reference)
            if got[name].keys() != reference[name].keys()
            or any((got[name][k] != reference[name][k]).any() for k in got[name])]


def trial_problems(zoo: Path, rerun: subprocess.CompletedProcess, reference: dict[str, dict],
                   reference_members: int) -> list[str]:
    """What the rerun zoo gets wrong against the reference: exit status, members, checkpoint files and tensors,
    leftovers."""
    got = tensors(zoo)
    members = layout.scan_members(zoo)
    problems = []
    if rerun.returncode != 0:
        problems.append(f"rerun exit {rerun.returncode}: {rerun.stderr.strip().splitlines()[-1:]}")
    if not all(m.state == "complete" for m in members) or len(members) != reference_members:
        problems.append("members: " + ", ".join(f"{m.relpath}={m.state}" for m in members))
    if set(got) != set(reference):
        problems.append(f"checkpoint files differ: {sorted(set(got) ^ set(reference))[:3]}")
    differing = differing_files(got, reference)
    if differing:
        problems.append(f"{len(differing)} checkpoint files with other weights, e.g. {sorted(differing)[0]}")
    return problems + [f"left behind: {p}" for p in leftovers(zoo)]


def run_with_own_ray(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`command` to completion with a Ray of its own, stopped afterwards."""
    ray = OwnRay()
    try:
        return subprocess.run(command, env={**ray.env, "PYTHONPATH": str(ROOT)}, **kwargs)
    finally:
        ray.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack", type=int, default=0, help="train in packs of this many members (0: one by one)")
    parser.add_argument("--by-time", action="store_true", help="kill after a random delay, not a random epoch")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="zoo-kill-trials-"))
    (work / "spec.yaml").write_text(yaml.safe_dump(spec()))
    extra = ["--pack", str(args.pack)] if args.pack else []

    def command(zoo: Path) -> list[str]:
        return [sys.executable, "-m", "zoo", "generate", str(work / "spec.yaml"), "--zoo-dir", str(zoo), *extra]

    start = time.perf_counter()
    run_with_own_ray(command(work / "reference"), check=True, capture_output=True)
    full = time.perf_counter() - start
    reference = tensors(work / "reference")
    reference_members = len(layout.scan_members(work / "reference"))
    lines = sum(len(m.results) for m in layout.scan_members(work / "reference"))
    print(f"reference: {reference_members} members, {len(reference)} checkpoint files, {full:.0f} s uninterrupted")
    failures = 0
    for trial in range(args.trials):
        zoo = work / f"trial{trial}"
        delay = rng.uniform(0.15, 0.9) * full
        target, extra_wait = rng.randint(1, lines - 1), rng.uniform(0.0, 0.2)
        ray = OwnRay()
        killed, ran = run_until_kill(command(zoo), {**ray.env, "PYTHONPATH": str(ROOT)}, zoo, by_time=args.by_time,
                                     delay=delay, target=target, extra_wait=extra_wait)
        ray.stop()
        states = {m.relpath: m.state for m in layout.scan_members(zoo)} if zoo.exists() else {}
        rerun = run_with_own_ray(command(zoo), capture_output=True, text=True)
        problems = trial_problems(zoo, rerun, reference, reference_members)
        failures += bool(problems)
        done = sum(state == "complete" for state in states.values())
        at = f"{ran:.1f} s" if args.by_time else f"{ran:.1f} s, at result line {target}/{lines}"
        print(f"trial {trial}: {'killed' if killed else 'finished before the kill'} after {at} "
              f"({done}/{len(states)} members complete then) -> {'OK' if not problems else '; '.join(problems)}",
              flush=True)
    print(f"{args.trials - failures}/{args.trials} trials: the rerun gave the reference zoo bit for bit")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
