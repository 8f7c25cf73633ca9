"""Language-model losses without a full-vocabulary logits tensor.

`linear_cross_entropy(hidden, weight, labels)` is the output projection and the cross-entropy in one pass over
chunks of tokens: each chunk's logits live only while its loss, its top-1 hit and (in training) its gradients are
computed, so neither the (tokens x vocabulary) logits nor their fp32 copy nor a separate argmax pass exist. The
gradients of the hidden states and of the projection weight are made in the forward pass (the way fused
linear-cross-entropy kernels do it) and scaled by the incoming gradient in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# logits elements per chunk (fp32): 2**27 is 512 MiB, e.g. 2,670 tokens of GPT-2's 50,257-word vocabulary
CHUNK_ELEMENTS = 1 << 27


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_rows):
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            mask = labels != -100
            count = mask.sum().clamp(min=1).float()
            need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            loss = torch.zeros((), device=h.device, dtype=torch.float32)
            hits = torch.zeros((), device=h.device, dtype=torch.long)
            predictions = torch.empty(labels.shape, device=h.device, dtype=torch.long)
            for start in range(0, h.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                logits = (h[rows] @ w.T).float()
                chunk_labels, chunk_mask = labels[rows], mask[rows]
                safe = chunk_labels.clamp(min=0)
                lse = torch.logsumexp(logits, dim=-1)
                target = logits.gather(1, safe[:, None]).squeeze(1)
                loss += ((lse - target) * chunk_mask).sum()
                predictions[rows] = logits.argmax(-1)
                hits += ((predictions[rows] == chunk_labels) & chunk_mask).sum()
                if need_grad:  # d loss / d logits = (softmax - one_hot) / count, on the counted tokens
                    grad = logits.sub_(lse[:, None]).exp_()
                    grad.scatter_add_(1, safe[:, None], -torch.ones_like(target)[:, None])
                    grad.mul_((chunk_mask.float() / count)[:, None])
                    grad = grad.to(dtype)
                    if grad_h is not None:
                        grad_h[rows] = grad @ w
                    if grad_w is not None:
                        grad_w += (grad.T @ h[rows]).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_dtype = hidden.dtype
        ctx.mark_non_differentiable(hits, predictions)
        return loss / count, hits, predictions

    @staticmethod
    def backward(ctx, grad_loss, _grad_hits, _grad_predictions):
        grad_h, grad_w = ctx.saved_tensors
        if grad_h is not None:
            grad_h = (grad_h * grad_loss).to(ctx.hidden_dtype)
        if grad_w is not None:
            grad_w = grad_w * grad_loss
        return grad_h, grad_w, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over labels != -100, number of top-1 hits there, top-1 predictions) of the logits
    `hidden @ weight.T`, for `hidden` (N, H), `weight` (V, H), `labels` (N,)."""
    chunk_rows = max(1, chunk_elements // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, labels, chunk_rows)


def reference_cross_entropy(hidden, weight, labels):
    """The plain computation (full logits), for tests and benchmarks."""
    logits = (hidden @ weight.T).float()
    mask = labels != -100
    loss = F.cross_entropy(logits, labels, ignore_index=-100)
    predictions = logits.argmax(-1)
    return loss, ((predictions == labels) & mask).sum(), predictions
