"""`PackedOptimizer`: AdamW or SGD on a pack's flat `[K, P]` weights, with per-member hyperparameters."""

from __future__ import annotations

from typing import Any

import torch

from zoo.arguments import OPTIMIZERS, check_choice
from zoo.packs.stacked import StackedMembers

# where weight decay applies in a block of columns: True (everywhere), False (nowhere) or a [1, width] mask
Decay = Any


class PackedOptimizer:
    """AdamW or SGD (with momentum) on stacked weights, with per-member hyperparameters and gradient clipping.

    The arithmetic is that of `torch.optim.AdamW` / `torch.optim.SGD` (single-tensor path) for each member alone, run
    on the pack's flat `[K, P]` weights and gradients (`StackedMembers.flats`): each update is a few operations for
    the whole pack. A weight the forward never reaches gets no gradient and is left alone, as torch leaves it.
    """

    def __init__(self, stacked: StackedMembers, kind: str, lrs: list[float], weight_decays: list[float],
                 decay_names: set[str], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 momenta: list[float] | None = None, max_grad_norm: float = 0.0):
        check_choice("optimizer", kind, OPTIMIZERS)
        self.stacked, self.kind = stacked, kind
        device = stacked.stacked[0].device
        self.lrs = torch.tensor(lrs, dtype=torch.float64, device=device)
        self.weight_decays = torch.tensor(weight_decays, dtype=torch.float64, device=device)
        self.momenta = torch.tensor(momenta or [0.0] * len(lrs), dtype=torch.float64, device=device)
        self.decay_names, self.betas, self.eps, self.max_grad_norm = decay_names, betas, eps, max_grad_norm
        self.active = torch.ones(len(lrs), dtype=torch.bool, device=device)
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in stacked.flats]
        self.grads: list[torch.Tensor] | None = None  # the flat gradients, from the first step on
        # per flat tensor, its column blocks with where weight decay applies (to a used, decayed weight) in each
        self.decay_masks: list[list[tuple[slice, Decay]]] = []

    def _adopt_grads(self) -> list[torch.Tensor]:
        """The flat gradients; at the first step, the parameters' gradients are moved into them and each parameter's
        `.grad` becomes its view (autograd then accumulates there in place). Weights without a gradient stay so."""
        if self.grads is None:
            self.grads = []
            for flat, spans in self.stacked.flats:
                grad, decays = self._adopt_flat(flat, spans)
                self.grads.append(grad)
                self.decay_masks.append(_decay_blocks(flat, decays))
        return self.grads

    def _adopt_flat(self, flat: torch.Tensor, spans) -> tuple[torch.Tensor, torch.Tensor]:
        """The flat gradient of one flat tensor, and its `[1, P]` mask of the columns weight decay applies to."""
        grad = torch.zeros_like(flat)
        decays = torch.zeros(1, flat.shape[1], dtype=flat.dtype, device=flat.device)
        for name, offset, size in spans:
            param = self.stacked.param(name)
            if param.grad is None:
                continue
            view = grad[:, offset:offset + size].view_as(param)
            view.copy_(param.grad)
            param.grad = view
            if name in self.decay_names:
                decays[:, offset:offset + size] = 1
        return grad, decays

    @torch.no_grad()
    def clip(self) -> None:
        """Per-member `clip_grad_norm_` (nothing to do without a `max_grad_norm`)."""
        if self.max_grad_norm <= 0:
            return
        grads = self._adopt_grads()
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2, dim=1) for g in grads]), 2,
                                         dim=0)  # [K]
        coef = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
        for grad in grads:
            grad.mul_(coef.unsqueeze(1).to(grad.dtype))

    @torch.no_grad()
    def step(self, factor: float) -> None:
        """One update with learning rates `lr * factor` (the schedule's factor, shared by the pack)."""
        grads = self._adopt_grads()
        self.steps += 1
        lr = torch.where(self.active, self.lrs * factor, torch.zeros_like(self.lrs))
        for (flat, _), grad, blocks, state in zip(self.stacked.flats, grads, self.decay_masks, self.state):
            first = not state
            if first:
                slots = ("exp_avg", "exp_avg_sq") if self.kind == "adamw" else ("momentum_buffer",)
                state.update({slot: torch.zeros_like(flat) for slot in slots})
            lr_k, wd_k, momentum_k = (v.unsqueeze(1).to(flat.dtype) for v in (lr, self.weight_decays, self.momenta))
            for part, decays in blocks:
                decay = wd_k if decays is True else (None if decays is False else wd_k * decays)
                weights, gradient = flat[:, part], grad[:, part]
                if self.kind == "adamw":
                    self._adamw(weights, gradient, state["exp_avg"][:, part], state["exp_avg_sq"][:, part], lr_k,
                                decay)
                else:
                    self._sgd(weights, gradient, state["momentum_buffer"][:, part], lr_k, decay, momentum_k, first)

    def _adamw(self, param, grad, exp_avg, exp_avg_sq, lr, weight_decay):
        beta1, beta2 = self.betas
        if weight_decay is not None:
            param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        param.add_(-(lr / bias_correction1) * exp_avg / denom)

    def _sgd(self, param, grad, buffer, lr, weight_decay, momentum, first: bool):
        if weight_decay is not None:
            grad = grad + weight_decay * param
        if first:
            buffer.copy_(grad)
        else:
            buffer.mul_(momentum).add_(grad)
        # members without momentum step on the plain gradient
        update = torch.where(momentum != 0, buffer, grad)
        param.add_(-lr * update)

    def zero_grad(self) -> None:
        """Zero the flat gradients (every used weight's `.grad` is a view of them once the first step adopted them);
        before that, drop the parameters' gradients."""
        if self.grads is not None:
            for grad in self.grads:
                grad.zero_()
            return
        for name in self.stacked.names:
            self.stacked.param(name).grad = None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The optimizer state by weight name (`<name>::exp_avg`, ...), `[K, ...]` each."""
        out = {}
        for (_, spans), state in zip(self.stacked.flats, self.state):
            for slot, value in state.items():
                for name, offset, size in spans:
                    out[f"{name}::{slot}"] = value[:, offset:offset + size].view_as(self.stacked.param(name))
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], steps: int) -> None:
        """Take back what `state_tensors` gave, after `steps` updates."""
        self.steps = steps
        self.state = [{} for _ in self.stacked.flats]
        slots = sorted({key.rsplit("::", 1)[1] for key in tensors})
        for (flat, spans), state in zip(self.stacked.flats, self.state):
            for slot in slots:
                value = torch.zeros_like(flat)
                for name, offset, size in spans:
                    if f"{name}::{slot}" in tensors:
                        value[:, offset:offset + size] = tensors[f"{name}::{slot}"].reshape(flat.shape[0], size)
                state[slot] = value


def _decay_blocks(flat: torch.Tensor, decays: torch.Tensor) -> list[tuple[slice, Decay]]:
    """The column blocks of `flat` with where weight decay applies in each (`decays`: a `[1, P]` mask)."""
    blocks = []
    for part in _column_chunks(flat):
        mask = decays[:, part]
        blocks.append((part, True if bool(mask.all()) else (mask if bool(mask.any()) else False)))
    return blocks


def _column_chunks(flat: torch.Tensor) -> list[slice]:
    """Column blocks of a `[K, P]` tensor for the optimizer's element-wise updates: all of it on an accelerator (few
    kernel launches), blocks of about 2^18 elements on a CPU (temporaries stay in the caches: 3x faster there)."""
    width = flat.shape[1] if flat.device.type != "cpu" else max(1, 2**18 // max(1, flat.shape[0]))
    return [slice(start, min(start + width, flat.shape[1])) for start in range(0, flat.shape[1], width)]
