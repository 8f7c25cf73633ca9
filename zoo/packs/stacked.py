"""Stacked weights: the K member models' parameters as `[K, ...]` tensors, each member model keeping views of its
slices, and the members' losses from one vmapped forward (or member after member)."""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from zoo.packs.grouping import has_dropout, resolve_mode
from zoo.packs.lanes import lane_of

logger = logging.getLogger("zoo")

# (name, column offset, number of columns) of each weight in a flat [K, P] tensor
Spans = list[tuple[str, int, int]]


class StackedMembers(nn.Module):
    """The K member models' parameters as `[K, ...]` tensors; each member model keeps views of its slices.

    Trainable weights are views of one flat `[K, P]` tensor per dtype and device (`flats`: member k's weights are row
    k), so the packed optimizer updates all of them with a handful of operations. Frozen weights equal in every member
    (a parent's encoder under `freeze_encoder`) are kept once (`shared`) and given to vmap unbatched: with equal
    inputs, vmap then runs that part once for the whole pack.

    `losses(objective, prepared)` computes every member's (loss, correct, count) from its prepared batch.
    """

    def __init__(self, models: list[nn.Module], mode: str = "auto"):
        super().__init__()
        self.mode = resolve_mode(mode, models)
        if self.mode == "vmap" and has_dropout(models[0]):
            logger.warning("pack_mode vmap with dropout: the members' dropout masks come from the pack's random "
                           "stream, not each member's own (pack_mode auto or loop keeps them)")
        _check_same_shapes(models)
        self.members = models  # a plain list: their parameters are views of the stacked ones
        first = models[0]
        per_member = [dict(m.named_parameters()) for m in models]
        self.trainable = {n for n, p in first.named_parameters() if p.requires_grad}
        self.shared = _equal_frozen(per_member, self.trainable)
        self.names = [n for n in per_member[0] if n not in self.shared]  # the stacked ones
        self.flats, views = _flat_storage(per_member, [n for n in self.names if n in self.trainable])
        self.stacked, self.index = _stack(per_member, self.names, views)
        self.aliases = _tied_aliases(first)
        self.buffer_names = [n for n, _ in first.named_buffers()]
        self.buffers_stacked = {n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n in self.buffer_names}
        for k, model in enumerate(models):
            _point_at(model, {n: self.param(n) for n in self.names}, self.shared, k)
        self.member_params = [dict(m.named_parameters()) for m in models]
        eager = self.mode == "vmap" and first_device(models).type == "cpu"
        object.__setattr__(self, "base", _code_holder(first, eager))  # not a submodule: it holds no weights

    def train(self, mode: bool = True):
        super().train(mode)
        # the meta-device code holder only needs its modules' `training` flags (dropout): PreTrainedModel.train's
        # hooks (kernelization) are for real models and fail on meta tensors
        nn.Module.train(self.base, mode)
        for model in self.members:
            model.train(mode)
        return self

    def param(self, name: str) -> nn.Parameter:
        return self.stacked[self.index[name]]

    def losses(self, objective, prepared: dict[str, torch.Tensor], common_inputs: bool = False,
               lanes: list | None = None):
        """Per member: (loss, correct, count), each a `[K]` tensor. `prepared` holds `[K, batch, ...]` tensors, or,
        with `common_inputs`, the one batch that every member sees (`[batch, ...]`). In loop mode each member's
        forward runs on its lane (`lanes`), so its dropout draws are its own."""
        if self.mode == "loop":
            return self._loop_losses(objective, prepared, common_inputs, lanes)
        from torch.func import vmap

        def member_loss(weights, shared, buffers, batch):
            loss, correct, count = objective.loss(self._functional_member(weights, shared, buffers), batch)
            return loss, correct.float(), torch.as_tensor(count, device=loss.device).float()

        batch_dim = None if common_inputs else 0
        return vmap(member_loss, in_dims=(0, None, 0, batch_dim), randomness="different")(
            self._stacked_weights(), self.shared, self.buffers_stacked, prepared)

    def _loop_losses(self, objective, prepared, common_inputs: bool, lanes: list | None):
        outs = []
        for i, model in enumerate(self.members):
            batch = prepared if common_inputs else {k: v[i] for k, v in prepared.items()}
            with lane_of(lanes[i] if lanes is not None else None):
                outs.append(objective.loss(model, batch))
        device = prepared_device(prepared)
        return tuple(torch.stack([torch.as_tensor(o[j], device=device).float() for o in outs]) for j in range(3))

    def eval_losses(self, objective, prepared: dict[str, torch.Tensor]):
        """Every member's (loss, predictions, labels) on one evaluation batch that all of them see (vmap mode):
        `[K, ...]` tensors from one vmapped forward. Evaluation draws nothing (`randomness="error"`)."""
        from torch.func import vmap

        def member_eval(weights, shared, buffers, batch):
            return objective.eval_loss(self._functional_member(weights, shared, buffers), batch)

        return vmap(member_eval, in_dims=(0, None, 0, None), randomness="error")(
            self._stacked_weights(), self.shared, self.buffers_stacked, prepared)

    def _stacked_weights(self) -> dict[str, nn.Parameter]:
        return {n: self.param(n) for n in self.names}

    def _functional_member(self, weights, shared, buffers) -> _FunctionalMember:
        """One member's stock module over its (vmapped) weights, the shared ones, tied aliases and buffers."""
        weights = {**weights, **shared}
        aliases = {alias: weights[name] for alias, name in self.aliases.items()}
        return _FunctionalMember(self.base, {**weights, **aliases, **buffers})

    def gather_loop_grads(self) -> None:
        """In loop mode the gradients land on the members' parameters: copy them onto the pack's."""
        if self.mode != "loop":
            return
        for name in self.names:
            if name in self.trainable:
                _gather_grad(self.param(name), self.member_params, name)


def first_device(models: list[nn.Module]) -> torch.device:
    return next(models[0].parameters()).device


def prepared_device(prepared: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(prepared.values())).device


class _FunctionalMember:
    """A stock module called with one member's weights (inside vmap): what an objective calls its `model`."""

    def __init__(self, base: nn.Module, tensors: dict[str, torch.Tensor]):
        self.base, self.tensors = base, tensors

    def __call__(self, **kwargs):
        from torch.func import functional_call

        return functional_call(self.base, self.tensors, args=(), kwargs=kwargs, tie_weights=False)


# ------------------------------------------------ building the stack


def _check_same_shapes(models: list[nn.Module]) -> None:
    shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("the members of a pack must have the same parameter names and shapes")


def _equal_frozen(per_member: list[dict[str, nn.Parameter]], trainable: set[str]) -> dict[str, torch.Tensor]:
    """The frozen weights that are equal in every member, by name (the first member's, detached)."""
    shared = {}
    for name, first in per_member[0].items():
        if name not in trainable and all(torch.equal(first, params[name]) for params in per_member[1:]):
            shared[name] = first.detach()
    return shared


def _flat_storage(per_member: list[dict[str, nn.Parameter]], names: list[str]):
    """One `[K, P]` tensor per dtype and device holding the weights `names` side by side, with each one's columns
    (`Spans`), and each weight's `[K, ...]` view of it by name."""
    by_layout: dict[tuple, list[str]] = {}
    for name in names:
        value = per_member[0][name]
        by_layout.setdefault((value.dtype, value.device), []).append(name)
    flats: list[tuple[torch.Tensor, Spans]] = []
    views: dict[str, torch.Tensor] = {}
    for (dtype, device), layout_names in by_layout.items():
        shapes = [per_member[0][n].shape for n in layout_names]
        spans, offset = [], 0
        for name, shape in zip(layout_names, shapes):
            spans.append((name, offset, shape.numel()))
            offset += shape.numel()
        flat = torch.empty(len(per_member), offset, dtype=dtype, device=device)
        for (name, start, size), shape in zip(spans, shapes):
            views[name] = flat[:, start:start + size].view(len(per_member), *shape)
        flats.append((flat, spans))
    return flats, views


def _stack(per_member: list[dict[str, nn.Parameter]], names: list[str], views: dict[str, torch.Tensor]):
    """The stacked parameters (trainable ones in their flat views, frozen ones as their own tensors) and the index of
    each name among them."""
    stacked, index = nn.ParameterList(), {}
    for name in names:
        values = torch.stack([params[name].detach() for params in per_member])
        if name in views:
            param = nn.Parameter(views[name], requires_grad=True)
            with torch.no_grad():
                param.copy_(values)
        else:
            param = nn.Parameter(values, requires_grad=False)
        index[name] = len(stacked)
        stacked.append(param)
    return stacked, index


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """Names under which a parameter is reached again, to its first name (GPT-2's lm_head is its token embedding)."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    return {alias: canonical[id(p)] for alias, p in model.named_parameters(remove_duplicate=False)
            if alias != canonical[id(p)]}


def _point_at(model: nn.Module, stacked: dict[str, torch.Tensor], shared: dict[str, torch.Tensor], k: int) -> None:
    """Make `model`'s parameters views of the member's slice of the stacked tensors, or of the shared ones (tied
    ones stay tied)."""
    replaced: dict[int, nn.Parameter] = {}
    for name, param in model.named_parameters():
        data = shared[name] if name in shared else stacked[name].data[k]
        replaced[id(param)] = nn.Parameter(data, requires_grad=param.requires_grad)
    for module in model.modules():
        for leaf, param in list(module._parameters.items()):
            if param is not None and id(param) in replaced:
                module._parameters[leaf] = replaced[id(param)]


def _code_holder(model: nn.Module, eager_attention: bool) -> nn.Module:
    """A weightless (meta-device) copy of `model` whose code runs on the stacked weights."""
    base = copy.deepcopy(model).to("meta")
    if eager_attention and hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation("eager")  # CPU SDPA has no vmap batching rule (a slow per-member loop)
    for module in base.modules():  # a warning that peeks at token values: not possible (nor needed) under vmap
        if hasattr(module, "warn_if_padding_and_no_attention_mask"):
            module.warn_if_padding_and_no_attention_mask = _no_warning
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.forward = _padding_row_detached(module)
    return base


def _padding_row_detached(module: nn.Embedding):
    """`nn.Embedding.forward` with its padding row kept out of the gradient by a detach instead of `padding_idx`:
    torch's vmap of the embedding backward with batched indices zeroes that row for the first member only, so the
    other members' padding rows would learn from their inputs (a tied output head still trains the row)."""
    def forward(ids: torch.Tensor) -> torch.Tensor:
        weight = module.weight
        keep = torch.ones(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        keep[module.padding_idx] = 0
        weight = weight * keep + (weight * (1 - keep)).detach()  # the same values
        return F.embedding(ids, weight, None, module.max_norm, module.norm_type, module.scale_grad_by_freq,
                           module.sparse)

    return forward


def _no_warning(*args, **kwargs) -> None:
    return None


def _gather_grad(stacked: nn.Parameter, member_params: list[dict[str, nn.Parameter]], name: str) -> None:
    """Move the members' gradients of `name` into rows of `stacked.grad` (a member without one gets zeros); a weight
    no member's forward used keeps no gradient, as alone."""
    grads = [params[name].grad for params in member_params]
    if all(g is None for g in grads):
        return
    if stacked.grad is None:
        stacked.grad = torch.zeros_like(stacked)
    for k, grad in enumerate(grads):
        if grad is None:
            stacked.grad[k].zero_()
        else:
            stacked.grad[k].copy_(grad)
    for params in member_params:
        params[name].grad = None
