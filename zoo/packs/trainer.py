"""`PackTrainer`: trains a pack's members at once on their stacked weights, and writes each as it would train alone."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import layout
from zoo.packs.evaluation import evaluate_together
from zoo.packs.grouping import check_same_schedule, resolve_mode
from zoo.packs.lanes import Lane
from zoo.packs.optimizer import PackedOptimizer
from zoo.packs.stacked import StackedMembers, first_device
from zoo.packs.state import load_state, save_state
from zoo.training import MemberWriter, TrainingDiverged, ZooTrainer, isolated_rng

logger = logging.getLogger("zoo")
# A pack's gradients accumulate in place into views of its flat [K, P] storage (`StackedMembers.flats`), which
# autograd's layout check reports once per process; it is the intended layout, for the trainer and the benchmarks.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


@dataclass
class PackMember:
    """One member of a pack: its arguments, folder, trainer (evaluation, data order), writer and lane."""

    name: str
    args: Any
    member_dir: Path
    writer: MemberWriter
    trainer: ZooTrainer | None = None
    model: nn.Module | None = None
    lane: Lane | None = None
    objective: Any = None
    failed: str | None = None
    loader: Any = None
    iterator: Any = None


class PackTrainer(ZooTrainer):
    """Trains a pack: the stacked members are its model, `train()` runs every member's steps at once."""

    def __init__(self, run, members: list[PackMember], state_dir: Path, mode: str = "auto"):
        self.run, self.pack, self.state_dir = run, members, Path(state_dir)
        first = members[0]
        check_same_schedule(members)
        for member in members:  # each member's model from its own seed, and its lane from there on
            member.model = run.build_model(member.args)  # seeds the global stream with the member's seed
            member.model.to(first.args.training.device)
            member.lane = Lane()
        models = [member.model for member in members]
        self.stacked = stacked = StackedMembers(models, mode)
        args = copy.deepcopy(first.args.training)
        args.output_dir = str(self.state_dir)
        super().__init__(model=stacked, args=args, objective=run.objective(first.args),
                         eval_dataset=run.data.splits["test"])
        for member in members:
            member.trainer = run.trainer(member.args, None, model=member.model)
            member.writer.trainer = member.trainer
            member.objective = run.objective(member.args)
        # Evaluation batches are large: on a CPU a vmapped forward over K of them outgrows the caches (3x slower than
        # member after member for K = 8 in `bench/bench_gpu_packs.py --cpu`), so there each member's stock model
        # runs on the shared batch; on an accelerator the K forwards are one vmapped pass.
        self.vmap_eval = stacked.mode == "vmap" and first_device(models).type != "cpu"
        self.packed_optimizer = self._packed_optimizer()

    def _packed_optimizer(self) -> PackedOptimizer:
        first = self.pack[0]
        training = [m.args.training for m in self.pack]
        momenta = [m.args.zoo.momentum if m.args.zoo.optimizer == "sgd" else 0.0 for m in self.pack]
        decay = set(first.trainer.get_decay_parameter_names(first.model))
        shared = first.args.training
        return PackedOptimizer(self.stacked, first.args.zoo.optimizer, [t.learning_rate for t in training],
                               [t.weight_decay for t in training], decay, (shared.adam_beta1, shared.adam_beta2),
                               shared.adam_epsilon, momenta, shared.max_grad_norm)

    # ------------------------------------------------ the loop

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        for member in self.pack:
            with member.lane.active():
                member.loader = member.trainer.get_train_dataloader()
        steps_per_epoch = len(self.pack[0].loader)
        epochs = int(self.pack[0].args.training.num_train_epochs)
        schedule, factor = self._schedule(steps_per_epoch * epochs)
        start_epoch = self._resume(schedule)
        if start_epoch == 0:
            self._write_initial()
        self.stacked.train()
        for epoch in range(start_epoch, epochs):
            self._start_epoch(epoch)
            sums = None
            for _ in range(steps_per_epoch):
                sums = self._step(factor(), sums)
                schedule.step()
            self._end_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, sums)
            self._save_state(epoch + 1)
            if all(m.failed for m in self.pack):
                break
        self._finish()
        self._report_failures()

    def _schedule(self, total_steps: int):
        """The learning-rate schedule of the members (shared), as a factor of each member's own rate."""
        probe = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([probe], lr=1.0)
        scheduler = self.pack[0].trainer.create_scheduler(total_steps, optimizer)
        optimizer.step()  # (no gradients: nothing changes; torch checks the order of the first steps)
        return scheduler, (lambda: optimizer.param_groups[0]["lr"])

    def _start_epoch(self, epoch: int) -> None:
        started = time.time()
        for member in self.pack:
            member.writer._epoch_start = started
            with member.lane.active():
                if hasattr(member.loader, "set_epoch"):
                    member.loader.set_epoch(epoch)
                member.iterator = iter(member.loader)

    def _step(self, factor: float, sums):
        prepared = []
        for member in self.pack:
            with member.lane.active():  # fetching draws too (a DataLoader iterator takes its seed lazily)
                batch = member.trainer._prepare_inputs(next(member.iterator))
                prepared.append(member.objective.prepare(batch))
        # members that see the same batch (one seed, a frozen shared encoder): it goes in once, unbatched
        common = bool(self.stacked.shared) and all(
            torch.equal(p[key], prepared[0][key]) for p in prepared[1:] for key in prepared[0])
        stacked_inputs = prepared[0] if common else {k: torch.stack([p[k] for p in prepared]) for k in prepared[0]}
        loss, correct, count = self._losses(stacked_inputs, common)
        active = self.packed_optimizer.active
        torch.where(active, loss, torch.zeros_like(loss)).sum().backward()
        self.stacked.gather_loop_grads()
        self.packed_optimizer.clip()
        self.packed_optimizer.step(factor)
        self.packed_optimizer.zero_grad()
        step_sums = torch.stack([loss.detach().float() * count, correct.float(), count.float()])  # [3, K]
        return step_sums if sums is None else sums + step_sums

    def _losses(self, stacked_inputs: dict, common: bool):
        """Every member's (loss, correct, count); member after member from here on when vmap cannot run the model."""
        lanes = [member.lane for member in self.pack]
        with self.accelerator.autocast():
            try:
                return self.stacked.losses(self.zoo_objective, stacked_inputs, common, lanes)
            except RuntimeError as err:  # a model whose code vmap cannot batch (data-dependent Python branches)
                if self.stacked.mode != "vmap" or "vmap" not in str(err):
                    raise
                logger.warning("pack %s: vmap cannot run this model (%s); training member after member",
                               self.state_dir.name, str(err).splitlines()[0][:120])
                self.stacked.mode = "loop"
                self.vmap_eval = False  # (its evaluation could not be vmapped either)
                return self.stacked.losses(self.zoo_objective, stacked_inputs, common, lanes)

    def _end_epoch(self, epoch: int, step: int, sums) -> None:
        values = sums.tolist() if sums is not None else [[0.0] * len(self.pack)] * 3
        self.stacked.eval()
        active = [m for m in self.pack if not m.failed]
        evaluated = self._evaluate_members(active, None, "eval", on_lanes=True)
        for k, member in enumerate(self.pack):
            if member.failed:
                continue
            loss_sum, correct, count = values[0][k], values[1][k], values[2][k]
            stats = {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1), "samples": round(count)}
            if evaluated is not None:
                metrics = evaluated[active.index(member)]
            else:
                with member.lane.active():
                    metrics = member.trainer.evaluate()
            try:
                member.writer.write_epoch(epoch, step, stats, metrics, member.model)
            except TrainingDiverged as err:
                self._fail(k, member, f"TrainingDiverged: {err}")
        self.stacked.train()

    def _fail(self, k: int, member: PackMember, error: str) -> None:
        member.failed = error
        self.packed_optimizer.active[k] = False
        layout.record_failure(member.member_dir, error, pack=self.state_dir.name)
        logger.warning("pack %s: member %s failed (%s); the others go on", self.state_dir.name, member.name, error)

    def _report_failures(self) -> None:
        """Failures are recorded in each failed member; the pack's trial fails only when no member is left."""
        failed = [m for m in self.pack if m.failed]
        if not failed:
            return
        message = f"{len(failed)} of {len(self.pack)} members failed: " + \
            "; ".join(f"{m.name}: {m.failed}" for m in failed)[:400]
        if len(failed) == len(self.pack):
            raise TrainingDiverged(message)
        logger.warning("pack %s: %s", self.state_dir.name, message)

    # ------------------------------------------------ evaluation, once for the pack

    def _write_initial(self) -> None:
        """Epoch 0 of every member that lacks it, evaluated at once (isolated from the lanes, as alone)."""
        missing = [m for m in self.pack if m.writer.epoch0_missing()]
        metrics = self._initial_metrics(missing) if missing else None
        for member in self.pack:
            done = metrics is not None and member in missing
            member.writer.write_initial(member.model, metrics=metrics[missing.index(member)] if done else None)

    def _initial_metrics(self, missing: list[PackMember]) -> list[tuple[dict, dict]] | None:
        """The (test, train) metrics of each of `missing`; None when their writers evaluate them one by one."""
        train_set = missing[0].trainer.train_eval_dataset
        if any(m.trainer.train_eval_dataset is not train_set for m in missing):
            return None
        self.stacked.eval()
        with isolated_rng():
            test = self._evaluate_members(missing, None, "test", on_lanes=False)
            if test is None:
                return None
            train = self._evaluate_members(missing, train_set, "train", on_lanes=False) \
                if train_set is not None else [{} for _ in missing]
        return list(zip(test, train))

    def _evaluate_members(self, members: list[PackMember], dataset, prefix: str, on_lanes: bool) -> list | None:
        """The metrics `member.trainer.evaluate(dataset, metric_key_prefix=prefix)` gives each of `members` (less its
        timings), with each batch's forward passes computed once for all of them (`zoo.packs.evaluation`)."""
        return evaluate_together(members, lambda inputs: self._eval_outputs(members, inputs), dataset, prefix,
                                 on_lanes)

    def _eval_outputs(self, members: list[PackMember], inputs: dict) -> list[tuple]:
        """(loss, predictions, labels) of each member on one evaluation batch: one vmapped pass (`vmap_eval`), or each
        member's stock model in turn."""
        prepared = self.zoo_objective.eval_prepare(inputs)
        if self.vmap_eval:
            try:
                loss, predictions, labels = self.stacked.eval_losses(self.zoo_objective, prepared)
                slots = [self.stacked.members.index(m.model) for m in members]
                return [(loss[k], predictions[k], labels[k]) for k in slots]
            except RuntimeError as err:  # a model whose code vmap cannot batch
                logger.warning("pack %s: vmap cannot evaluate this model (%s); evaluating member after member",
                               self.state_dir.name, str(err).splitlines()[0][:120])
                self.vmap_eval = False
        return [self.zoo_objective.eval_loss(m.model, prepared) for m in members]

    # ------------------------------------------------ resumable state (`zoo.packs.state`)

    def _save_state(self, epoch: int) -> None:
        save_state(self.state_dir, epoch, self.stacked, self.packed_optimizer, self.pack)

    def _resume(self, schedule) -> int:
        """Load the newest complete pack state; returns the epoch to start from (0: a fresh pack)."""
        info = load_state(self.state_dir, self.stacked, self.packed_optimizer, self.pack)
        if info is None:
            return 0
        for _ in range(info["optimizer_steps"]):
            schedule.step()
        logger.info("pack %s resumes after epoch %d", self.state_dir.name, info["epoch"])
        return int(info["epoch"])

    def _finish(self) -> None:
        if all(layout.load_member(m.member_dir).is_complete() or m.failed for m in self.pack):
            layout.remove_trainer_state(self.state_dir)


# ---------------------------------------------------------------- entry point


def train_pack(run, plans: list[tuple[str, Any, Path]], state_dir: Path, mode: str = "auto",
               provenance: dict | None = None) -> list[layout.MemberInfo]:
    """Train the members `plans` (name, arguments, member folder) as one pack; complete ones are left alone."""
    todo = [(name, args, member_dir) for name, args, member_dir in plans
            if not (layout.is_member_dir(member_dir) and layout.load_member(member_dir).is_complete())]
    if not todo:
        return [layout.load_member(d) for _, _, d in plans]
    state_dir = Path(state_dir)
    record = {"id": state_dir.name, "size": len(todo), "mode": resolve_mode(mode), "members": [n for n, _, _ in todo]}
    members = [_pack_member(run, name, args, Path(member_dir), state_dir, {**(provenance or {}), "pack": record})
               for name, args, member_dir in todo]
    trainer = PackTrainer(run, members, state_dir, mode)
    _record_mode(members, record, trainer.stacked.mode)  # auto chose loop for members with dropout
    try:
        trainer.train()
    except TrainingDiverged:
        raise
    except BaseException as err:  # a crash of the pack: every member not finished records it
        if not isinstance(err, KeyboardInterrupt):
            _record_crash(members, err, state_dir)
        raise
    _record_mode(members, record, trainer.stacked.mode)  # vmap could not batch this model
    return [layout.load_member(d) for _, _, d in plans]


def _pack_member(run, name: str, args, member_dir: Path, state_dir: Path, provenance: dict) -> PackMember:
    """A member set up to train in the pack whose state lives in `state_dir` (its config.json written)."""
    args.training.output_dir = str(state_dir)
    args.training.disable_tqdm = True
    return PackMember(name, args, member_dir, run.prepare_member(args, member_dir, provenance))


def _record_crash(members: list[PackMember], err: BaseException, state_dir: Path) -> None:
    message = f"{type(err).__name__}: {str(err).splitlines()[0][:400] if str(err) else ''}"
    for member in members:
        if not member.failed and not layout.load_member(member.member_dir).is_complete():
            layout.record_failure(member.member_dir, message, pack=state_dir.name)


def _record_mode(members: list[PackMember], record: dict, mode: str) -> None:
    """The pack record in the members' configs says how the pack trained."""
    if record["mode"] == mode:
        return
    record["mode"] = mode
    for member in members:
        config = layout.read_member_config(member.member_dir)
        config["provenance"]["pack"]["mode"] = mode
        layout.write_member_config(member.member_dir, config)
