"""`zoo generate`: the dry run's plan, or the run itself under the zoo's lock, ending with the status table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from zoo import kinds, layout
from zoo.population.generation import generate
from zoo.population.planner import plan_members
from zoo.population.plans import PlannedMember, StagePlan
from zoo.population.ray_runtime import RAY_DIED, ray_died
from zoo.population.spec import check_zoo_dir, load_spec, override_pack

INTERRUPTED = ("zoo generate: interrupted: rerun the same command to resume (complete members are kept, the others "
               "go on from their last saved epoch)")


def cli_generate(args) -> int:
    spec, stages = load_spec(args.spec)
    plan_members(stages)
    modalities = kinds.MODALITIES if args.modality == "all" else (args.modality,)
    stages_wanted = kinds.STAGES if args.stage == "all" else (args.stage,)
    _check_optuna(args, stages)
    override_pack(stages, args.pack)  # what the real run packs
    if args.dry_run:
        _dry_run(args, spec, stages, modalities, stages_wanted)
        return 0
    return _generate_and_show(args, modalities, stages_wanted)


def _check_optuna(args, stages: list[StagePlan]) -> None:
    """`--optuna N` needs N >= 1 and a stage with `ranges` to sample from."""
    if args.optuna is None:
        return
    if args.optuna < 1:
        raise ValueError(f"--optuna must be >= 1, got {args.optuna}")
    if not any(plan.ranges for plan in stages):
        raise ValueError(f"--optuna {args.optuna}: the spec {args.spec} has no stage with `ranges` to sample")


def _dry_run(args, spec: dict[str, Any], stages: list[StagePlan], modalities, stages_wanted) -> None:
    """Refuse the zoo folder as the real run would, then print the plan."""
    if Path(args.zoo_dir).exists() and not Path(args.zoo_dir).is_dir():  # what the real run's lock refuses
        raise layout.LayoutError(f"{args.zoo_dir}: is a file, not a zoo folder")
    check_zoo_dir(Path(args.zoo_dir).resolve(), spec)  # the real run's refusal of another spec's zoo
    _print_plan(stages, modalities, stages_wanted, args.optuna)


def _generate_and_show(args, modalities, stages_wanted) -> int:
    """Generate under the zoo's lock, then print the status table: 0 when every member is complete, 1 when not,
    130 when interrupted, 3 when the Ray cluster went away."""
    from zoo.status import format_table, status_rows

    zoo_dir = Path(args.zoo_dir)
    with layout.ZooLock(zoo_dir, "zoo generate"):  # one writer per zoo; the kernel drops it if we are killed
        try:
            generate(args.spec, zoo_dir, args.ray_address, args.cpus_per_trial, args.gpus_per_trial, modalities,
                     stages_wanted, args.optuna, args.pack)
        except KeyboardInterrupt:  # Ctrl-C: Ray's own hint (tune.run(..., resume=True)) does not apply here
            print(INTERRUPTED, file=sys.stderr, flush=True)
            return 130
        except Exception as err:  # noqa: BLE001 - Ray's own errors have many types
            if not ray_died(err):
                raise
            print(RAY_DIED.format(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"),
                  file=sys.stderr)
            return 3
    rows = status_rows(zoo_dir)
    print(format_table(rows))
    return 0 if all(row["state"] == "complete" for row in rows) else 1


def _print_plan(stages: list[StagePlan], modalities, stages_wanted, optuna: int | None) -> None:
    """The dry run's output: the planned members, their count per stage, the packs, the Optuna samples."""
    members = [m for plan in stages for m in plan.members if m.modality in modalities and m.stage in stages_wanted]
    for member in members:
        print(member.relpath())
    counts: dict[str, int] = {}
    for member in members:
        key = f"{member.modality}/{member.stage}"
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(members)} members: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    _print_packs(stages, modalities, stages_wanted)
    for plan in stages:
        sampled = optuna or plan.optuna_trials
        if plan.ranges and sampled and plan.modality in modalities and plan.stage in stages_wanted:
            per_parent = " per parent" if kinds.is_finetuning(plan.stage) else ""
            print(f"plus {sampled} members{per_parent} sampled by Optuna in {plan.modality}/{plan.stage} "
                  f"from ranges of {', '.join(plan.ranges)}")


def _print_packs(stages: list[StagePlan], modalities, stages_wanted) -> None:
    """Per stage that packs: how many trials, and the sizes of their packs."""
    for plan in stages:
        if plan.pack > 1 and plan.modality in modalities and plan.stage in stages_wanted and plan.members:
            from zoo.packs import group_packs

            by_parent: dict[str | None, list[PlannedMember]] = {}
            for member in plan.members:
                by_parent.setdefault(member.parent, []).append(member)
            sizes = [len(g) for group in by_parent.values() for g in group_packs(group, lambda m: m.params, plan.pack)]
            print(f"{plan.modality}/{plan.stage}: {len(sizes)} trials, packs of {sorted(sizes, reverse=True)}")
