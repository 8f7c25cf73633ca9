"""Evaluation once per pack: each member runs its own Trainer's evaluation (`get_eval_dataloader`,
`evaluation_loop`: loss weighting, `compute_metrics`, metric prefixes), and its evaluation step takes the member's
outputs from one computation per batch for the whole pack."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from zoo.packs.lanes import lane_of

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (loss, predictions, labels) of one member on one batch


class SharedBatches:
    """Every member's evaluation outputs, batch by batch, each batch computed once for all of them.

    The first member to reach its i-th batch computes every member's outputs on it (`outputs_of(inputs)`, in member
    order); a member whose i-th batch differs from that one (a collator drawing on its lane) computes its own. An
    entry keeps its batch to compare until every member took it (at most one copy of the evaluation set).
    """

    def __init__(self, count: int, outputs_of: Callable[[dict], list[Outputs]]):
        self.count, self.outputs_of = count, outputs_of
        self.entries: list[list | None] = []  # per batch: [inputs, outputs, members yet to take it]
        self.taken = [0] * count

    def take(self, slot: int, inputs: dict) -> Outputs | None:
        """Member `slot`'s outputs on its next batch, `inputs`; None when they were computed on another batch."""
        i = self.taken[slot]
        self.taken[slot] += 1
        if i == len(self.entries):
            self.entries.append([inputs, self.outputs_of(inputs), self.count])
        entry = self.entries[i]
        batch, outputs, waiting = entry
        entry[2] = waiting - 1
        if entry[2] == 0:
            self.entries[i] = None
        return outputs[slot] if same_batch(batch, inputs) else None


class _ServedObjective:
    """A member's objective whose evaluation step takes the member's outputs from `SharedBatches` when it can."""

    def __init__(self, objective, batches: SharedBatches, slot: int):
        self.objective, self.batches, self.slot = objective, batches, slot

    def eval_step(self, model, inputs: dict) -> Outputs:
        served = self.batches.take(self.slot, inputs)
        return served if served is not None else self.objective.eval_step(model, inputs)

    def __getattr__(self, name: str):
        return getattr(self.objective, name)


@contextlib.contextmanager
def served(trainer, batches: SharedBatches, slot: int):
    """`trainer` (a `ZooTrainer`) evaluating with steps served by `batches`, and in training as alone: a full-eval
    dtype (`bf16_full_eval`) then casts nothing (its model's weights are views of the pack's)."""
    objective, in_train = trainer.zoo_objective, trainer.is_in_train
    trainer.zoo_objective, trainer.is_in_train = _ServedObjective(objective, batches, slot), True
    try:
        yield
    finally:
        trainer.zoo_objective, trainer.is_in_train = objective, in_train


def loop_metrics(trainer, dataset, prefix: str) -> dict[str, float]:
    """The metrics of `trainer.evaluate(dataset, metric_key_prefix=prefix)`, without its logging, callbacks and
    timings (the pack writes its members' results)."""
    loader = trainer.get_eval_dataloader(dataset)
    loss_only = True if trainer.compute_metrics is None else None  # as `Trainer.evaluate` asks
    return trainer.evaluation_loop(loader, "Evaluation", prediction_loss_only=loss_only,
                                   metric_key_prefix=prefix).metrics


def evaluate_together(members: list, outputs_of: Callable[[dict], list[Outputs]], dataset, prefix: str,
                      on_lanes: bool) -> list[dict[str, float]] | None:
    """Each of `members`' (`PackMember`s) metrics on `dataset` (None: their evaluation set), with one computation of
    every member's outputs per batch; None for a dict of evaluation sets (`Trainer.evaluate` runs each of them).
    With `on_lanes` each member's DataLoader runs on its lane: its random stream makes the draws it makes alone."""
    if isinstance(dataset if dataset is not None else members[0].trainer.eval_dataset, dict):
        return None
    batches = SharedBatches(len(members), outputs_of)
    metrics = []
    for slot, member in enumerate(members):
        with lane_of(member.lane if on_lanes else None), served(member.trainer, batches, slot):
            metrics.append(loop_metrics(member.trainer, dataset, prefix))
    return metrics


def same_batch(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
