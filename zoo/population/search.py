"""A stage's search: `Trainer.hyperparameter_search` over its planned members (Ray Tune, one trial per member or
per pack) or over members Optuna samples from its ranges, with Ray's scratch storage kept outside the zoo."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from zoo import layout
from zoo.population.plans import PlannedMember, StagePlan
from zoo.population.progress import say
from zoo.population.trials import population_trainer


def _scratch_dir(zoo_dir: Path) -> Path:
    """Ray's storage for a zoo: outside the zoo, removed once the stage is done."""
    digest = hashlib.sha256(str(zoo_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "transformer-zoo-ray" / digest


def _remove_scratch(storage: Path, name: str) -> None:
    """Drop a stage's Ray storage, and the scratch folders it leaves empty."""
    shutil.rmtree(storage / name, ignore_errors=True)
    for folder in (storage, storage.parent):
        try:
            folder.rmdir()  # only when empty: another zoo's stage may be running
        except OSError:
            break


def _all_trials_failed(err: AttributeError | KeyError) -> bool:
    """The Ray integration found no best trial (`None.trial_id`), or one without a result (`["objective"]`): every
    trial failed, each recorded in its member(s)."""
    if isinstance(err, KeyError):
        return err.args == ("objective",)
    return err.obj is None and err.name == "trial_id"


def _objective_value(metrics: dict[str, float]) -> float:
    return float(metrics.get("eval_acc", -metrics.get("eval_loss", 0.0)))


def run_stage(run, members: list[PlannedMember], zoo_dir: Path, resources: dict[str, float], name: str,
              plan: StagePlan | None = None) -> None:
    """Train `members` as one Ray Tune grid search: one trial per member, or per pack of members."""
    from ray import tune

    from zoo.packs import group_packs, pack_id

    size = plan.pack if plan is not None else 1
    plans: dict[str, list[PlannedMember]] = {}
    for group in group_packs(members, lambda m: m.params, size):
        plans[group[0].name if len(group) == 1 else pack_id([m.relpath() for m in group])] = group
    for key, group in plans.items():
        epoch = resume_epoch(zoo_dir, group, key)
        for member in group if epoch else []:
            say(f"{member.relpath()} resumes from epoch {epoch}")
    trainer = population_trainer(run, plans, zoo_dir, plan)
    storage = _scratch_dir(zoo_dir)
    storage.mkdir(parents=True, exist_ok=True)
    try:
        trainer.hyperparameter_search(
            hp_space=lambda trial: {"member": tune.grid_search(sorted(plans))},
            backend="ray",
            n_trials=1,
            direction="maximize",
            compute_objective=_objective_value,
            resources_per_trial=resources,
            storage_path=str(storage),
            name=name,
            raise_on_failed_trial=False,
            verbose=0,
        )
    except (AttributeError, KeyError) as err:
        if not _all_trials_failed(err):
            raise
    finally:
        _remove_scratch(storage, name)


def resume_epoch(zoo_dir: Path, group: list[PlannedMember], key: str) -> int | None:
    """The epoch after which the trial of `group` (one member, or the pack `key`) goes on: that of the newest
    complete resumable state it will find (zoo.runs.last_trainer_checkpoint, zoo.packs); None when it starts
    afresh. Only reads."""
    first = group[0]
    try:
        if len(group) == 1:
            state_dir = layout.trainer_state_dir(zoo_dir, zoo_dir / first.relpath())
            states = state_dir.glob("checkpoint-*/trainer_state.json")
            newest = max(states, key=lambda p: int(p.parent.name.split("-")[-1]), default=None)
            return int(round(layout.read_json(newest)["epoch"])) if newest else None
        stage_dir = layout.zoo_stage_dir(zoo_dir, first.modality, first.stage, first.parent)
        infos = sorted((layout.trainer_state_dir(zoo_dir, stage_dir) / key).glob("epoch-*/pack.json"))
        info = layout.read_json(infos[-1]) if infos else {}
        return int(info["epoch"]) if info.get("members") == [m.name for m in group] and info["epoch"] else None
    except (layout.LayoutError, OSError, KeyError, TypeError, ValueError):  # unreadable: the trial starts afresh
        return None


def run_optuna(run, plan: StagePlan, parent: str | None, zoo_dir: Path, n_trials: int, name: str) -> None:
    """Sample members from the stage's ranges with Optuna (in this process), up to `n_trials` in all."""
    trainer = population_trainer(run, {}, zoo_dir, plan, parent)
    folder = layout.zoo_stage_dir(zoo_dir, plan.modality, plan.stage, parent)
    left = n_trials - len([m for m in layout.scan_members(folder)] if folder.is_dir() else [])
    if left <= 0:
        return
    study_dir = zoo_dir / ".optuna"
    study_dir.mkdir(parents=True, exist_ok=True)
    trainer.hyperparameter_search(
        hp_space=plan.sample, backend="optuna", n_trials=left, direction="maximize",
        compute_objective=_objective_value, storage=f"sqlite:///{study_dir.resolve() / 'studies.db'}",
        study_name=name, load_if_exists=True, catch=(Exception,),
    )
