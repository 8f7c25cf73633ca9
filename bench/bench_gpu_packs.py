"""Step throughput of a pack of K ViT-tiny members against the same members one by one (a one-command GPU check).

    python bench/bench_gpu_packs.py                 # GPU: ViT-tiny (hidden 192, 12 layers, 32 px), K = 32, batch 256
    python bench/bench_gpu_packs.py --cpu --k 4 --batch 64 --layers 2   # a quick run on a CPU

Everything runs in one process on synthetic device tensors (nothing downloaded), after warm-up steps, timed with
device synchronisation. Rows, in images per second summed over members:
- **one by one**: one stock `ViTForImageClassification` member, the supervised objective (augmentation, mixing,
  label smoothing), AdamW, gradient clipping: the step each member takes when it trains alone;
- **pack**: K members through `zoo.packs` as `PackTrainer` steps them: each member's batch prepared on its own
  random lane, one vmapped forward and backward over the stacked weights, the packed AdamW with per-member clipping;
  also `loop` (member after member on the stacked storage);
- **ceiling**: the stock model alone at batch K x batch (what one big model does with the same number of images);
- **evaluation**: the K members' forward on one test batch, member after member against one vmapped pass (what a
  pack's epoch-end evaluation runs).
The headline is the ratio pack / one by one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo import packs  # noqa: E402
from zoo.training import ImageClassification  # noqa: E402


def vit(args, seed: int, device):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=args.hidden,
                       num_hidden_layers=args.layers, num_attention_heads=3, intermediate_size=4 * args.hidden,
                       num_labels=100, attn_implementation="sdpa")
    return ViTForImageClassification(config).to(device)


def objective():
    zoo = SimpleNamespace(augment=True, crop_scale_min=0.6, hflip=True, random_erasing=0.25, label_smoothing=0.1,
                          mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, mix_switch_prob=0.5)
    return ImageClassification(zoo, 32, 100, 0.5, 0.25)


def timed(step, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def batch(args, device, rows: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randint(0, 256, (rows, 3, 32, 32), dtype=torch.uint8, device=device),
            "labels": torch.randint(0, 100, (rows,), device=device)}


def one_by_one(args, device) -> float:
    model, loss_of = vit(args, 0, device), objective()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=device.type == "cuda")
    data = batch(args, device, args.batch)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, _, _ = loss_of.training_loss(model, data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return args.batch / timed(step, args.steps, args.warmup, device)


def ceiling(args, device) -> float:
    model = vit(args, 0, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    rows = args.batch * args.k
    data = batch(args, device, rows)
    pixels = data["pixel_values"].float() / 255

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(pixel_values=pixels).logits
        torch.nn.functional.cross_entropy(logits.float(), data["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return rows / timed(step, args.steps, args.warmup, device)


def pack(args, device, mode: str) -> float:
    models = [vit(args, seed, device) for seed in range(args.k)]
    lanes = [packs.Lane() for _ in range(args.k)]
    stacked = packs.StackedMembers(models, mode)
    decay = {n for n in stacked.names if not n.endswith("bias") and "layernorm" not in n}
    optimizer = packs.PackedOptimizer(stacked, "adamw", [1e-3 * (1 + i % 4) for i in range(args.k)],
                                      [0.05] * args.k, decay, max_grad_norm=1.0)
    objectives = [objective() for _ in range(args.k)]
    data = [batch(args, device, args.batch) for _ in range(args.k)]

    def step():
        prepared = []
        for lane, loss_of, inputs in zip(lanes, objectives, data, strict=True):
            with lane.active():
                prepared.append(loss_of.prepare(inputs))
        inputs = {key: torch.stack([p[key] for p in prepared]) for key in prepared[0]}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, _, _ = stacked.losses(objectives[0], inputs)
        loss.sum().backward()
        stacked.gather_loop_grads()
        optimizer.clip()
        optimizer.step(1.0)
        optimizer.zero_grad()

    return args.batch * args.k / timed(step, args.steps, args.warmup, device)


def evaluation(args, device) -> tuple[float, float]:
    """Evaluation of the K members on one test batch they all see: one by one (each member's forward, as
    `Trainer.evaluate` runs it per member) against one vmapped forward of the pack (`StackedMembers.eval_losses`,
    what a pack's epoch-end evaluation runs). Images per second summed over members."""
    models = [vit(args, seed, device).eval() for seed in range(args.k)]
    stacked = packs.StackedMembers(models, "vmap").eval()
    loss_of = objective()
    data = batch(args, device, args.eval_batch)

    def alone():
        for model in models:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss_of.eval_step(model, data)

    def packed():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            stacked.eval_losses(loss_of, loss_of.eval_prepare(data))

    with torch.no_grad():
        rows = args.eval_batch * args.k
        return rows / timed(alone, args.steps, args.warmup, device), rows / timed(packed, args.steps, args.warmup,
                                                                                  device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--modes", default="vmap,loop")
    parser.add_argument("--eval-batch", type=int, default=1024, help="rows of the evaluation rows' test batch")
    args = parser.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    args.bf16 = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name()}, bf16 autocast")
    else:
        print(f"device: CPU, {torch.get_num_threads()} threads")
    print(f"ViT-tiny-like: hidden {args.hidden}, {args.layers} layers, 32 px; K = {args.k}, "
          f"batch {args.batch} per member")
    alone = one_by_one(args, device)
    print(f"one by one          {alone:10.0f} img/s")
    for mode in args.modes.split(","):
        packed = pack(args, device, mode)
        print(f"pack ({mode:4s})         {packed:10.0f} img/s   {packed / alone:5.2f}x one by one")
    print(f"ceiling (batch {args.batch * args.k}) {ceiling(args, device):10.0f} img/s (stock model, plain CE)")
    eval_alone, eval_packed = evaluation(args, device)
    print(f"evaluation, one by one {eval_alone:7.0f} img/s; pack (vmap) {eval_packed:10.0f} img/s   "
          f"{eval_packed / eval_alone:5.2f}x  (test batch {args.eval_batch}, summed over members)")


if __name__ == "__main__":
    main()
