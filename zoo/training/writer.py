"""`MemberWriter`: the Trainer callback that writes a member's `result.json` lines and checkpoint folders as it
trains; `TrainingDiverged`: what it raises when a loss is not finite."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from zoo import layout
from zoo.models import save_pretrained, stock_model
from zoo.training.rng import isolated_rng

if TYPE_CHECKING:
    from zoo.training.trainer import ZooTrainer

# Evaluation metrics of the Trainer that are not the member's own (its loss and acc have columns of their own).
NOT_MEMBER_METRICS = ("loss", "acc", "runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (raised on every process together: the losses are reduced)."""


class MemberWriter(TrainerCallback):
    """Writes a member's result.json lines and checkpoint folders as training goes.

    Epoch 0 is the initialised model, evaluated before the first step. Every evaluation after an epoch adds a
    line; epochs in `checkpoints` also get an atomic `checkpoint_0000XY/`. A NaN or infinite training loss raises
    `TrainingDiverged` after its line is written (the member then reads as incomplete, and a rerun retries it).
    """

    def __init__(self, member_dir: str | Path, checkpoints: list[int], save_extras: list[Any],
                 perplexity: bool = False):
        self.member_dir = Path(member_dir)
        self.checkpoints = set(checkpoints)
        self.save_extras = save_extras  # processors / tokenizers saved beside the weights
        self.perplexity = perplexity
        self.trainer: ZooTrainer | None = None
        self._busy = False
        self._active = False  # evaluations outside train() (e.g. a search's final evaluate) write nothing
        self._epoch_start = time.time()

    def on_train_end(self, args, state, control, **kwargs):
        self._active = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._active = True
        self._epoch_start = time.time()
        if state.global_step == 0:
            self.write_initial(kwargs["model"], state.is_world_process_zero)
        self._epoch_start = time.time()

    def write_initial(self, model, is_main: bool = True, metrics: tuple[dict, dict] | None = None) -> None:
        """Evaluate and write epoch 0 (the initialised model) unless an earlier run already did. `metrics`: its
        (test, train) evaluations when the caller already made them (a pack evaluates its members at once)."""
        if not self.trainer.main_process_decides(self.epoch0_missing):
            return
        test, train = metrics if metrics is not None else self._evaluate_initial()
        stats = {"loss": train.get("train_loss"), "acc": train.get("train_acc"), "samples": 0}
        self._write(0, 0, stats, test, model, is_main)

    def _evaluate_initial(self) -> tuple[dict, dict]:
        """The (test, train) evaluations of the initialised model.

        Evaluating draws random numbers (every DataLoader iterator takes a seed): isolated, so that a member trains
        on the same random stream whether or not an earlier, killed run already wrote its epoch 0."""
        trainer = self.trainer
        self._busy = True
        try:
            with isolated_rng():
                return (trainer.evaluate(metric_key_prefix="test"),
                        trainer.evaluate(trainer.train_eval_dataset, metric_key_prefix="train")
                        if trainer.train_eval_dataset is not None else {})
        finally:
            self._busy = False

    def epoch0_missing(self) -> bool:
        done = {int(row["epoch"]) for row in layout.read_results(self.member_dir)}
        return not (0 in done and layout.verify_checkpoint(self._ckpt(0)) is None)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start = time.time()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._busy or not self._active or self.trainer is None or state.global_step == 0:
            return
        epoch = int(round(state.epoch or 0))
        self.write_epoch(epoch, state.global_step, self.trainer.pop_epoch_stats(), metrics or {}, kwargs["model"],
                         state.is_world_process_zero)

    def write_epoch(self, epoch: int, step: int, stats: dict, metrics: dict, model, is_main: bool = True) -> None:
        """Write an epoch's line (and checkpoint); raise `TrainingDiverged` after it when a loss is not finite."""
        test = {f"test_{k.split('_', 1)[1]}": v for k, v in metrics.items() if "_" in k}
        self._write(epoch, step, stats, test, model, is_main)
        for key, value in (("training", stats.get("loss")), ("test", test.get("test_loss"))):
            if value is not None and not math.isfinite(value):
                raise TrainingDiverged(f"{key} loss is {value} at epoch {epoch}")

    def _ckpt(self, epoch: int) -> Path:
        return self.member_dir / layout.checkpoint_name(epoch)

    def _write(self, epoch: int, step: int, train: dict, test: dict, model, is_main: bool) -> None:
        if not is_main:
            return
        record = self._record(epoch, step, train, test)
        self._epoch_start = time.time()
        if epoch in self.checkpoints:
            self._write_checkpoint(epoch, model)
        layout.append_result(self.member_dir, record)

    def _record(self, epoch: int, step: int, train: dict, test: dict) -> dict[str, Any]:
        """An epoch's result.json line: training and test loss and accuracy, the member's other test metrics."""
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train.get("loss"),
            "train_acc": train.get("acc"),
            "test_loss": _metric(test, "test_loss"),
            "test_acc": _metric(test, "test_acc"),
        }
        if self.perplexity:
            record["train_perplexity"] = _exp(record["train_loss"])
            record["test_perplexity"] = _exp(record["test_loss"])
        for key, value in test.items():
            name = key.removeprefix("test_")
            if key.startswith("test_") and name not in NOT_MEMBER_METRICS and f"test_{name}" not in record:
                record[key] = value
        record.update({"seconds": round(time.time() - self._epoch_start, 3), "samples": train.get("samples", 0),
                       "step": step})
        return record

    def _write_checkpoint(self, epoch: int, model) -> None:
        to_save = stock_model(self.trainer.accelerator.unwrap_model(model))

        def save(folder: Path) -> None:
            for part in (to_save, *self.save_extras):
                save_pretrained(part, folder)

        layout.write_checkpoint(self.member_dir, epoch, save)


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _exp(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else float("inf")
