"""Packs: members trained at once match their solo runs, look like solo members, fail alone and resume."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import ROOT
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from zoo import kinds, layout, packs
from zoo.arguments import parse_config
from zoo.runs import Arguments, MemberRun, kind_defaults
from zoo.training import ZooTrainer, isolated_rng

CONFIG = ROOT / "recipes" / "configs" / "vision" / "pretrain_supervised_tiny.yaml"
MEMBERS = [{"seed": 1, "learning_rate": 1e-3}, {"seed": 2, "learning_rate": 3e-3, "weight_decay": 0.1}]


def _run(root: Path, **overrides) -> MemberRun:
    import yaml

    base = yaml.safe_load(CONFIG.read_text())
    base.update({"output_dir": str(root), "disable_tqdm": True, "num_train_epochs": 2, "checkpoint_every": 1,
                 "max_train_samples": 128, "max_eval_samples": 32, "per_device_train_batch_size": 64,
                 "warmup_steps": 1, "report_to": "none", **overrides})
    kind = kinds.get("vit-pretrain")
    return MemberRun(kind, Arguments(*parse_config(base, defaults=kind_defaults(kind))), base)


def _plans(run: MemberRun, folder: Path, members=MEMBERS):
    out = []
    for values in members:
        args = run.args.with_params(values)
        name = run.member_name(args)
        out.append((name, args, folder / name))
    return out


def _weights(member_dir: Path, epoch: int) -> dict[str, torch.Tensor]:
    return load_file(str(member_dir / layout.checkpoint_name(epoch) / "model.safetensors"))


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """The members of MEMBERS trained one by one, as without packs."""
    root = tmp_path_factory.mktemp("solo")
    run = _run(root)
    for _, args, member_dir in _plans(run, root):
        run.train_member(args, member_dir, root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_a_pack_trains_each_member_as_it_would_train_alone(tmp_path, mode, solo):
    """Same batches, augmentation and optimizer per member: weights agree to float rounding, metrics match."""
    run = _run(tmp_path)
    plans = _plans(run, tmp_path / "pack")
    packs.train_pack(run, plans, tmp_path / "state" / "pack-test", mode)
    for name, _, member_dir in plans:
        solo_dir = solo / name
        packed, alone = layout.load_member(member_dir), layout.load_member(solo_dir)
        assert packed.is_complete() and packed.checkpoints == alone.checkpoints == [0, 1, 2]
        assert _max_difference(_weights(member_dir, 0), _weights(solo_dir, 0)) == 0  # the same initialisation
        # Adam turns rounding-level gradient differences (a vmapped eager attention against SDPA, say) into steps of
        # up to the learning rate (3e-3 here); the weights themselves move by ~1e-2 over these 4 steps
        assert _max_difference(_weights(member_dir, 2), _weights(solo_dir, 2)) < 0.25 * 3e-3
        for mine, theirs in zip(packed.results, alone.results, strict=True):
            assert set(mine) == set(theirs)
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4)
            assert mine["test_loss"] == pytest.approx(theirs["test_loss"], abs=1e-4)
        # indistinguishable in form from a solo member, plus the record of its pack
        assert set(packed.config) == set(alone.config)
        assert packed.config["recipe"] == alone.config["recipe"]
        record = packed.config["provenance"]["pack"]
        assert record["size"] == 2 and name in record["members"] and record["mode"] == mode
        model = AutoModelForImageClassification.from_pretrained(str(member_dir / layout.checkpoint_name(2)))
        assert model.config.num_labels == packed.config["num_labels"]
    # the two members differ (their own seeds and learning rates), and the pack state is gone once complete
    first, second = (layout.load_member(d) for _, _, d in plans)
    assert _max_difference(_weights(first.path, 2), _weights(second.path, 2)) > 1e-3
    assert not (tmp_path / "state" / "pack-test").exists()


@pytest.mark.slow
def test_a_pack_of_llama_decoders_trains_each_as_alone(tmp_path):
    """vmap over the stock LlamaForCausalLM (RoPE, RMSNorm, SwiGLU, tied embeddings): each member's weights and
    losses are those of its solo run. Plain SGD: its step is linear in the gradient, so the rounding noise of the
    near-zero gradients of rarely seen tokens stays noise (AdamW would make each a step of the learning rate)."""
    small = {"max_train_samples": 2, "max_eval_samples": 2, "vocab_size": 512, "block_size": 32,  # 2 steps/epoch
             "per_device_train_batch_size": 32, "num_train_epochs": 2, "optimizer": "sgd", "max_grad_norm": 0}
    members = [{"seed": 1, "learning_rate": 0.05}, {"seed": 2, "learning_rate": 0.1, "weight_decay": 0.1}]
    solo = _language_run(tmp_path / "solo", "lm-pretrain", "pretrain_llama_tiny.yaml", **small)
    for _, args, member_dir in _plans(solo, tmp_path / "solo", members):
        solo.train_member(args, member_dir, tmp_path / "solo")
    run = _language_run(tmp_path / "packed", "lm-pretrain", "pretrain_llama_tiny.yaml", **small)
    plans = _plans(run, tmp_path / "packed", members)
    packs.train_pack(run, plans, tmp_path / "state" / "pack-llama", "vmap")
    moved = []
    for name, _, member_dir in plans:
        packed, alone = layout.load_member(member_dir), layout.load_member(tmp_path / "solo" / name)
        assert packed.is_complete() and packed.config["provenance"]["pack"]["mode"] == "vmap"
        assert _max_difference(_weights(member_dir, 0), _weights(alone.path, 0)) == 0
        assert _max_difference(_weights(member_dir, 2), _weights(alone.path, 2)) < 1e-5
        moved.append(_max_difference(_weights(member_dir, 2), _weights(member_dir, 0)))
        for mine, theirs in zip(packed.results, alone.results, strict=True):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4)
            assert mine["test_loss"] == pytest.approx(theirs["test_loss"], abs=1e-4)
    assert min(moved) > 1e-3  # the members did train


def test_a_diverging_member_fails_alone(tmp_path):
    run = _run(tmp_path, label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, warmup_steps=0)
    plans = _plans(run, tmp_path / "pack", [{"learning_rate": 1e-3}, {"learning_rate": 1e38}])
    packs.train_pack(run, plans, tmp_path / "state" / "pack-nan")  # the pack goes on without it
    healthy, diverged = (layout.load_member(d) for _, _, d in plans)
    assert healthy.is_complete() and healthy.error is None
    assert torch.isfinite(torch.tensor(healthy.results[-1]["train_loss"]))
    assert not diverged.is_complete() and "TrainingDiverged" in diverged.error


def test_an_interrupted_pack_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Stopped after its first epoch, a rerun of the pack continues from its saved state, bit for bit."""
    run = _run(tmp_path)
    reference = _plans(run, tmp_path / "reference")
    packs.train_pack(run, reference, tmp_path / "state" / "pack-ref")

    save = packs.PackTrainer._save_state

    def save_then_stop(self, epoch):
        save(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(packs.PackTrainer, "_save_state", save_then_stop)
    plans = _plans(run, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        packs.train_pack(run, plans, tmp_path / "state" / "pack-resumed")
    assert all(len(layout.load_member(d).results) == 2 for _, _, d in plans)  # epochs 0 and 1
    assert (tmp_path / "state" / "pack-resumed" / "epoch-0001" / packs.STATE_INFO).is_file()
    monkeypatch.setattr(packs.PackTrainer, "_save_state", save)
    packs.train_pack(run, _plans(run, tmp_path / "resumed"), tmp_path / "state" / "pack-resumed")
    for (_, _, resumed), (_, _, straight) in zip(plans, reference, strict=True):
        assert layout.load_member(resumed).is_complete()
        assert _max_difference(_weights(resumed, 2), _weights(straight, 2)) == 0
        assert [r["test_loss"] for r in layout.load_member(resumed).results] == \
            [r["test_loss"] for r in layout.load_member(straight).results]


def _pack_trainer(run: MemberRun, folder: Path, members=MEMBERS, mode: str = "vmap") -> packs.PackTrainer:
    pack = []
    for name, args, member_dir in _plans(run, folder, members):
        args.training.output_dir = str(folder / "state")
        pack.append(packs.PackMember(name, args, member_dir, run.prepare_member(args, member_dir)))
    return packs.PackTrainer(run, pack, folder / "state" / "pack-eval", mode)


def _states_equal(a: dict, b: dict) -> bool:
    return a["python"] == b["python"] and torch.equal(a["cpu"], b["cpu"]) and \
        all(np.array_equal(x, y) for x, y in zip(a["numpy"], b["numpy"]))


def _language_run(root: Path, kind: str, config: str, **overrides) -> MemberRun:
    import yaml

    base = yaml.safe_load((ROOT / "recipes" / "configs" / "language" / config).read_text())
    base.update({"output_dir": str(root), "disable_tqdm": True, "num_train_epochs": 1, "checkpoint_every": 1,
                 "max_train_samples": 64, "report_to": "none", **overrides})
    return MemberRun(kinds.get(kind), Arguments(*parse_config(base, defaults=kind_defaults(kinds.get(kind)))), base)


EVALUATED = {  # what the evaluation test packs: a ViT (supervised or SimCLR), a GPT-2 LM, a BERT masked LM
    "supervised": lambda root: _run(root, max_eval_samples=80, per_device_eval_batch_size=32),
    "contrastive": lambda root: _run(root, max_eval_samples=80, per_device_eval_batch_size=32, mode="contrastive",
                                     temperature=0.1, projection_dim=64),
    "causal-lm": lambda root: _language_run(root, "lm-pretrain", "pretrain_tiny.yaml", max_eval_samples=40,
                                            per_device_eval_batch_size=16),
    "llama": lambda root: _language_run(root, "lm-pretrain", "pretrain_llama_tiny.yaml", max_eval_samples=40,
                                        per_device_eval_batch_size=16),
    "masked-lm": lambda root: _language_run(root, "mlm-pretrain", "pretrain_mlm_tiny.yaml", max_eval_samples=40,
                                            per_device_eval_batch_size=16),
}


@pytest.mark.parametrize("what,vmapped", [
    ("supervised", True), ("contrastive", True), ("supervised", False),
    pytest.param("causal-lm", True, marks=pytest.mark.slow), pytest.param("llama", True, marks=pytest.mark.slow),
    pytest.param("masked-lm", False, marks=pytest.mark.slow)])
def test_a_pack_evaluates_its_members_at_once_as_each_alone(tmp_path, monkeypatch, what, vmapped):
    """One pass over the test batches (the members' forwards vmapped, as on a GPU, or member after member, as on a
    CPU) gives each member the metrics `Trainer.evaluate` gives it, and its random stream makes the draws that
    evaluation makes alone (SimCLR's seeded evaluation views and BERT's seeded masks included)."""
    run = EVALUATED[what](tmp_path)  # a few evaluation batches, the last one short
    trainer = _pack_trainer(run, tmp_path, MEMBERS + [{"seed": 3, "learning_rate": 2e-3}])
    trainer.vmap_eval = vmapped
    trainer.stacked.eval()
    with torch.no_grad():  # members that differ more than their initialisations
        for k, param in enumerate(p for p in trainer.stacked.stacked if p.requires_grad):
            param.add_(torch.randn_like(param) * 0.05 * (k % 3))
    with isolated_rng():
        batches = len(trainer.pack[0].trainer.get_eval_dataloader())
    assert batches >= 3
    before = [copy.deepcopy(m.lane.state) for m in trainer.pack]
    passes = []
    eval_losses = packs.StackedMembers.eval_losses
    monkeypatch.setattr(packs.StackedMembers, "eval_losses", lambda self, *a: passes.append(1) or eval_losses(self, *a))
    monkeypatch.setattr(ZooTrainer, "evaluate", lambda *a, **k: pytest.fail("evaluated member by member"))
    batched = trainer._evaluate_members(trainer.pack, None, "eval", on_lanes=True)
    monkeypatch.undo()
    assert len(passes) == (batches if vmapped else 0)  # vmapped: one forward per batch for the whole pack
    after = [copy.deepcopy(m.lane.state) for m in trainer.pack]
    for member, state, mine, lane_after in zip(trainer.pack, before, batched, after, strict=True):
        member.lane.state = state
        with member.lane.active():
            alone = member.trainer.evaluate()
        assert _states_equal(member.lane.state, lane_after)  # the same draws as its own evaluation
        assert mine["eval_loss"] == pytest.approx(alone["eval_loss"], abs=1e-5)
        assert mine["eval_acc"] == alone["eval_acc"]
    assert len({round(m["eval_loss"], 4) for m in batched}) == 3  # three members, three results
    assert trainer._evaluate_members(trainer.pack, None, "eval", on_lanes=True) == batched  # repeatable


def test_packs_group_members_of_equal_shapes_and_schedules():
    members = [{"seed": 1, "head": "mlp"}, {"seed": 2, "head": "mlp"}, {"seed": 1, "head": "linear"},
               {"seed": 3, "head": "mlp", "learning_rate": 0.1}, {"seed": 4, "head": "mlp"}]
    groups = packs.group_packs(members, lambda m: m, 3)
    assert [[m["seed"] for m in g] for g in groups] == [[1, 2, 3], [4], [1]]


def test_packed_sgd_matches_torch_sgd():
    """The packed optimizer's SGD (momentum, coupled weight decay) is torch's, member by member."""
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3) for _ in range(3)]
    references = [torch.nn.Linear(4, 3) for _ in range(3)]
    for model, ref in zip(models, references, strict=True):
        ref.load_state_dict(model.state_dict())
    stacked = packs.StackedMembers(models, "loop")
    lrs, wds, momenta = [0.1, 0.05, 0.2], [0.0, 0.01, 0.1], [0.9, 0.0, 0.5]
    optimizer = packs.PackedOptimizer(stacked, "sgd", lrs, wds, {"weight", "bias"}, momenta=momenta)
    torch_optimizers = [torch.optim.SGD(r.parameters(), lr=lr, weight_decay=wd, momentum=m)
                        for r, lr, wd, m in zip(references, lrs, wds, momenta, strict=True)]
    for _ in range(3):
        x = torch.randn(5, 4)
        for model, ref, opt in zip(models, references, torch_optimizers, strict=True):
            model(x).square().sum().backward()
            ref(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
        stacked.gather_loop_grads()
        optimizer.step(1.0)
        optimizer.zero_grad()
    for model, ref in zip(models, references, strict=True):
        assert torch.allclose(model.weight, ref.weight, atol=1e-6) and torch.allclose(model.bias, ref.bias, atol=1e-6)


class _TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.unused = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3), torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


def test_packed_adamw_with_clipping_matches_torch():
    """The packed AdamW on the flat storage (decoupled decay on the decayed weights only, per-member clipping) is
    torch's AdamW after `clip_grad_norm_`, member by member; a weight without gradient is left alone, as in torch."""
    torch.manual_seed(0)
    models = [_TwoLayers() for _ in range(3)]
    references = [_TwoLayers() for _ in range(3)]
    for model, ref in zip(models, references, strict=True):
        ref.load_state_dict(model.state_dict())
    unused_before = [m.unused.weight.detach().clone() for m in models]
    stacked = packs.StackedMembers(models, "vmap")
    assert len(stacked.flats) == 1 and stacked.flats[0][0].shape[0] == 3
    lrs, wds = [1e-2, 3e-2, 1e-3], [0.0, 0.1, 0.5]
    decay = {"first.weight", "second.weight", "unused.weight"}
    optimizer = packs.PackedOptimizer(stacked, "adamw", lrs, wds, decay, max_grad_norm=0.5)
    torch_optimizers = [torch.optim.AdamW([{"params": [r.first.weight, r.second.weight, r.unused.weight],
                                            "weight_decay": wd},
                                           {"params": [r.first.bias, r.second.bias, r.unused.bias],
                                            "weight_decay": 0.0}], lr=lr, foreach=False)
                        for r, lr, wd in zip(references, lrs, wds, strict=True)]
    from torch.func import functional_call, vmap

    for _ in range(4):
        x = torch.randn(5, 4)
        params = {n: stacked.param(n) for n in stacked.names}
        losses = vmap(lambda p, x: functional_call(stacked.base, p, (x,)).square().sum(), in_dims=(0, None))(params, x)
        losses.sum().backward()
        optimizer.clip()
        optimizer.step(1.0)
        optimizer.zero_grad()
        for ref, opt in zip(references, torch_optimizers, strict=True):
            ref(x).square().sum().backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
            opt.step()
            opt.zero_grad()
    for model, ref, before in zip(models, references, unused_before, strict=True):
        for (name, mine), theirs in zip(model.named_parameters(), ref.parameters(), strict=True):
            assert torch.allclose(mine, theirs, atol=1e-6), name
        assert torch.equal(model.unused.weight, before)  # no gradient: no decay, no step
    assert stacked.param("first.weight").grad._base is optimizer.grads[0]  # gradients land in the flat storage


def test_children_of_a_frozen_parent_compute_its_encoder_once(tmp_path, monkeypatch):
    """With `freeze_encoder`, children of one parent share the encoder weights (not copied K times), and when they
    see the same batch the encoder runs once for the pack: only the heads are batched."""
    import yaml

    parent_run = _run(tmp_path / "parent", num_train_epochs=1)
    (_, parent_args, parent_dir), = _plans(parent_run, tmp_path / "parent", MEMBERS[:1])
    parent_run.train_member(parent_args, parent_dir, tmp_path / "parent")
    base = yaml.safe_load((ROOT / "recipes" / "configs" / "vision" / "finetune_tiny.yaml").read_text())
    base.update({"output_dir": str(tmp_path), "disable_tqdm": True, "num_train_epochs": 1, "checkpoint_every": 1,
                 "max_train_samples": 128, "max_eval_samples": 32, "freeze_encoder": True, "report_to": "none",
                 "pretrained": str(parent_dir / layout.checkpoint_name(1))})
    kind = kinds.get("vit-finetune")
    run = MemberRun(kind, Arguments(*parse_config(base, defaults=kind_defaults(kind))), base)
    plans = _plans(run, tmp_path / "children", [{"learning_rate": 1e-3}, {"learning_rate": 3e-3}])

    batched_encoder_outputs = []
    losses = packs.StackedMembers.losses

    def watch(self, objective, prepared, common_inputs=False, lanes=None):
        from torch._C._functorch import is_batchedtensor

        if not batched_encoder_outputs:
            assert all(name.startswith("classifier.") for name in self.names) and self.shared
            self.base.vit.register_forward_hook(
                lambda module, args, output: batched_encoder_outputs.append(is_batchedtensor(output[0])))
        return losses(self, objective, prepared, common_inputs, lanes)

    monkeypatch.setattr(packs.StackedMembers, "losses", watch)
    packs.train_pack(run, plans, tmp_path / "state" / "pack-frozen", "vmap")
    assert batched_encoder_outputs and not any(batched_encoder_outputs)  # one encoder pass per batch
    parent_weights = _weights(parent_dir, 1)
    for _, args, member_dir in plans:
        weights = _weights(member_dir, 1)
        assert all(torch.equal(weights[k], parent_weights[k]) for k in weights if k.startswith("vit."))
        solo_dir = tmp_path / "solo" / member_dir.name
        run.train_member(args, solo_dir, tmp_path / "solo")
        assert _max_difference(weights, _weights(solo_dir, 1)) < 0.25 * 3e-3


@pytest.mark.slow
def test_members_with_dropout_keep_their_own_dropout_masks(tmp_path):
    """`auto` packs members with dropout member after member, each forward on its own lane: the dropout masks,
    and so the weights, are the ones each member gets alone. Under vmap the masks come from one stream."""
    dropout = {"hidden_dropout": 0.2, "attention_dropout": 0.1}
    solo_root = tmp_path / "solo"
    run = _run(solo_root, **dropout)
    for _, args, member_dir in _plans(run, solo_root):
        run.train_member(args, member_dir, solo_root)
    differences = {}
    for mode in ("auto", "vmap"):
        run = _run(tmp_path / mode, **dropout)
        plans = _plans(run, tmp_path / mode)
        packs.train_pack(run, plans, tmp_path / "state" / f"pack-{mode}", mode)
        differences[mode] = max(_max_difference(_weights(d, 2), _weights(solo_root / name, 2)) for name, _, d in plans)
        for name, _, member_dir in plans:
            record = layout.load_member(member_dir).config["provenance"]["pack"]
            assert record["mode"] == ("loop" if mode == "auto" else "vmap")
            if mode == "auto":
                for mine, theirs in zip(layout.load_member(member_dir).results,
                                        layout.load_member(solo_root / name).results, strict=True):
                    assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
    # the same masks: rounding only, which Adam turns into steps of up to the learning rate (as without dropout);
    # measured 1.2e-4 against 1.2e-2 under vmap
    assert differences["auto"] < 0.25 * 3e-3
    assert differences["vmap"] > 10 * differences["auto"]  # other masks: other weights
