"""`ZooTrainer`: a `transformers.Trainer` with a zoo objective's losses and the callback that writes the member.

The trainer keeps per-epoch training sums on the device (no host sync per step), builds its loaders over
whole-tensor batches where the data allow (`loaders`), and keeps its resumable weights under the module's own names
(`resume`). Its `MemberWriter` turns each evaluation into the member's `result.json` line and checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer

from zoo.training.accelerate_patch import cache_lomo_check
from zoo.training.loaders import TensorBatchCache, tensor_dataloader
from zoo.training.objectives import Objective
from zoo.training.resume import load_resume_weights, save_resume_weights
from zoo.training.writer import MemberWriter


class ZooTrainer(Trainer):
    """Trainer with a zoo objective, device-side epoch statistics and optional per-trial member plans."""

    def __init__(self, *args, objective: Objective, member_writer: MemberWriter | None = None,
                 train_eval_dataset=None, eval_collator=None, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if member_writer is not None:
            callbacks.append(member_writer)
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self.zoo_objective = objective  # (`self.objective` is the Trainer's hyperparameter-search value)
        # the objectives return per-batch means: no token counting (and no per-step gather) for `num_items_in_batch`
        self.model_accepts_loss_kwargs = False
        self.member_writer = member_writer
        self.train_eval_dataset = train_eval_dataset
        self.eval_collator = eval_collator  # a factory: a fresh (seeded) collator for every evaluation
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_count: torch.Tensor | int = 0
        if member_writer is not None:
            member_writer.trainer = self
        self._tensor_batch_cache = TensorBatchCache()
        self._flops_per_input: int | None = None
        cache_lomo_check()
        plugin = getattr(self.accelerator.state, "dynamo_plugin", None)
        if self.args.torch_compile and plugin is not None:
            # static shapes: the last (smaller) batch of an epoch gets its own graph once, instead of turning every
            # step into a slower dynamic-shape graph
            plugin.dynamic = False

    # ------------------------------------------------ training steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, correct, count = self.zoo_objective.training_loss(model, inputs)
        # running sums stay on the device (no host sync per step); a plain-int count costs no transfer at all
        sums = torch.stack([loss.detach().float() * count, correct.float()])
        self._epoch_sums = sums if self._epoch_sums is None else self._epoch_sums + sums
        self._epoch_count = self._epoch_count + count
        return (loss, None) if return_outputs else loss

    def floating_point_ops(self, inputs):
        # the Trainer counts the parameters again every step; the count does not change
        if self._flops_per_input is None:
            model = self.accelerator.unwrap_model(self.model)
            self._flops_per_input = 6 * model.num_parameters(exclude_embeddings=True) \
                if hasattr(model, "num_parameters") else 0
        main_input = getattr(self.model, "main_input_name", "input_ids")
        return self._flops_per_input * inputs[main_input].numel() if main_input in inputs else 0

    def pop_epoch_stats(self) -> dict[str, float]:
        """Mean training loss and accuracy since the last call, summed over all processes (one host sync).

        With N processes Accelerate pads an epoch's last batch with samples from its start, so that every process
        steps together; `samples` leaves that padding out and counts the data set once.
        """
        sums, count = self._epoch_sums, self._epoch_count
        self._epoch_sums, self._epoch_count = None, 0
        if sums is None:
            return {}
        sums = torch.cat([sums, torch.as_tensor(count, dtype=sums.dtype, device=sums.device).reshape(1)])
        loss_sum, correct, count = self.accelerator.reduce(sums, reduction="sum").tolist()
        return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1),
                "samples": round(count * self._unpadded_fraction())}

    def _unpadded_fraction(self) -> float:
        processes = self.accelerator.num_processes
        if processes == 1 or self.args.dataloader_drop_last or self.train_dataset is None:
            return 1.0
        size = len(self.train_dataset)
        global_batch = self.args.per_device_train_batch_size * processes
        return size / (math.ceil(size / global_batch) * global_batch)

    # ------------------------------------------------ loaders

    # Private override: the Trainer builds its training, evaluation and test loaders all here, once it has chosen
    # their data set, sampler and batch size; no public hook receives that choice.
    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        # pinned host memory helps CUDA copies only; without CUDA torch warns at every epoch. Set here, after the
        # member's config.json recorded the arguments, so a zoo resumes on either device.
        self.args.dataloader_pin_memory = self.args.dataloader_pin_memory and torch.cuda.is_available()
        batches = self._tensor_batch_cache.get(dataset, self.data_collator, self.args)
        if batches is None:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        sampler = sampler_fn(dataset) if sampler_fn is not None else None
        return self.accelerator.prepare(tensor_dataloader(batches, self.args, batch_size, sampler, is_training))

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        # evaluation masks (or other collator randomness) come from the collator's own seed: repeatable metrics,
        # and the training random stream is untouched by evaluations
        train_collator, self.data_collator = self.data_collator, self.eval_collator()
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    # ------------------------------------------------ evaluation

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # evaluation runs the uncompiled module: its batch sizes and eval mode would each cost a recompile of the
        # training graph, for a few batches per epoch
        model = getattr(model, "_orig_mod", model)
        inputs = self._prepare_inputs(inputs)
        real = self._real_rows(inputs)
        if real is not None:  # a padded last batch: loss and metrics of its real rows only
            rows = next(v for v in inputs.values() if torch.is_tensor(v)).shape[0]
            inputs = {k: v[:real] if torch.is_tensor(v) else v for k, v in inputs.items()}
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, predictions, labels = self.zoo_objective.eval_step(model, inputs)
        if real is not None:  # every process gathers as many rows; the gather then cuts the padding
            predictions, labels = _pad_rows(predictions, rows, 0), _pad_rows(labels, rows, -100)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), predictions, labels

    def _real_rows(self, inputs: dict) -> int | None:
        """Rows of this process's batch that are real data, when the batch is the evaluation's last and Accelerate
        padded it (with N processes every one gets a full batch; the real rows come first, in process order)."""
        state = self.accelerator.gradient_state
        if self.accelerator.num_processes == 1 or not state.end_of_dataloader or state.remainder <= 0:
            return None
        rows = next((v.shape[0] for v in inputs.values() if torch.is_tensor(v)), 0)
        real = min(max(state.remainder - self.accelerator.process_index * rows, 0), rows)
        return real if 0 < real < rows else None

    # ------------------------------------------------ resumable state (see `zoo.training.resume`)

    # Private override: the plain save path (FSDP, DeepSpeed and SageMaker pass a `state_dict` and keep the
    # Trainer's format); the public `save_model` would have to repeat the Trainer's dispatch between them.
    def _save(self, output_dir: str | None = None, state_dict=None):
        if not self.is_in_train or state_dict is not None:
            return super()._save(output_dir, state_dict)
        if self.args.should_save:  # the main process only (the Trainer calls this on every process)
            save_resume_weights(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir)

    # Private override: the Trainer's resume calls it directly; no public hook loads a checkpoint's weights.
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None):
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not load_resume_weights(target, resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)

    # ------------------------------------------------ several processes

    def main_process_decides(self, decide: Callable[[], Any]) -> Any:
        """`decide()` run by the main process only, its result sent to every process (a collective call)."""
        value = decide() if self.accelerator.is_main_process else None
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            value = broadcast_object_list([value], from_process=0)[0]
        return value


def _pad_rows(tensor: torch.Tensor, rows: int, value: int) -> torch.Tensor:
    padding = tensor.new_full((rows - tensor.shape[0], *tensor.shape[1:]), value)
    return torch.cat([tensor, padding])
