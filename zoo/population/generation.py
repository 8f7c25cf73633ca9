"""Generating a zoo: its spec planned, recorded in zoo.json, and its stages trained in order, each stage being what
is left of it (complete members are skipped, incomplete ones resume, failed ones are retried)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from zoo import kinds, layout
from zoo.arguments import ConfigError, parse_config
from zoo.kinds import kind_defaults
from zoo.population.planner import plan_member, plan_members
from zoo.population.plans import PlannedMember, StagePlan
from zoo.population.progress import Progress, duration, say
from zoo.population.ray_runtime import _init_ray
from zoo.population.search import run_optuna, run_stage
from zoo.population.spec import check_zoo_dir, load_spec, override_pack, spec_hash

UNFINISHED_STATES = ("failed", "incomplete", "pending")  # counted in a stage's summary


def generate(spec_path: str | Path, zoo_dir: str | Path, ray_address: str | None = None,
             cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
             modalities: tuple[str, ...] = kinds.MODALITIES, stages_wanted: tuple[str, ...] = kinds.STAGES,
             optuna_trials: int | None = None, pack: int | None = None) -> list[layout.MemberInfo]:
    """Train every planned member that is not complete yet; return the zoo's members. `pack` overrides the
    stages' `pack:` (members trained at once in one trial)."""
    spec, stages = load_spec(spec_path)
    _check_gpus(spec, gpus_per_trial)
    override_pack(stages, pack)
    for plan in stages:
        if optuna_trials and plan.ranges:
            plan.optuna_trials = optuna_trials
        if not plan.points and not plan.optuna_trials:
            raise ConfigError(f"{plan.modality}.{plan.stage} has only ranges: give --optuna N or optuna.n_trials")
    plan_members(stages)
    zoo_dir = Path(zoo_dir).resolve()  # trials run in Ray's own working folders: absolute paths only
    check_zoo_dir(zoo_dir, spec)
    resources = dict(spec.get("resources") or {})
    resources = {"cpu": cpus_per_trial or resources.get("cpu", 1), "gpu": gpus_per_trial or resources.get("gpu", 0)}
    with contextlib.ExitStack() as stack:
        if layout.held_writer_id(zoo_dir) is None:  # called as a library: the lock `zoo generate` takes first
            stack.enter_context(layout.ZooLock(zoo_dir, "zoo generate"))
        _generate_stages(spec, str(Path(spec_path).resolve()), stages, zoo_dir, resources, ray_address, modalities,
                         stages_wanted)
    return layout.scan_members(zoo_dir)


def _check_gpus(spec: dict[str, Any], gpus_per_trial: float | None) -> None:
    """A trial is one process: it would train on one GPU and leave the others idle."""
    gpus = gpus_per_trial if gpus_per_trial is not None else (spec.get("resources") or {}).get("gpu", 0)
    if gpus > 1:
        where = f"--gpus-per-trial {gpus:g}" if gpus_per_trial is not None else f"resources.gpu {gpus:g}"
        raise ConfigError(f"{where}: a zoo trial trains its member in one process on at most one GPU; give 1 or a "
                          "fraction, or train members that need several GPUs one per `accelerate launch` "
                          "(docs/scale.md)")


def _generate_stages(spec: dict[str, Any], spec_path: str, stages: list[StagePlan], zoo_dir: Path,
                     resources: dict[str, float], ray_address: str | None, modalities, stages_wanted) -> None:
    """Record the zoo's spec and plan, then train the wanted stages in order (under the zoo's lock)."""
    sections = [(plan.modality, plan.stage) for plan in stages]
    wanted = [plan for plan in stages if plan.modality in modalities and plan.stage in stages_wanted]
    for plan in wanted:  # a damaged result.json stops the run before anything is written or trained
        for member in plan.members:
            layout.read_results(zoo_dir / member.relpath())
    zoo_dir.mkdir(parents=True, exist_ok=True)
    if layout.read_zoo_file(zoo_dir) is not None:
        say(f"resuming the zoo in {zoo_dir}: complete members are kept, the others go on from their last saved state")
    planned = [{"member": m.relpath(), "stage": m.stage, "epochs": m.epochs} for plan in stages for m in plan.members]
    layout.write_zoo_file(zoo_dir, spec, spec_hash(spec), spec_path=spec_path, planned=planned)
    for plan in wanted:
        label = f"{plan.modality}/{plan.stage}" + \
            (f" ({plan.kind})" if sections.count((plan.modality, plan.stage)) > 1 else "")
        _generate_stage(plan, zoo_dir, resources, ray_address, label)


def _generate_stage(plan: StagePlan, zoo_dir: Path, resources: dict[str, float], ray_address: str | None,
                    label: str) -> None:
    """Train what is left of one stage (per parent when finetuning); say what is left and, at the end, how long
    the stage took."""
    started = time.monotonic()
    work = _stage_work(zoo_dir, plan)
    for parent in work:
        drop_finished_states(zoo_dir, layout.zoo_stage_dir(zoo_dir, plan.modality, plan.stage, parent))
    todo = [member for members in work.values() for member in members]
    if not todo and not plan.optuna_trials:
        say(f"{label}: nothing to train")
        return  # no data to prepare, no Ray to start (a rerun is quick)
    if todo:
        say(f"{label}: {len(todo)} of {len(plan.members) or len(todo)} members to train")
    for parent, members in work.items():
        if members or plan.optuna_trials:
            _train_parent(plan, parent, members, zoo_dir, resources, ray_address)
    states = [layout.load_member(zoo_dir / m.relpath(), lenient=True).state if layout.is_member_dir(
        zoo_dir / m.relpath()) else "pending" for m in todo]
    others = ", ".join(f"{states.count(state)} {state}" for state in UNFINISHED_STATES if states.count(state))
    sampled = " (and those Optuna sampled)" if plan.optuna_trials else ""
    done = states.count("complete")
    say(f"{label}: {done} member{'s' if done != 1 else ''} done{sampled}{', ' + others if others else ''} in "
        f"{duration(time.monotonic() - started)}")


def drop_finished_states(zoo_dir: Path, folder: Path) -> None:
    """Remove the Trainer or pack states that a killed run left for members that are complete (killed between a
    member's last epoch and the removal of its state): reruns skip complete members, so nothing else would."""
    state_root = layout.trainer_state_dir(zoo_dir, folder)
    for state in sorted(state_root.iterdir()) if state_root.is_dir() else []:
        names: list[str] | None = [state.name]
        if state.name.startswith("pack-"):
            infos = sorted(state.glob("epoch-*/pack.json"))
            try:
                names = layout.read_json(infos[-1]).get("members") if infos else None
            except layout.LayoutError:
                names = None
        if names and all(layout.is_member_dir(folder / name) and
                         layout.load_member(folder / name, lenient=True).is_complete() for name in names):
            layout.remove_trainer_state(state)


def _train_parent(plan: StagePlan, parent: str | None, members: list[PlannedMember], zoo_dir: Path,
                  resources: dict[str, float], ray_address: str | None) -> None:
    """Train a stage's `members` of one parent (None when pretraining), and sample more with Optuna if asked."""
    from zoo.runs import Arguments, MemberRun

    base = dict(plan.base)
    if parent is not None:
        base["pretrained"] = _parent_checkpoint(plan, parent, zoo_dir)
    base["output_dir"] = str(zoo_dir)
    base["disable_tqdm"] = True
    args = Arguments(*parse_config(base, defaults=kind_defaults(kinds.get(plan.kind))))
    run = MemberRun(plan.kind, args, base)
    name = (f"{plan.modality}-{plan.stage}" + (f"-{parent}" if parent else ""))[:100]
    if members:  # planned grid members, or sampled members left incomplete by an earlier run
        _init_ray(ray_address)
        with Progress(zoo_dir, members):
            run_stage(run, members, zoo_dir, resources, name, plan)
    if plan.optuna_trials:
        run_optuna(run, plan, parent, zoo_dir, plan.optuna_trials, name)


def _parent_checkpoint(plan: StagePlan, parent: str, zoo_dir: Path) -> str:
    """The checkpoint of `parent` that the finetuning stage starts from (its `from_checkpoint`)."""
    parent_info = layout.load_member(zoo_dir / layout.zoo_member_dir("", plan.modality, kinds.PRETRAINING, parent))
    epoch = plan.from_checkpoint
    epoch = parent_info.checkpoints[-1] if epoch == "last" else int(epoch)
    if epoch not in parent_info.checkpoints:  # a parent sampled by Optuna: known only now
        raise ConfigError(f"{plan.where}.from_checkpoint: {epoch} is not a checkpoint of the parent "
                          f"{parent} (it saved epochs {', '.join(map(str, parent_info.checkpoints))})")
    return str(parent_info.checkpoint_dir(epoch))


def _stage_work(zoo_dir: Path, plan: StagePlan) -> dict[str | None, list[PlannedMember]]:
    """Per parent (None when pretraining): the members still to train. Finetuning waits for complete parents."""
    parents = [None] if kinds.is_pretraining(plan.stage) else _complete_parents(zoo_dir, plan)
    return {parent: _members_left(zoo_dir, plan, parent) for parent in parents}


def _complete_parents(zoo_dir: Path, plan: StagePlan) -> list[str | None]:
    """A finetuning stage's parents: the complete pretrained members of its parent kind (of those planned, when
    the parents were planned); each incomplete one is said to be skipped."""
    pretrained = zoo_dir / plan.modality / kinds.PRETRAINING
    found = layout.scan_members(pretrained) if pretrained.is_dir() else []
    planned = {m.parent for m in plan.members}
    parent_kind = kinds.get(plan.kind).parent_kind
    parents: list[str | None] = []
    for member in found:
        if plan.members and member.name not in planned:
            continue
        if getattr(kinds.of_member(member.config), "name", None) != parent_kind:
            continue  # a parent of another family (BERT beside GPT-2)
        if member.is_complete():
            parents.append(member.name)
        else:
            print(f"zoo: skipping the finetuning of {member.name}: the parent is not complete", file=sys.stderr)
    return parents


def _members_left(zoo_dir: Path, plan: StagePlan, parent: str | None) -> list[PlannedMember]:
    """The members of `parent` (None when pretraining) still to train: the planned ones not complete, or, in a
    stage that Optuna samples, the sampled ones that an earlier run left incomplete (to resume)."""
    if plan.optuna_trials:
        folder = layout.zoo_stage_dir(zoo_dir, plan.modality, plan.stage, parent)
        found = layout.scan_members(folder) if folder.is_dir() else []
        sampled = [{k: member.config["recipe"][k] for k in plan.ranges} for member in found if not member.is_complete()]
        return [plan_member(plan, values, list(values), parent) for values in sampled]
    if kinds.is_pretraining(plan.stage):
        points = plan.members
    elif plan.members:
        points = [m for m in plan.members if m.parent == parent]
    else:  # parents were sampled: expand the grid now
        points = [plan_member(plan, point, keys, parent) for point, keys in plan.points]
    return [m for m in points if not _complete(zoo_dir, m)]


def _complete(zoo_dir: Path, member: PlannedMember) -> bool:
    path = zoo_dir / member.relpath()
    return layout.is_member_dir(path) and layout.load_member(path).is_complete()
