"""What runs in a search's trial: the trainer class the search builds, which trains the trial's planned member
(or pack of members) into the zoo under the driver's lock."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.population.planner import plan_member
from zoo.population.plans import PlannedMember, StagePlan


def _writer_guard(zoo_dir: str, writer_id: str | None, driver_pid: int):
    """What a trial holds while it trains: a `layout.WriterGuard` on its driver's lock (see the comment above
    layout.ZooLock); nothing in the driver itself (Optuna trains there) or without a lock."""
    if writer_id is None or os.getpid() == driver_pid:
        return contextlib.nullcontext()
    return layout.WriterGuard(zoo_dir, writer_id)


def _guarded_trainer_class():
    from zoo.training import ZooTrainer

    class GuardedTrainer(ZooTrainer):
        """A member's trainer in a trial: its resumable-state saves (written by the Trainer, not through zoo.layout)
        are checked against the driver's lock too."""

        def _save_checkpoint(self, model, trial):
            layout.check_writer()
            return super()._save_checkpoint(model, trial)

    return GuardedTrainer


def _make_trainer_class():
    from zoo.training import ZooTrainer

    class PopulationTrainer(ZooTrainer):
        """The trainer a search runs: `train(trial=...)` trains the trial's planned member into the zoo with a
        member trainer of its own (built in the trial's process), and `evaluate()` then reports that member's
        final metrics from its result.json, so the search needs no model of its own."""

        def setup_population(self, run, plans: dict[str, list[PlannedMember]], zoo_dir: str,
                             stage: StagePlan | None = None, parent: str | None = None):
            self.run, self.plans, self.zoo_dir, self.stage_plan, self.parent = run, plans, zoo_dir, stage, parent
            self.pack_mode = stage.pack_mode if stage is not None else "auto"
            self._member_dir: str | None = None
            # the trials check the driver's lock before every write (see the comment above layout.ZooLock)
            self.writer_id, self.driver_pid = layout.held_writer_id(zoo_dir), os.getpid()

        def _plan(self, trial) -> list[PlannedMember]:
            if isinstance(trial, dict):  # Ray: the grid names the member, or the pack
                return self.plans[trial["member"]]
            values = self.stage_plan.sample(trial)  # Optuna: a member from the sampled values
            family = {"architecture": self.run.args.model.architecture} if self.run.args.model.architecture else {}
            return [plan_member(self.stage_plan, {**values, **family}, list(values), self.parent)]

        def _member_args(self, plan: PlannedMember):
            return self.run.args.with_params({k: v for k, v in plan.params.items()
                                              if k not in ("pretrained", "output_dir")})

        def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
            if trial is None:
                raise ValueError("PopulationTrainer trains the members of a search; use ZooTrainer for one member")
            plans = self._plan(trial)
            zoo_dir = Path(self.zoo_dir)
            self._member_dir = str(zoo_dir / plans[0].relpath())
            with _writer_guard(self.zoo_dir, self.writer_id, self.driver_pid):
                if len(plans) == 1:
                    return _train_member(self, plans[0], zoo_dir)
                members = _train_pack(self, plans, zoo_dir, trial["member"])
            complete = [m for m in members if m.is_complete()]  # the search reports one of them
            self._member_dir = str(complete[0].path) if complete else self._member_dir
            return members

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            last = layout.load_member(self._member_dir).last_result or {} if self._member_dir else {}
            return {f"{metric_key_prefix}_{key.removeprefix('test_')}": value for key, value in last.items()
                    if key.startswith("test_") and isinstance(value, (int, float))}

        def _tune_save_checkpoint(self, checkpoint_dir: str) -> None:
            # Ray would copy the model and optimizer of every trial into its storage (GBs over a zoo); the member is
            # already in the zoo and its resumable state in .trainer_state, so Ray keeps a pointer only.
            layout.atomic_write_json(Path(checkpoint_dir) / "member.json", {"member": self._member_dir})

    return PopulationTrainer


def _train_member(trainer, plan: PlannedMember, zoo_dir: Path):
    """A trial that trains one member."""
    from zoo.runs import train_prepared

    member_dir = zoo_dir / plan.relpath()
    args = trainer._member_args(plan)
    writer = trainer.run.prepare_member(args, member_dir, _provenance())
    args.training.output_dir = str(layout.trainer_state_dir(zoo_dir, member_dir))
    args.training.disable_tqdm = True
    return train_prepared(trainer.run.trainer(args, writer, trainer_class=_guarded_trainer_class()), member_dir)


def _train_pack(trainer, plans: list[PlannedMember], zoo_dir: Path, key: str) -> list[layout.MemberInfo]:
    """A trial that trains the pack `key` (zoo.packs)."""
    from zoo import packs

    first = plans[0]
    stage_dir = layout.zoo_stage_dir(zoo_dir, first.modality, first.stage, first.parent)
    return packs.train_pack(trainer.run, [(p.name, trainer._member_args(p), zoo_dir / p.relpath()) for p in plans],
                            layout.trainer_state_dir(zoo_dir, stage_dir) / key, trainer.pack_mode, _provenance())


def _provenance() -> dict[str, Any]:
    """Where a trial ran: the Ray node and host (useful on a cluster)."""
    import socket

    info: dict[str, Any] = {"hostname": socket.gethostname()}
    try:
        import ray

        context = ray.get_runtime_context()
        info.update(ray_node_id=context.get_node_id(), ray_trial=context.get_actor_name())
    except Exception:  # noqa: BLE001 - outside Ray there is nothing more to say
        pass
    return info


def population_trainer(run, plans: dict[str, list[PlannedMember]], zoo_dir: Path, stage: StagePlan | None = None,
                       parent: str | None = None):
    """The trainer a stage's search runs: `plans` maps each grid value to its member (or pack); an Optuna search
    gives no plans and samples its members from `stage` (of `parent`)."""
    trainer = run.trainer(run.args, None, trainer_class=_make_trainer_class())
    trainer.setup_population(run, plans, str(zoo_dir.resolve()), stage, parent)
    return trainer
