"""One-command throughput benchmark of zoo members against the hardware ceiling, all rows in one run.

    python bench/bench_gpu.py                 # one GPU: ViT-S/16 224 px supervised, SimCLR, GPT-2 124M (<= 6 min)
    python bench/bench_gpu.py --cpu           # the tiny configs on the CPU
    python bench/bench_gpu.py --cpu --only vit,gpt2 --repeats 3

For each workload it measures, after warm-up steps, in the same process and on the same data:
- ceiling: the stock model with its own loss on synthetic device tensors (eager, and compiled on a GPU);
- objective: the recipe's objective (augmentation, mixup/cutmix, SimCLR views, chunked LM loss) on device tensors;
- plain: a best-practice hand-written loop (the same model, data on the device, objective, optimiser, schedule,
  clipping) and `ZooTrainer`: the whole recipe path; on a GPU both with `torch_compile` off and on.
It prints samples/s (img/s, or tok/s for GPT-2), MFU against the card's dense bf16 peak (GPU only) and the ratios
ZooTrainer / plain and compiled / eager. Nothing is downloaded: images are the embedded MNIST set resized to the
model's size, text is the embedded BBC corpus with a byte-level BPE trained on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402
from transformers import TrainerCallback, get_scheduler  # noqa: E402

from zoo.arguments import parse_config  # noqa: E402
from zoo.models import stock_model  # noqa: E402
from zoo.runs import Arguments, MemberRun  # noqa: E402
from zoo.training import unwrap  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
# dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment
PEAKS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}

# seconds a compiled GPU row may take (compile + timed steps): such a row starts only when they are left
ROW_SECONDS_COMPILED = 60

# workload -> (member kind, CPU config, GPU config, overrides on GPU)
WORKLOADS = {
    "vit": ("vit-pretrain", "vision/pretrain_supervised_tiny.yaml", "vision/pretrain_supervised_vit_s16.yaml",
            {"dataset": "embedded:mnist5k", "test_split": None, "max_train_samples": 2048, "max_eval_samples": 256}),
    "simclr": ("vit-pretrain", "vision/pretrain_contrastive_tiny.yaml", "vision/pretrain_contrastive_vit_s16.yaml",
               {"dataset": "embedded:mnist5k", "test_split": None, "max_train_samples": 2048,
                "max_eval_samples": 256}),
    "gpt2": ("lm-pretrain", "language/pretrain_tiny.yaml", "language/pretrain_gpt2_124m.yaml",
             {"dataset": "embedded:bbcnews", "tokenizer_name": None, "vocab_size": 50257, "max_eval_samples": 16,
              "test_fraction": 0.05, "validation_fraction": 0.05, "preprocessing_num_workers": None,
              "per_device_train_batch_size": 32, "gradient_accumulation_steps": 1}),
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, tflops in PEAKS.items():
        if fragment in name:
            return tflops * 1e12
    return None


# the clock of the timed rows: wall time on a GPU; on a shared CPU, this process's CPU time (other processes' load
# then slows both sides alike instead of whichever row it happens to hit)
CLOCK = time.perf_counter


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- setup


def make_run(workload: str, cpu: bool, steps: int, compile_model: bool, workdir: str, bf16: bool | None = None):
    kind, cpu_config, gpu_config, gpu_overrides = WORKLOADS[workload]
    config = yaml.safe_load((CONFIGS / (cpu_config if cpu else gpu_config)).read_text())
    if not cpu:
        config.update(gpu_overrides)
    config.pop("num_train_epochs", None)
    config.update(output_dir=workdir, max_steps=steps, eval_strategy="no", save_strategy="no",
                  logging_strategy="no", disable_tqdm=True, use_cpu=cpu,
                  bf16=not cpu if bf16 is None else bf16, torch_compile=compile_model,
                  dataloader_num_workers=0, dataloader_drop_last=True, report_to="none")
    config = {k: v for k, v in config.items() if v is not None}
    args = Arguments(*parse_config(config))
    return MemberRun(kind, args, config), args


def flops_per_sample(model: torch.nn.Module, tokens: int) -> float:
    """6 x (matmul parameters) x tokens + the attention matmuls (12 x layers x width x tokens^2), forward+backward."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    width = getattr(config, "hidden_size", None) or config.n_embd
    matmul = 0
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2 and "position" not in name and "wpe" not in name:
            matmul += parameter.numel()  # (GPT-2's tied wte counts once: as the output projection)
    return 6 * matmul * tokens + 12 * layers * width * tokens**2


class Row:
    def __init__(self, name: str, samples: float, seconds: float, unit_per_sample: int, flops: float, peak):
        self.name, self.rate = name, samples / seconds
        self.units = self.rate * unit_per_sample
        self.mfu = flops * self.rate / peak if peak else None


# ---------------------------------------------------------------- the measured loops


def timed_loop(step, batches, warmup: int, steps: int, device) -> float:
    """Seconds for `steps` steps after `warmup` steps (synchronised at both ends)."""
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    start = CLOCK()
    for _ in range(steps):
        step(next(batches))
    sync(device)
    return CLOCK() - start


def optimizer_for(model, args, device):
    fused = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=args.training.learning_rate,
                             weight_decay=args.training.weight_decay, fused=fused or None)


def synthetic_batches(run, args, device):
    """Random device tensors shaped like the recipe's batches (uint8 pixels / token ids)."""
    batch = args.training.per_device_train_batch_size
    generator = torch.Generator(device=device).manual_seed(0)
    if run.image_size:
        pixels = torch.randint(0, 256, (batch, run.channels, run.image_size, run.image_size), dtype=torch.uint8,
                               device=device, generator=generator)
        labels = torch.randint(0, max(run.data.num_labels, 1), (batch,), device=device, generator=generator)
        one = {"pixel_values": pixels, "labels": labels}
    else:
        vocab = len(run.processing_class)
        ids = torch.randint(0, vocab, (batch, args.data.block_size), device=device, generator=generator)
        one = {"input_ids": ids, "labels": ids}
    while True:
        yield one


def bench_ceiling(run, args, device, compiled: bool, warmup: int, steps: int):
    """The stock model and its own loss on synthetic device tensors: no augmentation, no data path."""
    from zoo import augment

    stock = stock_model(run.build_model(args)).to(device).train()
    optimizer = optimizer_for(stock, args, device)
    forward = torch.compile(stock) if compiled else stock
    mean, std = args.data.image_mean, args.data.image_std
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(batch):
        with amp:
            if run.image_size:
                pixels = augment.normalize(augment.to_unit(batch["pixel_values"]), mean, std)
                if hasattr(stock, "classifier"):
                    loss = forward(pixel_values=pixels, labels=batch["labels"]).loss
                else:  # a SimCLR backbone: the stock ViTModel with a stand-in loss on its features
                    loss = forward(pixel_values=pixels).last_hidden_state[:, 0].float().square().mean()
            else:
                loss = forward(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed_loop(step, synthetic_batches(run, args, device), warmup, steps, device), stock


def plain_step(model, objective, optimizer, scheduler, device, max_grad_norm):
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(batch):
        with amp:
            loss, _, _ = objective.training_loss(model, batch)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_objective(run, args, device, compiled: bool, warmup: int, steps: int):
    """The recipe's objective (augmentation, mixing, views, LM loss) on synthetic device tensors."""
    model = run.build_model(args).to(device).train()
    forward = torch.compile(model) if compiled else model
    step = plain_step(forward, run.objective(args), optimizer_for(model, args, device), None, device, 0.0)
    return timed_loop(step, synthetic_batches(run, args, device), warmup, steps, device)


def device_epochs(run, args, device):
    """A best-practice loader: the whole training split as tensors on the device, a fresh permutation per epoch."""
    from zoo.data.device import tensor_batches

    data = tensor_batches(run.data.splits["train"]).to(device)
    batch = args.training.per_device_train_batch_size
    while True:
        order = torch.randperm(len(data), device=device)
        for start in range(0, len(data) - batch + 1, batch):
            yield {k: v[order[start : start + batch]] for k, v in data.columns.items()}


def bench_plain(run, args, device, compiled: bool, warmup: int, steps: int):
    model = run.build_model(args).to(device).train()
    forward = torch.compile(model) if compiled else model
    optimizer = optimizer_for(model, args, device)
    training = args.training
    scheduler = get_scheduler(training.lr_scheduler_type, optimizer, num_warmup_steps=training.warmup_steps,
                              num_training_steps=warmup + steps)
    step = plain_step(forward, run.objective(args), optimizer, scheduler, device, training.max_grad_norm)
    return timed_loop(step, device_epochs(run, args, device), warmup, steps, device)


class _StepClock(TrainerCallback):
    def __init__(self, warmup: int, device):
        self.warmup, self.device, self.start = warmup, device, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            sync(self.device)
            self.start = CLOCK()


def bench_trainer(run, args, device, warmup: int, steps: int):
    trainer = run.trainer(args, None)
    clock = _StepClock(warmup, device)
    trainer.add_callback(clock)
    trainer.train()
    sync(device)
    return CLOCK() - clock.start


# ---------------------------------------------------------------- driver


def measure(workload: str, cpu: bool, warmup: int, steps: int, rows: list[str], budget_end: float,
            describe: bool = True):
    device = torch.device("cpu" if cpu else "cuda")
    peak = peak_flops(device)
    results: dict[str, Row] = {}
    with tempfile.TemporaryDirectory() as workdir:
        run, args = make_run(workload, cpu, warmup + steps, False, workdir)
        batch = args.training.per_device_train_batch_size
        patches = (args.model.image_size // args.model.patch_size) ** 2
        tokens = patches + 1 if run.image_size else args.data.block_size
        unit = args.data.block_size if not run.image_size else 1
        views = 2 if workload == "simclr" else 1
        size = f"vocabulary {len(run.processing_class)}, block {args.data.block_size}" if not run.image_size else \
            f"{args.model.image_size} px, patch {args.model.patch_size}"
        if describe:
            print(f"{workload}: {args.model.hidden_size} wide, {args.model.num_hidden_layers} layers, {size}, batch "
                  f"{batch}, {len(run.data.splits['train'])} training samples", flush=True)
        flops = None
        for name in rows:
            compiled = name.endswith("compiled")
            if time.time() > budget_end - (ROW_SECONDS_COMPILED if compiled and not cpu else 0):
                print(f"  {workload} {name}: skipped (time budget)", flush=True)
                continue
            run_c, args_c = (make_run(workload, cpu, warmup + steps, True, workdir) if compiled and
                             name.startswith("trainer") else (run, args))
            if name.startswith("ceiling"):
                seconds, stock = bench_ceiling(run, args, device, compiled, warmup, steps)
                flops = flops_per_sample(stock, tokens)
            elif name.startswith("objective"):
                seconds = bench_objective(run, args, device, compiled, warmup, steps)
            elif name.startswith("plain"):
                seconds = bench_plain(run, args, device, compiled, warmup, steps)
            else:
                seconds = bench_trainer(run_c, args_c, device, warmup, steps)
            if flops is None:
                flops = flops_per_sample(unwrap(run.build_model(args)), tokens)
            # SimCLR rows count augmented views (two per image); its ceiling runs the backbone on one view per image
            row_views = 1 if name.startswith("ceiling") else views
            results[name] = Row(name, steps * batch * row_views, seconds, unit, flops, peak)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the tiny configs on the CPU")
    parser.add_argument("--only", default="vit,gpt2,simclr", help="comma-separated: vit, gpt2, simclr")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing (default 15 GPU, 5 CPU)")
    parser.add_argument("--compile", action="store_true", help="--cpu: also the compiled rows")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30 GPU, 40 CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="repeat each row, report the median "
                                                                  "(default 1 GPU, 5 CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 with --cpu)")
    parser.add_argument("--wall", action="store_true", help="--cpu: time by the wall clock, not CPU time")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds after which rows are skipped")
    opts = parser.parse_args()
    start = time.time()
    cpu = opts.cpu or not torch.cuda.is_available()
    warmup = opts.warmup if opts.warmup is not None else (5 if cpu else 15)
    steps = opts.steps or (40 if cpu else 30)
    repeats = opts.repeats or (5 if cpu else 1)
    global CLOCK
    if cpu:
        torch.set_num_threads(opts.threads or 1)
        CLOCK = time.perf_counter if opts.wall else time.process_time
    elif opts.threads:
        torch.set_num_threads(opts.threads)
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device_name = "CPU" if cpu else torch.cuda.get_device_name(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {device_name}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"load {load:.1f}; clock {CLOCK.__name__}; warmup {warmup}, timed steps {steps}, repeats {repeats}",
          flush=True)
    if cpu:  # compile rows on the CPU only when asked (compiling takes minutes on a few cores)
        rows = ["ceiling eager", "objective eager", "plain eager", "trainer eager"]
        if opts.compile:
            rows += ["ceiling compiled", "objective compiled", "plain compiled", "trainer compiled"]
    else:
        rows = ["ceiling eager", "ceiling compiled", "objective compiled", "plain compiled", "trainer compiled",
                "trainer eager"]
    budget_end = start + opts.budget
    for workload in [w.strip() for w in opts.only.split(",") if w.strip()]:
        samples: dict[str, list[Row]] = {}
        for repeat in range(repeats):
            order = rows if repeat % 2 == 0 else list(reversed(rows))  # alternate the order against drift
            for name, row in measure(workload, cpu, warmup, steps, order, budget_end,
                                             describe=repeat == 0).items():
                samples.setdefault(name, []).append(row)
        report(workload, samples, cpu)
        print(f"  (elapsed {time.time() - start:.0f} s)", flush=True)


def report(workload: str, samples: dict[str, list], cpu: bool) -> None:
    unit = "tok/s" if workload == "gpt2" else ("views/s" if workload == "simclr" else "img/s")
    median = {name: statistics.median(r.units for r in rows) for name, rows in samples.items()}
    print(f"{workload} (median of {len(next(iter(samples.values())))}):")
    for name, rows in samples.items():
        mfu = rows[0].mfu
        mfu_text = "" if mfu is None else f"  MFU {100 * statistics.median(r.mfu for r in rows):5.1f}%"
        rate = median[name]
        spread = "" if len(rows) < 2 else f"  (runs: {', '.join(f'{r.units:.0f}' for r in rows)})"
        print(f"  {name:20s} {rate:12,.0f} {unit}{mfu_text}{spread}")
    ratios = []
    for trainer, plain in (("trainer eager", "plain eager"), ("trainer compiled", "plain compiled")):
        if trainer in median and plain in median:
            per_run = [t.units / p.units for t, p in zip(samples[trainer], samples[plain])]
            ratios.append(f"ZooTrainer/plain ({trainer.split()[1]}) {statistics.median(per_run):.3f}"
                          + (f" [{', '.join(f'{r:.2f}' for r in per_run)}]" if len(per_run) > 1 else ""))
    for a, b in (("ceiling compiled", "ceiling eager"), ("trainer compiled", "trainer eager")):
        if a in median and b in median:
            ratios.append(f"{a.split()[0]} compiled/eager {median[a] / median[b]:.3f}")
    for mode in ("eager", "compiled"):
        if f"objective {mode}" in median and f"ceiling {mode}" in median:
            ratios.append(f"objective/ceiling ({mode}) {median[f'objective {mode}'] / median[f'ceiling {mode}']:.3f}")
    print("  " + "; ".join(ratios), flush=True)


if __name__ == "__main__":
    main()
