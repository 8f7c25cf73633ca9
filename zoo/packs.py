"""Packs: K members of one stage trained at once, in one process, by one `PackTrainer`.

The members of a pack share their architecture (parameter shapes), data and schedule; each keeps its own
initialisation seed, data order, augmentation randomness, learning rate, weight decay, momentum and head values.

- **Stacked weights.** Every parameter of the K members lives in one `[K, ...]` tensor; each member's stock model
  sees its slice (a view), so evaluating or saving a member needs no copy. A training step runs the K forward and
  backward passes as one `torch.func.vmap` over `functional_call` of the stock module (`mode="vmap"`), or member
  after member on the same stacked storage (`mode="loop"`).
- **Lanes.** A member's random stream (torch, numpy, random) is a *lane*: its data order, augmentation and
  evaluation draws are made on its lane exactly as when it trains alone, so a packed member sees the same batches
  as its solo run. (Dropout inside the stacked forward draws from the pack's stream instead.)
- **Per-member optimizer.** `PackedOptimizer` is AdamW or SGD on the stacked tensors with one learning rate,
  weight decay and momentum per member, and per-member gradient clipping: the update of each member is the one
  `torch.optim.AdamW` / `SGD` makes for it alone. The trainable weights and their gradients live in one flat
  `[K, P]` tensor (the stacked parameters are views of it), so a step is a few operations for the whole pack.
- **Evaluation once per pack.** Each evaluation batch is taken once and every member is evaluated on it (one
  vmapped forward on an accelerator, member after member on a CPU), with the metrics `Trainer.evaluate` gives.
- **Failures stay local.** A member whose loss is not finite is recorded as failed (its `error.json`, as alone),
  frozen, and left out of the rest of the pack's training; the others go on.
- **Resumable.** After every epoch the pack writes each member's `result.json` line and checkpoint, then its own
  state (stacked weights, optimizer, lanes) atomically; a rerun of the same pack continues from it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo import layout
from zoo.training import MemberWriter, TrainingDiverged, ZooTrainer, isolated_rng, rng_state, set_rng_state

logger = logging.getLogger("zoo")
# A pack's gradients accumulate in place into views of its flat [K, P] storage (`StackedMembers.flats`), which
# autograd's layout check reports once per process; it is the intended layout, for the trainer and the benchmarks.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

# Config keys whose values may differ between the members of one pack: everything else must be equal.
PER_MEMBER_KEYS = frozenset({"seed", "learning_rate", "weight_decay", "momentum", "init", "init_std",
                             "member_prefix", "name_factors"})
PACK_MODES = ("auto", "vmap", "loop")
STATE_WEIGHTS, STATE_OPTIMIZER, STATE_INFO = "weights.safetensors", "optimizer.safetensors", "pack.json"


def resolve_mode(mode: str, models: list[nn.Module] | None = None) -> str:
    """`auto` is vmap (faster on a GPU, and on a CPU for the quickstart's ViTs: `bench/bench_packs.py`), unless the
    members have dropout: then `loop`, where each member's dropout draws from its own lane, as when it trains alone
    (vmap draws the whole pack's dropout from one stream). A model that vmap cannot batch falls back to `loop` at
    its first step."""
    if mode not in PACK_MODES:
        raise ValueError(f"pack mode {mode!r} is not one of {', '.join(PACK_MODES)}")
    if mode == "auto":
        return "loop" if models and has_dropout(models[0]) else "vmap"
    return mode


DROPOUT_CONFIG_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
                       "attn_pdrop", "attention_dropout", "dropout")


def has_dropout(model: nn.Module) -> bool:
    """Whether training draws dropout masks: a dropout module with p > 0, or a dropout rate in the HF config (some
    attention implementations take it as a number, not a module)."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    return any(isinstance(getattr(config, key, None), (int, float)) and getattr(config, key) > 0
               for key in DROPOUT_CONFIG_KEYS)


def pack_signature(params: dict[str, Any]) -> str:
    """Members with the same signature may train in one pack (same shapes, data and schedule)."""
    shared = {k: v for k, v in params.items() if k not in PER_MEMBER_KEYS}
    return json.dumps(shared, sort_keys=True, default=str)


def group_packs(items: list, params_of, size: int) -> list[list]:
    """`items` in packs of at most `size` whose `params_of(item)` share a signature, in their given order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(pack_signature(params_of(item)), []).append(item)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), max(1, size))]


def pack_id(member_dirs: list[Path]) -> str:
    digest = hashlib.sha256("\n".join(sorted(str(Path(d).name) for d in member_dirs)).encode()).hexdigest()
    return f"pack-{digest[:12]}"


# ---------------------------------------------------------------- lanes (per-member random streams)


class Lane:
    """One member's random streams: what it draws from while active is what it would draw trained alone."""

    def __init__(self, state: dict[str, Any] | None = None):
        self.state = state or rng_state()

    @contextlib.contextmanager
    def active(self):
        outside = rng_state()
        set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = rng_state()
            set_rng_state(outside)

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.state["python"]
        name, keys, pos, has_gauss, cached = self.state["numpy"]
        out = {"python": [version, list(internal), gauss],
               "numpy": [name, base64.b64encode(np.asarray(keys, dtype=np.uint32).tobytes()).decode(), int(pos),
                         int(has_gauss), float(cached)],
               "cpu": base64.b64encode(self.state["cpu"].numpy().tobytes()).decode()}
        if "cuda" in self.state:
            out["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in self.state["cuda"]]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lane:
        def tensor(text: str) -> torch.Tensor:
            return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()

        version, internal, gauss = data["python"]
        name, keys, pos, has_gauss, cached = data["numpy"]
        state = {"python": (version, tuple(internal), gauss),
                 "numpy": (name, np.frombuffer(base64.b64decode(keys), dtype=np.uint32).copy(), pos, has_gauss,
                           cached),
                 "cpu": tensor(data["cpu"])}
        if "cuda" in data and torch.cuda.is_available():
            state["cuda"] = [tensor(s) for s in data["cuda"]]
        return cls(state)


# ---------------------------------------------------------------- stacked weights


class StackedMembers(nn.Module):
    """The K member models' parameters as `[K, ...]` tensors; each member model keeps views of its slices.

    `losses(objective, prepared)` computes every member's (loss, correct, count) from its prepared batch.
    """

    def __init__(self, models: list[nn.Module], mode: str = "auto"):
        super().__init__()
        self.mode = resolve_mode(mode, models)
        if self.mode == "vmap" and has_dropout(models[0]):
            logger.warning("pack_mode vmap with dropout: the members' dropout masks come from the pack's random "
                           "stream, not each member's own (pack_mode auto or loop keeps them)")
        self.members = models  # a plain list: their parameters are views of the stacked ones
        first = models[0]
        shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("the members of a pack must have the same parameter names and shapes")
        all_names = [n for n, _ in first.named_parameters()]
        self.trainable = {n for n, p in first.named_parameters() if p.requires_grad}
        per_member = [dict(m.named_parameters()) for m in models]
        # frozen weights equal in every member (the parent's encoder under `freeze_encoder`) are kept once and
        # given to vmap unbatched: with equal inputs, vmap then runs that part once for the whole pack
        self.shared: dict[str, torch.Tensor] = {}
        for name in all_names:
            values = [params[name] for params in per_member]
            if name not in self.trainable and all(torch.equal(values[0], v) for v in values[1:]):
                self.shared[name] = values[0].detach()
        self.names = [n for n in all_names if n not in self.shared]  # the stacked ones
        # The trainable ones are views of one [K, P] tensor per dtype and device (`flats`: member k's weights are row
        # k), so the packed optimizer updates all of them with a handful of operations, not a dozen per tensor.
        self.flats: list[tuple[torch.Tensor, list[tuple[str, int, int]]]] = []
        layout_of: dict[tuple, list[str]] = {}
        for name in self.names:
            if name in self.trainable:
                value = per_member[0][name]
                layout_of.setdefault((value.dtype, value.device), []).append(name)
        views: dict[str, torch.Tensor] = {}
        for (dtype, device), names in layout_of.items():
            sizes = [per_member[0][n].numel() for n in names]
            flat = torch.empty(len(models), sum(sizes), dtype=dtype, device=device)
            spans, offset = [], 0
            for name, size in zip(names, sizes):
                views[name] = flat[:, offset:offset + size].view(len(models), *per_member[0][name].shape)
                spans.append((name, offset, size))
                offset += size
            self.flats.append((flat, spans))
        self.stacked = nn.ParameterList()
        self.index: dict[str, int] = {}
        for name in self.names:
            values = torch.stack([params[name].detach() for params in per_member])
            if name in views:
                stacked = nn.Parameter(views[name], requires_grad=True)
                with torch.no_grad():
                    stacked.copy_(values)
            else:
                stacked = nn.Parameter(values, requires_grad=False)
            self.index[name] = len(self.stacked)
            self.stacked.append(stacked)
        # names under which a parameter is reached again (tied weights: GPT-2's lm_head is its token embedding)
        canonical = {id(p): n for n, p in first.named_parameters()}
        self.aliases = {alias: canonical[id(p)] for alias, p in first.named_parameters(remove_duplicate=False)
                        if alias != canonical[id(p)]}
        self.buffer_names = [n for n, _ in first.named_buffers()]
        self.buffers_stacked = {n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n in self.buffer_names}
        for k, model in enumerate(models):
            _point_at(model, {n: self.stacked[self.index[n]] for n in self.names}, self.shared, k)
        self.member_params = [dict(m.named_parameters()) for m in models]
        # the module whose code runs on the stacked weights (not a submodule: it holds no weights of its own)
        base = copy.deepcopy(first).to("meta")
        if self.mode == "vmap" and first_device(models).type == "cpu" and hasattr(base, "set_attn_implementation"):
            base.set_attn_implementation("eager")  # CPU SDPA has no vmap batching rule (a slow per-member loop)
        for module in base.modules():  # a warning that peeks at token values: not possible (nor needed) under vmap
            if hasattr(module, "warn_if_padding_and_no_attention_mask"):
                module.warn_if_padding_and_no_attention_mask = _no_warning
        object.__setattr__(self, "base", base)

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
            outs = []
            for i, model in enumerate(self.members):
                with lanes[i].active() if lanes is not None else contextlib.nullcontext():
                    outs.append(objective.loss(model, prepared if common_inputs else
                                               {k: v[i] for k, v in prepared.items()}))
            return tuple(torch.stack([torch.as_tensor(o[j], device=prepared_device(prepared)).float() for o in outs])
                         for j in range(3))
        from torch.func import vmap

        params = {n: self.stacked[self.index[n]] for n in self.names}
        base = self.base

        def member_loss(weights, shared, buffers, batch):
            model = self._functional_member(base, weights, shared, buffers)
            loss, correct, count = objective.loss(model, batch)
            return loss, correct.float(), torch.as_tensor(count, device=loss.device).float()

        batch_dim = None if common_inputs else 0
        return vmap(member_loss, in_dims=(0, None, 0, batch_dim), randomness="different")(
            params, self.shared, self.buffers_stacked, prepared)

    def _functional_member(self, base, weights, shared, buffers) -> _FunctionalMember:
        """One member's stock module over its (vmapped) weights, the shared ones, tied aliases and buffers."""
        weights = {**weights, **shared}
        return _FunctionalMember(base, {**weights, **{alias: weights[name] for alias, name in self.aliases.items()},
                                        **buffers})

    def eval_losses(self, objective, prepared: dict[str, torch.Tensor]):
        """Every member's (loss, predictions, labels) on one evaluation batch that all of them see (vmap mode):
        `[K, ...]` tensors from one vmapped forward. Evaluation draws nothing (`randomness="error"`)."""
        from torch.func import vmap

        params = {n: self.stacked[self.index[n]] for n in self.names}
        base = self.base

        def member_eval(weights, shared, buffers, batch):
            return objective.eval_loss(self._functional_member(base, weights, shared, buffers), batch)

        return vmap(member_eval, in_dims=(0, None, 0, None), randomness="error")(
            params, self.shared, self.buffers_stacked, prepared)

    def gather_loop_grads(self) -> None:
        """In loop mode the gradients land on the members' parameters: copy them onto the pack's."""
        if self.mode != "loop":
            return
        for name in self.names:
            if name not in self.trainable:
                continue
            grads = [params[name].grad for params in self.member_params]
            stacked = self.param(name)
            if all(g is None for g in grads):
                continue  # a weight the forward does not use: no gradient, as alone
            if stacked.grad is None:
                stacked.grad = torch.zeros_like(stacked)
            for k, grad in enumerate(grads):
                if grad is None:
                    stacked.grad[k].zero_()
                else:
                    stacked.grad[k].copy_(grad)
            for params in self.member_params:
                params[name].grad = None


def first_device(models: list[nn.Module]) -> torch.device:
    return next(models[0].parameters()).device


def _no_warning(*args, **kwargs) -> None:
    return None


def prepared_device(prepared: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(prepared.values())).device


class _FunctionalMember:
    """A stock module called with one member's weights (inside vmap): what an objective calls its `model`."""

    def __init__(self, base: nn.Module, tensors: dict[str, torch.Tensor]):
        self.base, self.tensors = base, tensors

    def __call__(self, **kwargs):
        from torch.func import functional_call

        return functional_call(self.base, self.tensors, args=(), kwargs=kwargs, tie_weights=False)


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


# ---------------------------------------------------------------- the optimizer


class PackedOptimizer:
    """AdamW or SGD (with momentum) on stacked weights, with per-member hyperparameters and gradient clipping.

    The arithmetic is that of `torch.optim.AdamW` / `torch.optim.SGD` (single-tensor path) for each member alone, run
    on the pack's flat `[K, P]` weights and gradients (`StackedMembers.flats`): each update is a few operations for
    the whole pack. A weight the forward never reaches gets no gradient and is left alone, as torch leaves it.
    """

    def __init__(self, stacked: StackedMembers, kind: str, lrs: list[float], weight_decays: list[float],
                 decay_names: set[str], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 momenta: list[float] | None = None, max_grad_norm: float = 0.0):
        if kind not in ("adamw", "sgd"):
            raise ValueError(f"optimizer {kind!r} is not one of adamw, sgd")
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
        # per flat tensor, its column blocks with where weight decay applies (to a used, decayed weight) in each:
        # True (everywhere), False (nowhere) or a [1, width] mask
        self.decay_masks: list[list[tuple[slice, Any]]] = []

    def _adopt_grads(self) -> list[torch.Tensor]:
        """The flat gradients; at the first step, the parameters' gradients are moved into them and each parameter's
        `.grad` becomes its view (autograd then accumulates there in place). Weights without a gradient stay so."""
        if self.grads is not None:
            return self.grads
        self.grads = []
        for flat, spans in self.stacked.flats:
            grad = torch.zeros_like(flat)
            mask = torch.zeros(1, flat.shape[1], dtype=flat.dtype, device=flat.device)
            for name, offset, size in spans:
                param = self.stacked.param(name)
                if param.grad is None:
                    continue
                view = grad[:, offset:offset + size].view_as(param)
                view.copy_(param.grad)
                param.grad = view
                if name in self.decay_names:
                    mask[:, offset:offset + size] = 1
            self.grads.append(grad)
            blocks = []
            for part in _column_chunks(flat):
                decays = mask[:, part]
                blocks.append((part, True if bool(decays.all()) else (decays if bool(decays.any()) else False)))
            self.decay_masks.append(blocks)
        return self.grads

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
        for (flat, _), grad, mask, state in zip(self.stacked.flats, grads, self.decay_masks, self.state):
            slots = ("exp_avg", "exp_avg_sq") if self.kind == "adamw" else ("momentum_buffer",)
            first = not state
            for slot in slots if first else ():
                state[slot] = torch.zeros_like(flat)
            lr_k, wd_k, momentum_k = (v.unsqueeze(1).to(flat.dtype) for v in (lr, self.weight_decays, self.momenta))
            for part, decays in mask:
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
        self.steps = steps
        self.state = [{} for _ in self.stacked.flats]
        for (flat, spans), state in zip(self.stacked.flats, self.state):
            for slot in sorted({key.rsplit("::", 1)[1] for key in tensors}):
                value = torch.zeros_like(flat)
                for name, offset, size in spans:
                    if f"{name}::{slot}" in tensors:
                        value[:, offset:offset + size] = tensors[f"{name}::{slot}"].reshape(flat.shape[0], size)
                state[slot] = value


def _column_chunks(flat: torch.Tensor) -> list[slice]:
    """Column blocks of a `[K, P]` tensor for the optimizer's element-wise updates: all of it on an accelerator (few
    kernel launches), blocks of about 2^18 elements on a CPU (temporaries stay in the caches: 3x faster there)."""
    width = flat.shape[1] if flat.device.type != "cpu" else max(1, 2**18 // max(1, flat.shape[0]))
    return [slice(start, min(start + width, flat.shape[1])) for start in range(0, flat.shape[1], width)]


# ---------------------------------------------------------------- the trainer


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
        _check_same_schedule(members)
        models = []
        for member in members:  # each member's model from its own seed, and its lane from there on
            model = run.build_model(member.args)  # seeds the global stream with the member's seed
            model.to(first.args.training.device)
            member.lane = Lane()
            member.model = model
            models.append(model)
        stacked = StackedMembers(models, mode)
        args = copy.deepcopy(first.args.training)
        args.output_dir = str(self.state_dir)
        super().__init__(model=stacked, args=args, objective=run.objective(first.args),
                         eval_dataset=run.data.splits["test"])
        for member in members:
            member.trainer = run.trainer(member.args, None, model=member.model)
            member.writer.trainer = member.trainer
            member.objective = run.objective(member.args)
        self.stacked = stacked
        # Evaluation batches are large: on a CPU a vmapped forward over K of them outgrows the caches (3x slower than
        # member after member for K = 8 in `bench/bench_gpu_packs.py --cpu`), so there each member's stock model
        # runs on the shared batch; on an accelerator the K forwards are one vmapped pass.
        self.vmap_eval = stacked.mode == "vmap" and first_device(models).type != "cpu"
        zoo = [m.args.zoo for m in members]
        training = [m.args.training for m in members]
        decay = set(members[0].trainer.get_decay_parameter_names(members[0].model))
        self.packed_optimizer = PackedOptimizer(
            stacked, zoo[0].optimizer, [t.learning_rate for t in training], [t.weight_decay for t in training],
            decay, (first.args.training.adam_beta1, first.args.training.adam_beta2), first.args.training.adam_epsilon,
            [z.momentum if z.optimizer == "sgd" else 0.0 for z in zoo], first.args.training.max_grad_norm)

    # ------------------------------------------------ the loop

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        first = self.pack[0]
        for member in self.pack:
            with member.lane.active():
                member.loader = member.trainer.get_train_dataloader()
        steps_per_epoch = len(first.loader)
        epochs = int(first.args.training.num_train_epochs)
        total_steps = steps_per_epoch * epochs
        schedule, factor = self._schedule(total_steps)
        start_epoch = self._resume(schedule)
        if start_epoch == 0:
            self._write_initial()
        self.stacked.train()
        for epoch in range(start_epoch, epochs):
            started = time.time()
            for member in self.pack:
                member.writer._epoch_start = started
                with member.lane.active():
                    if hasattr(member.loader, "set_epoch"):
                        member.loader.set_epoch(epoch)
                    member.iterator = iter(member.loader)
            sums = None
            for _ in range(steps_per_epoch):
                sums = self._step(factor(), sums)
                schedule.step()
            self._end_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, sums)
            self._save_state(epoch + 1)
            if all(m.failed for m in self.pack):
                break
        self._finish()
        failed = [m for m in self.pack if m.failed]
        if failed:  # recorded in each failed member; the pack's trial fails only when no member is left
            message = f"{len(failed)} of {len(self.pack)} members failed: " + \
                "; ".join(f"{m.name}: {m.failed}" for m in failed)[:400]
            if len(failed) == len(self.pack):
                raise TrainingDiverged(message)
            logger.warning("pack %s: %s", self.state_dir.name, message)

    def _schedule(self, total_steps: int):
        """The learning-rate schedule of the members (shared), as a factor of each member's own rate."""
        probe = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([probe], lr=1.0)
        scheduler = self.pack[0].trainer.create_scheduler(total_steps, optimizer)
        optimizer.step()  # (no gradients: nothing changes; torch checks the order of the first steps)
        return scheduler, (lambda: optimizer.param_groups[0]["lr"])

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
        lanes = [member.lane for member in self.pack]
        with self.accelerator.autocast():
            try:
                loss, correct, count = self.stacked.losses(self.zoo_objective, stacked_inputs, common, lanes)
            except RuntimeError as err:  # a model whose code vmap cannot batch (data-dependent Python branches)
                if self.stacked.mode != "vmap" or "vmap" not in str(err):
                    raise
                logger.warning("pack %s: vmap cannot run this model (%s); training member after member",
                               self.state_dir.name, str(err).splitlines()[0][:120])
                self.stacked.mode = "loop"
                self.vmap_eval = False  # (its evaluation could not be vmapped either)
                loss, correct, count = self.stacked.losses(self.zoo_objective, stacked_inputs, common, lanes)
        active = self.packed_optimizer.active
        torch.where(active, loss, torch.zeros_like(loss)).sum().backward()
        self.stacked.gather_loop_grads()
        self.packed_optimizer.clip()
        self.packed_optimizer.step(factor)
        self.packed_optimizer.zero_grad()
        step_sums = torch.stack([loss.detach().float() * count, correct.float(), count.float()])  # [3, K]
        return step_sums if sums is None else sums + step_sums

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

    # ------------------------------------------------ evaluation, once for the pack

    def _write_initial(self) -> None:
        """Epoch 0 of every member that lacks it, evaluated at once (isolated from the lanes, as alone)."""
        missing = [m for m in self.pack if m.writer.epoch0_missing()]
        train_set = missing[0].trainer.train_eval_dataset if missing else None
        test = train = None
        if missing and all(m.trainer.train_eval_dataset is train_set for m in missing):
            self.stacked.eval()
            with isolated_rng():
                test = self._evaluate_members(missing, None, "test", on_lanes=False)
                if test is not None:
                    train = self._evaluate_members(missing, train_set, "train", on_lanes=False) \
                        if train_set is not None else [{} for _ in missing]
        for member in self.pack:
            done = test is not None and member in missing
            member.writer.write_initial(member.model, metrics=(test[missing.index(member)],
                                                               train[missing.index(member)]) if done else None)

    def _evaluate_members(self, members: list[PackMember], dataset, prefix: str, on_lanes: bool) -> list | None:
        """The metrics `member.trainer.evaluate(dataset, metric_key_prefix=prefix)` returns, for each of `members`,
        from one pass over the evaluation batches: each batch is prepared once and the members' forward passes run
        on it as one vmapped pass (`vmap_eval`) or member after member.

        Each member's own DataLoader still runs (on its lane, with `on_lanes`), so its random stream makes the draws
        it makes alone, and its batches are checked to equal the first member's. The loss is weighted (a batch by its
        rows), NaN-filtered and prefixed as the Trainer's `evaluation_loop` does; the metrics come from the member's
        `compute_metrics`. Returns None, having touched nothing, for evaluation sets or options this does not cover;
        members whose batches differ are evaluated one by one."""
        first = members[0].trainer if members else None
        if first is None or first.args.batch_eval_metrics or first.args.include_for_metrics \
                or isinstance(dataset or first.eval_dataset, dict) \
                or any(m.trainer.eval_dataset is not first.eval_dataset for m in members):
            return None
        from transformers.trainer_pt_utils import EvalLoopContainer, find_batch_size

        iterators = []
        for member in members:
            with member.lane.active() if on_lanes else contextlib.nullcontext():
                iterators.append(iter(member.trainer.get_eval_dataloader(dataset)))
        slots = [self.stacked.members.index(m.model) for m in members]
        concat, batch_size = first.args.eval_do_concat_batches, first.args.eval_batch_size
        containers = [[EvalLoopContainer(concat, padding_index=-100) for _ in range(3)] for _ in members]
        shared = True
        while True:
            batches = []
            for member, iterator in zip(members, iterators):
                with member.lane.active() if on_lanes else contextlib.nullcontext():
                    batches.append(next(iterator, None))
            if batches[0] is None:
                break
            shared = shared and all(_same_batch(batches[0], b) for b in batches[1:])
            if not shared:
                continue  # one by one after all: the DataLoaders still draw what they draw alone
            inputs = first._prepare_inputs(batches[0])
            with torch.no_grad(), self.compute_loss_context_manager():
                outputs = self._eval_outputs(members, slots, self.zoo_objective.eval_prepare(inputs))
            rows = find_batch_size(inputs) or batch_size  # (accelerate cuts a short last batch's repeats to its rows)
            for (losses, preds, labels_seen), (loss, predictions, labels) in zip(containers, outputs):
                losses.add(loss.detach().repeat(rows))
                if first.compute_metrics is not None:
                    preds.add(predictions)
                    labels_seen.add(labels)
        if not shared:
            with isolated_rng():  # the lanes have made their evaluation draws above
                return [m.trainer.evaluate(dataset, metric_key_prefix=prefix) for m in members]
        return [_loop_metrics(m.trainer, *(c.get_arrays() for c in box), prefix)
                for m, box in zip(members, containers)]

    def _eval_outputs(self, members: list[PackMember], slots: list[int], prepared: dict) -> list[tuple]:
        """(loss, predictions, labels) of each member on one prepared evaluation batch."""
        if self.vmap_eval:
            try:
                loss, predictions, labels = self.stacked.eval_losses(self.zoo_objective, prepared)
                return [(loss[k], predictions[k], labels[k]) for k in slots]
            except RuntimeError as err:  # a model whose code vmap cannot batch
                logger.warning("pack %s: vmap cannot evaluate this model (%s); evaluating member after member",
                               self.state_dir.name, str(err).splitlines()[0][:120])
                self.vmap_eval = False
        return [self.zoo_objective.eval_loss(m.model, prepared) for m in members]

    def _fail(self, k: int, member: PackMember, error: str) -> None:
        member.failed = error
        self.packed_optimizer.active[k] = False
        layout.record_failure(member.member_dir, error, pack=self.state_dir.name)
        logger.warning("pack %s: member %s failed (%s); the others go on", self.state_dir.name, member.name, error)

    # ------------------------------------------------ resumable state

    def _save_state(self, epoch: int) -> None:
        from safetensors.torch import save_file

        final = self.state_dir / f"epoch-{epoch:04d}"
        with layout.atomic_dir(final) as tmp:
            save_file({n: self.stacked.param(n).detach().contiguous() for n in self.stacked.names},
                      str(tmp / STATE_WEIGHTS))
            save_file({k: v.contiguous() for k, v in self.packed_optimizer.state_tensors().items()},
                      str(tmp / STATE_OPTIMIZER))
            layout.atomic_write_json(tmp / STATE_INFO, {
                "epoch": epoch, "optimizer_steps": self.packed_optimizer.steps,
                "members": [m.name for m in self.pack], "failed": {m.name: m.failed for m in self.pack if m.failed},
                "lanes": [m.lane.to_json() for m in self.pack]})
        for old in self.state_dir.glob("epoch-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def _resume(self, schedule) -> int:
        """Load the newest complete pack state; returns the epoch to start from (0: a fresh pack)."""
        from safetensors.torch import load_file

        states = sorted(p for p in self.state_dir.glob("epoch-*") if (p / STATE_INFO).is_file())
        if not states:
            return 0
        latest = states[-1]
        info = layout.read_json(latest / STATE_INFO)
        if info.get("members") != [m.name for m in self.pack]:
            logger.warning("%s holds another pack; starting afresh", latest)
            return 0
        weights = load_file(str(latest / STATE_WEIGHTS))
        with torch.no_grad():
            for name in self.stacked.names:
                self.stacked.param(name).copy_(weights[name])
        self.packed_optimizer.load_state_tensors(load_file(str(latest / STATE_OPTIMIZER)), info["optimizer_steps"])
        for k, member in enumerate(self.pack):
            member.lane = Lane.from_json(info["lanes"][k])
            if member.name in info.get("failed", {}):
                member.failed = info["failed"][member.name]
                self.packed_optimizer.active[k] = False
        for _ in range(info["optimizer_steps"]):
            schedule.step()
        logger.info("pack %s resumes after epoch %d", self.state_dir.name, info["epoch"])
        return int(info["epoch"])

    def _finish(self) -> None:
        if all(layout.load_member(m.member_dir).is_complete() or m.failed for m in self.pack):
            layout.remove_trainer_state(self.state_dir)


def _same_batch(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def _loop_metrics(trainer, losses, predictions, labels, prefix: str) -> dict[str, float]:
    """What `Trainer.evaluation_loop` makes of gathered losses, predictions and labels."""
    from transformers.trainer_utils import EvalPrediction, denumpify_detensorize

    metrics = {}
    if trainer.compute_metrics is not None and predictions is not None and labels is not None:
        metrics = trainer.compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
    metrics = denumpify_detensorize(metrics)
    if isinstance(losses, np.ndarray):
        finite = np.isfinite(losses)
        if trainer.args.logging_nan_inf_filter and finite.any():
            losses = losses[finite]
        metrics[f"{prefix}_loss"] = losses.mean().item()
    return {key if key.startswith(f"{prefix}_") else f"{prefix}_{key}": value for key, value in metrics.items()}


def _check_same_schedule(members: list[PackMember]) -> None:
    first = members[0].args
    for member in members[1:]:
        if pack_signature(member.args.flat()) != pack_signature(first.flat()):
            theirs, ours = member.args.flat(), first.flat()
            key = next(k for k in sorted(ours) if k not in PER_MEMBER_KEYS and ours.get(k) != theirs.get(k))
            raise ValueError(f"{member.name} cannot share a pack with {members[0].name}: {key} differs")
    if first.training.gradient_accumulation_steps != 1:
        raise ValueError("a pack trains with gradient_accumulation_steps 1")


# ---------------------------------------------------------------- entry point


def train_pack(run, plans: list[tuple[str, Any, Path]], state_dir: Path, mode: str = "auto",
               provenance: dict | None = None) -> list[layout.MemberInfo]:
    """Train the members `plans` (name, arguments, member folder) as one pack; complete ones are left alone."""
    todo = [(name, args, member_dir) for name, args, member_dir in plans
            if not (layout.is_member_dir(member_dir) and layout.load_member(member_dir).is_complete())]
    if not todo:
        return [layout.load_member(d) for _, _, d in plans]
    state_dir = Path(state_dir)
    record = {"id": state_dir.name, "size": len(todo), "mode": resolve_mode(mode),
              "members": [n for n, _, _ in todo]}
    members = []
    for name, args, member_dir in todo:
        args.training.output_dir = str(state_dir)
        args.training.disable_tqdm = True
        writer = run.prepare_member(args, member_dir, {**(provenance or {}), "pack": record})
        members.append(PackMember(name, args, Path(member_dir), writer))
    trainer = PackTrainer(run, members, state_dir, mode)
    _record_mode(members, record, trainer.stacked.mode)  # auto chose loop for members with dropout
    try:
        trainer.train()
    except TrainingDiverged:
        raise
    except BaseException as err:  # a crash of the pack: every member not finished records it
        message = f"{type(err).__name__}: {str(err).splitlines()[0][:400] if str(err) else ''}"
        if not isinstance(err, KeyboardInterrupt):
            for member in members:
                if not member.failed and not layout.load_member(member.member_dir).is_complete():
                    layout.record_failure(member.member_dir, message, pack=state_dir.name)
        raise
    _record_mode(members, record, trainer.stacked.mode)  # vmap could not batch this model
    return [layout.load_member(d) for _, _, d in plans]


def _record_mode(members: list[PackMember], record: dict, mode: str) -> None:
    """The pack record in the members' configs says how the pack trained."""
    if record["mode"] == mode:
        return
    record["mode"] = mode
    for member in members:
        config = layout.read_member_config(member.member_dir)
        config["provenance"]["pack"]["mode"] = mode
        layout.write_member_config(member.member_dir, config)
