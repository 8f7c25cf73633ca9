"""`ZooTrainer`: a `transformers.Trainer` with the zoo's losses and the callback that writes members.

An *objective* holds what differs between member kinds: the training loss (with augmentation on the batch),
the evaluation step, and the metric names. The trainer keeps per-epoch training sums on the device (no host sync
per step); the `MemberWriter` callback turns each evaluation into a `result.json` line and, on planned epochs, an
atomic `checkpoint_0000XY/` folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback

from zoo import augment, layout
from zoo.environment import environment_record
from zoo.losses import linear_cross_entropy
from zoo.models import save_pretrained, stock_model

RESUME_WEIGHTS = "resume_model.safetensors"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (raised on every process together: the losses are reduced)."""


# ---------------------------------------------------------------- several processes per member


def join_cpu_processes() -> None:
    """Let the processes of `torchrun` / `accelerate launch` form one group on a machine without GPUs.

    Accelerate joins launched processes into a group only for a GPU, or when `ACCELERATE_USE_CPU` is set; without it
    each CPU process trains alone as rank 0 of 1 and all of them write the same member. Call before any
    `TrainingArguments` is built (they set up the device and the process group when created).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"  # -> DistributedType.MULTI_CPU with the gloo backend


def check_process_group(training_args) -> None:
    """Refuse to train N unconnected copies of one member when a launcher started N processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != training_args.world_size:
        raise ValueError(f"WORLD_SIZE={launched} but the processes did not join one group (world size "
                         f"{training_args.world_size}, {training_args.distributed_state.distributed_type})")


def is_main_process() -> bool:
    """True in the one process that writes members (always true without a launcher)."""
    from accelerate import PartialState

    if PartialState._shared_state:
        return PartialState().is_main_process
    return int(os.environ.get("RANK", "0")) == 0


def run_provenance(training_args) -> dict[str, Any]:
    """What decides whether a member's weights reproduce bit for bit: threads, device, world size, versions."""
    import socket

    import accelerate
    import datasets
    import transformers

    return {
        "hostname": socket.gethostname(),
        "device": str(training_args.device),
        "world_size": int(training_args.world_size),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                     "datasets": datasets.__version__},
        "environment": environment_record(),
    }


def rng_state() -> dict[str, Any]:
    """Every random state training draws from: torch (CPU, and CUDA once initialised), numpy, `random`."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without touching the random state training sees (torch on every device, numpy, random)."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


# ---------------------------------------------------------------- objectives (the losses)


class Objective:
    """Training loss and evaluation step of one member kind.

    Training is split in two: `prepare` turns a batch into the model's inputs and the targets (augmentation, mixing:
    everything random), and `loss` runs the model on them (deterministic). A pack (`zoo.packs`) prepares each
    member's batch on that member's own random stream, then computes the losses of all its members at once.
    """

    metric = "acc"  # the accuracy-like metric reported as train_<metric> / test_<metric>

    def prepare(self, inputs: dict) -> dict:
        """The model inputs and targets of a training batch (all tensors with the batch as first dimension)."""
        return inputs

    def loss(self, model, prepared: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | int]:
        """(mean loss, number correct, number counted): tensors stay on the device, a count may be a plain int."""
        raise NotImplementedError

    def training_loss(self, model: nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | int]:
        return self.loss(model, self.prepare(inputs))

    def eval_prepare(self, inputs: dict) -> dict:
        """The model inputs of an evaluation batch: anything random is drawn here, from a fixed seed of its own."""
        return inputs

    def eval_loss(self, model, prepared: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean loss, predictions, labels) with plain (unsmoothed) losses; deterministic (a pack vmaps it)."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.eval_loss(model, self.eval_prepare(inputs))


class ImageClassification(Objective):
    """Cross-entropy with label smoothing, mixup / cutmix and random erasing in training; plain CE in evaluation."""

    def __init__(self, zoo_args, image_size: int, num_labels: int, mean: float, std: float):
        self.mean, self.std, self.image_size = mean, std, image_size
        self.augment = (augment.supervised_augment(image_size, zoo_args.crop_scale_min, zoo_args.hflip,
                                                   zoo_args.random_erasing) if zoo_args.augment else None)
        self.mixer = augment.BatchMixer(num_labels, zoo_args.label_smoothing, zoo_args.mixup_alpha,
                                        zoo_args.cutmix_alpha, zoo_args.mix_prob, zoo_args.mix_switch_prob)

    def prepare(self, inputs):
        images = augment.to_unit(inputs["pixel_values"])
        images = self.augment(images) if self.augment is not None else augment.resize(images, self.image_size)
        images, targets = self.mixer(images, inputs["labels"])
        return {"pixel_values": augment.normalize(images, self.mean, self.std), "targets": targets}

    def loss(self, model, prepared):
        targets = prepared["targets"]
        logits = model(pixel_values=prepared["pixel_values"]).logits
        loss = F.cross_entropy(logits.float(), targets)  # soft targets
        correct = (logits.argmax(-1) == targets.argmax(-1)).sum()
        return loss, correct, targets.shape[0]

    def eval_loss(self, model, inputs):
        images = augment.resize(augment.to_unit(inputs["pixel_values"]), self.image_size)
        logits = model(pixel_values=augment.normalize(images, self.mean, self.std)).logits
        return F.cross_entropy(logits.float(), inputs["labels"]), logits.argmax(-1), inputs["labels"]


class Contrastive(Objective):
    """SimCLR: two augmented views per image, InfoNCE (NT-Xent) with a temperature.

    Accuracy is the top-1 retrieval of the positive pair among the other 2B-1 views. Evaluation views are drawn
    from a fixed seed, so the test metrics of a checkpoint are repeatable and training randomness is untouched.
    """

    metric = "acc"

    def __init__(self, zoo_args, image_size: int, channels: int, mean: float, std: float):
        self.mean, self.std, self.temperature = mean, std, zoo_args.temperature
        self.views = augment.simclr_augment(image_size, channels, max(0.08, zoo_args.crop_scale_min - 0.15),
                                            zoo_args.hflip, zoo_args.color_jitter)

    def prepare(self, inputs):
        images = augment.to_unit(inputs["pixel_values"])
        first, second = self.views(images), self.views(images)
        # the two views of an image side by side: the batch stays the first dimension (a pack stacks members)
        return {"views": augment.normalize(torch.stack([first, second], dim=1), self.mean, self.std)}

    def _hits_loss(self, model, views):
        n = views.shape[0]
        both = torch.cat([views[:, 0], views[:, 1]])
        z = F.normalize(model(pixel_values=both).float(), dim=-1)
        sim = z @ z.T / self.temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), float("-inf"))
        positives = torch.cat([torch.arange(n, 2 * n, device=sim.device), torch.arange(0, n, device=sim.device)])
        loss = F.cross_entropy(sim, positives)
        return loss, sim.argmax(-1) == positives

    def loss(self, model, prepared):
        loss, hits = self._hits_loss(model, prepared["views"])
        return loss, hits.sum(), hits.shape[0]

    def eval_prepare(self, inputs):
        device = inputs["pixel_values"].device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(1234)
            return self.prepare(inputs)

    def eval_loss(self, model, prepared):
        loss, hits = self._hits_loss(model, prepared["views"])
        hits = hits.long().view(2, -1).T  # one row per image (its two views): gathering over processes cuts rows
        return loss, hits, torch.ones_like(hits)


class CausalLM(Objective):
    """Next-token cross-entropy on packed blocks; accuracy is next-token top-1, perplexity is exp(loss).

    The model returns its last hidden states only; `linear_cross_entropy` projects them onto the vocabulary chunk by
    chunk, so the full-vocabulary logits (and their fp32 copy, and a separate argmax pass) never exist."""

    def _loss(self, model, inputs):
        head = getattr(unwrap(model), "lm_head", None)
        labels = inputs["labels"][:, 1:]
        if not isinstance(head, nn.Linear) or head.bias is not None:  # another head (or a pack): plain logits
            logits = model(input_ids=inputs["input_ids"]).logits[:, :-1].float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
            predictions = logits.argmax(-1)
            return loss, ((predictions == labels) & (labels != -100)).sum(), predictions
        no_logits = torch.zeros(0, dtype=torch.long, device=inputs["input_ids"].device)
        hidden = model(input_ids=inputs["input_ids"], logits_to_keep=no_logits, output_hidden_states=True)\
            .hidden_states[-1][:, :-1]
        loss, hits, predictions = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head.weight,
                                                       labels.reshape(-1))
        return loss, hits, predictions.view(labels.shape)

    def loss(self, model, prepared):
        loss, hits, _ = self._loss(model, prepared)
        return loss, hits, (prepared["labels"][:, 1:] != -100).sum()

    def eval_loss(self, model, inputs):
        loss, _, predictions = self._loss(model, inputs)
        return loss, predictions, inputs["labels"][:, 1:]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers (whose parameters are the same tensors)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class MaskedLM(Objective):
    """Masked-token cross-entropy (the collator masks and sets labels to -100 elsewhere); accuracy is top-1 on the
    masked tokens, perplexity is exp(loss).

    The prediction head (transform + vocabulary projection) runs on the masked tokens only (about 15%), not on all:
    a hook on the stock model's head selects their rows, so the forward still goes through the (possibly
    distributed) model, and the logits are (masked tokens x vocabulary)."""

    def _logits_loss(self, model, inputs):
        labels = inputs["labels"]
        mask = labels != -100
        head = getattr(unwrap(model), "cls", None)  # BertForMaskedLM's head, under DDP or compile too
        handle = head.register_forward_pre_hook(lambda _, args: (args[0][mask],)) if head is not None else None
        try:
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")).logits.float()
        finally:
            if handle is not None:
                handle.remove()
        if handle is None:  # a model without that head (a pack's functional stack): every token's logits
            logits = logits[mask]
        labels = labels[mask]
        loss = F.cross_entropy(logits, labels) if labels.numel() else logits.sum() * 0.0
        return logits, labels, mask, loss

    def loss(self, model, prepared):
        logits, labels, mask, loss = self._logits_loss(model, prepared)
        return loss, (logits.argmax(-1) == labels).sum(), mask.sum()

    def eval_loss(self, model, inputs):
        logits, labels, mask, loss = self._logits_loss(model, inputs)
        predictions = torch.full_like(inputs["labels"], -100)
        predictions[mask] = logits.argmax(-1)
        return loss, predictions, inputs["labels"]


class SequenceClassification(Objective):
    def loss(self, model, prepared):
        logits = model(input_ids=prepared["input_ids"], attention_mask=prepared.get("attention_mask")).logits.float()
        loss = F.cross_entropy(logits, prepared["labels"])
        return loss, (logits.argmax(-1) == prepared["labels"]).sum(), logits.shape[0]

    def eval_loss(self, model, inputs):
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")).logits.float()
        return F.cross_entropy(logits, inputs["labels"]), logits.argmax(-1), inputs["labels"]


def accuracy_metrics(extra_metrics: list | None = None):
    """`compute_metrics` for the Trainer: accuracy of argmax predictions, ignoring -100 labels."""

    def compute(eval_pred) -> dict[str, float]:
        predictions, labels = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        mask = labels != -100
        out = {"acc": float((predictions[mask] == labels[mask]).mean()) if mask.any() else float("nan")}
        for metric in extra_metrics or []:
            for key, value in metric.compute(predictions=predictions[mask], references=labels[mask]).items():
                out[key] = float(value)
        return out

    return compute


# ---------------------------------------------------------------- the trainer


def _cache_lomo_check() -> None:
    """accelerate's optimizer step asks twice per step whether `lomo_optim` is installed, each time a `find_spec`
    scan of sys.path (milliseconds on a busy file system); the answer does not change while a process runs."""
    import functools

    from accelerate import optimizer as accelerate_optimizer

    check = accelerate_optimizer.is_lomo_available
    if not hasattr(check, "cache_info"):
        accelerate_optimizer.is_lomo_available = functools.cache(check)


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
        # the objectives take their own means: no per-step count of label tokens for a loss we do not ask for
        self.model_accepts_loss_kwargs = False
        self._tensor_data: dict[int, Any] = {}  # id(datasets.Dataset) -> its TensorBatches (or None)
        self._flops_per_input: int | None = None
        _cache_lomo_check()
        plugin = getattr(self.accelerator.state, "dynamo_plugin", None)
        if self.args.torch_compile and plugin is not None:
            # static shapes: the last (smaller) batch of an epoch gets its own graph once, instead of turning every
            # step into a slower dynamic-shape graph
            plugin.dynamic = False

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

    def _tensor_batches(self, dataset):
        """The data set as `TensorBatches` (on the GPU when it fits) when its batches are plain stacks of fixed-shape
        columns, else None (custom transforms, padding or masking collators, other samplers keep the row path)."""
        from transformers.data.data_collator import default_data_collator

        from zoo.data import device as device_data

        if self.data_collator is not default_data_collator or self.args.train_sampling_strategy != "random" \
                or self.args.remove_unused_columns:
            return None
        key = id(dataset)
        if key not in self._tensor_data:  # the dataset is kept with it so that its id stays unique
            self._tensor_data[key] = (dataset, device_data.cached_tensor_batches(dataset, self.args.device))
        return self._tensor_data[key][1]

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        # pinned host memory helps CUDA copies only; without CUDA torch warns at every epoch. Set here, after the
        # member's config.json recorded the arguments, so a zoo resumes on either device.
        self.args.dataloader_pin_memory = self.args.dataloader_pin_memory and torch.cuda.is_available()
        batches = self._tensor_batches(dataset)
        if batches is None:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        from functools import partial

        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        from zoo.data.device import collate_batch

        args, on_host = self.args, batches.device.type == "cpu"
        workers = args.dataloader_num_workers if on_host else 0  # device tensors stay in this process
        params: dict[str, Any] = {"batch_size": batch_size, "collate_fn": collate_batch, "num_workers": workers,
                                  "pin_memory": args.dataloader_pin_memory and on_host,
                                  "drop_last": args.dataloader_drop_last}
        if workers:
            params.update(persistent_workers=args.dataloader_persistent_workers,
                          prefetch_factor=args.dataloader_prefetch_factor,
                          multiprocessing_context=args.dataloader_multiprocessing_context)
        sampler = sampler_fn(dataset) if sampler_fn is not None else None  # the same order as the row path
        if sampler is not None:
            params["sampler"] = sampler
        if is_training:
            params["worker_init_fn"] = partial(seed_worker, num_workers=workers, rank=args.process_index)
        return self.accelerator.prepare(DataLoader(batches, **params))

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

    # Resumable state. transformers 5 renames weights between a model's modules and its saved files, and
    # `Trainer._load_from_checkpoint` loads the saved names with `strict=False`: on resume every renamed weight
    # (a ViT's or GPT-2's whole encoder) silently kept its fresh initialisation. The zoo's private Trainer state
    # therefore stores the module's own names and loads them strictly.
    def _save(self, output_dir: str | None = None, state_dict=None):
        if not self.is_in_train or state_dict is not None:
            return super()._save(output_dir, state_dict)
        from safetensors.torch import save_model

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_model(self.accelerator.unwrap_model(self.model), os.path.join(output_dir, RESUME_WEIGHTS))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None):
        path = os.path.join(resume_from_checkpoint, RESUME_WEIGHTS)
        if not os.path.isfile(path):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_model

        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        missing, unexpected = load_model(target, path, strict=True)
        if missing or unexpected:
            raise RuntimeError(f"{path}: does not match the model ({missing or unexpected})")

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

    def main_process_decides(self, decide: Callable[[], Any]) -> Any:
        """`decide()` run by the main process only, its result sent to every process (a collective call)."""
        value = decide() if self.accelerator.is_main_process else None
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            value = broadcast_object_list([value], from_process=0)[0]
        return value


# ---------------------------------------------------------------- the member writer


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
        if metrics is None:
            # Evaluating draws random numbers (every DataLoader iterator takes a seed): isolated, so that a member
            # trains on the same random stream whether or not an earlier, killed run already wrote its epoch 0.
            self._busy = True
            try:
                with isolated_rng():
                    metrics = (self.trainer.evaluate(metric_key_prefix="test"),
                               self.trainer.evaluate(self.trainer.train_eval_dataset, metric_key_prefix="train")
                               if self.trainer.train_eval_dataset is not None else {})
            finally:
                self._busy = False
        test, train = metrics
        stats = {"loss": train.get("train_loss"), "acc": train.get("train_acc"), "samples": 0}
        self._write(0, 0, stats, test, model, is_main)

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
            if key.startswith("test_") and name not in ("loss", "acc", "runtime", "samples_per_second",
                                                        "steps_per_second", "model_preparation_time") \
                    and f"test_{name}" not in record:
                record[key] = value
        record.update({"seconds": round(time.time() - self._epoch_start, 3), "samples": train.get("samples", 0),
                       "step": step})
        self._epoch_start = time.time()
        if epoch in self.checkpoints:
            to_save = stock_model(self.trainer.accelerator.unwrap_model(model))

            def save(folder: Path) -> None:
                for part in (to_save, *self.save_extras):
                    save_pretrained(part, folder)

            layout.write_checkpoint(self.member_dir, epoch, save)
        layout.append_result(self.member_dir, record)


def _pad_rows(tensor: torch.Tensor, rows: int, value: int) -> torch.Tensor:
    padding = tensor.new_full((rows - tensor.shape[0], *tensor.shape[1:]), value)
    return torch.cat([tensor, padding])


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _exp(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else float("inf")
