"""Objectives: what differs between member kinds in training and evaluation.

An objective holds the training loss (with augmentation on the batch), the evaluation step, and the metric names.
Every objective is a direct subclass of `Objective`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo import augment, families
from zoo.losses import linear_cross_entropy


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers (whose parameters are the same tensors)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def vocabulary_head(model: nn.Module) -> nn.Module | None:
    """The stock model's vocabulary head (its family's `vocabulary_head`), under DDP or compile too; None for a
    model without one (another head, or a pack's functional stack)."""
    inner = unwrap(model)
    family = families.of_model_type(getattr(getattr(inner, "config", None), "model_type", None))
    return getattr(inner, family.vocabulary_head, None) if family is not None and family.vocabulary_head else None


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
        head = vocabulary_head(model)
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


class MaskedLM(Objective):
    """Masked-token cross-entropy (the collator masks and sets labels to -100 elsewhere); accuracy is top-1 on the
    masked tokens, perplexity is exp(loss).

    The prediction head (transform + vocabulary projection) runs on the masked tokens only (about 15%), not on all:
    a hook on the stock model's head selects their rows, so the forward still goes through the (possibly
    distributed) model, and the logits are (masked tokens x vocabulary)."""

    def _logits_loss(self, model, inputs):
        labels = inputs["labels"]
        mask = labels != -100
        head = vocabulary_head(model)
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
    """Cross-entropy of a sequence classifier; accuracy is top-1."""

    def loss(self, model, prepared):
        logits = model(input_ids=prepared["input_ids"], attention_mask=prepared.get("attention_mask")).logits.float()
        loss = F.cross_entropy(logits, prepared["labels"])
        return loss, (logits.argmax(-1) == prepared["labels"]).sum(), logits.shape[0]

    def eval_loss(self, model, inputs):
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")).logits.float()
        return F.cross_entropy(logits, inputs["labels"]), logits.argmax(-1), inputs["labels"]
