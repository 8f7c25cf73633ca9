"""Populations: a zoo spec (grids of generating factors) expanded into members and trained with Ray Tune.

Each stage of a modality is one `Trainer.hyperparameter_search(backend="ray")` call whose search space is a
`tune.grid_search` over the stage's planned members (a member = one point of the grid or of a group); finetuning
runs one search per complete pretrained parent. Members land in the zoo layout of `zoo.layout`; complete ones are
skipped, incomplete ones resume from their Trainer state, failed ones are recorded and retried on the next run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.arguments import ConfigError, field_names, load_yaml, parse_config

SPEC_KEYS = {"name", "description", "license", "resources", "vision", "language"}
STAGE_KEYS = {"recipe", "config", "fixed", "grid", "groups", "from_checkpoint", "ranges", "optuna"}
GROUP_KEYS = {"fixed", "grid"}
DEVICE_KEYS = {"bf16", "fp16", "tf32", "bf16_full_eval", "fp16_full_eval", "torch_compile", "use_cpu"}
RECIPES = {"vision": {"pretraining": "vit-pretrain", "finetuning": "vit-finetune"},
           "language": {"pretraining": "lm-pretrain", "finetuning": "lm-finetune"}}


@dataclass
class PlannedMember:
    modality: str
    stage: str
    kind: str
    name: str
    params: dict[str, Any]  # config values on top of the stage's base config
    parent: str | None = None  # finetuning: the pretrained member's name
    epochs: int = 0

    def relpath(self) -> str:
        return layout.zoo_member_dir("", self.modality, self.stage, self.name, self.parent).as_posix()


@dataclass
class StagePlan:
    modality: str
    stage: str
    kind: str
    base: dict[str, Any]  # base config file + fixed values
    points: list[tuple[dict[str, Any], list[str]]]  # per member: its values (group fixed + grid), its grid keys
    from_checkpoint: str | int = "last"
    members: list[PlannedMember] = field(default_factory=list)
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)  # Optuna: key -> {low, high, log} | {choices}
    optuna_trials: int = 0  # members sampled from `ranges` (0: use the grid)

    def sample(self, trial) -> dict[str, Any]:
        """An Optuna trial's values for this stage's ranges."""
        params: dict[str, Any] = {}
        for key, spec in self.ranges.items():
            if "choices" in spec:
                params[key] = trial.suggest_categorical(key, spec["choices"])
            elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
                params[key] = trial.suggest_int(key, spec["low"], spec["high"])
            else:
                params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                                  log=bool(spec.get("log")))
        return params


# ---------------------------------------------------------------- the spec


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _grid_points(grid: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}.grid must map config keys to lists of values")
    keys = list(grid)
    values = []
    for key in keys:
        options = grid[key] if isinstance(grid[key], list) else [grid[key]]
        if not options:
            raise ConfigError(f"{where}.grid.{key} is an empty list")
        values.append(options)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else [{}]


def _check_config_keys(config: dict[str, Any], where: str) -> None:
    known = field_names()
    for key in config:
        if key not in known:
            raise ConfigError(f"{where}: {key!r} is not a config key the recipe accepts")


def load_spec(path: str | Path) -> tuple[dict[str, Any], list[StagePlan]]:
    """Read and check a zoo spec; expand every stage into its grid points (finetuning not yet per parent)."""
    path = Path(path)
    spec = load_yaml(path)
    for key in spec:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{path}: unknown spec key {key!r} (known: {', '.join(sorted(SPEC_KEYS))})")
    if not any(spec.get(m) for m in ("vision", "language")):
        raise ConfigError(f"{path}: the spec names no modality (vision or language)")
    stages: list[StagePlan] = []
    for modality in ("vision", "language"):
        section = spec.get(modality) or {}
        for stage in section:
            if stage not in ("pretraining", "finetuning"):
                raise ConfigError(f"{path}: {modality}.{stage} is not a stage (pretraining, finetuning)")
        if "finetuning" in section and "pretraining" not in section:
            raise ConfigError(f"{path}: {modality}.finetuning needs a {modality}.pretraining stage")
        for stage in ("pretraining", "finetuning"):
            if stage in section:
                stages.append(_load_stage(path, modality, stage, section[stage] or {}))
    return spec, stages


def _load_stage(path: Path, modality: str, stage: str, section: dict[str, Any]) -> StagePlan:
    where = f"{path}: {modality}.{stage}"
    for key in section:
        if key not in STAGE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(STAGE_KEYS))})")
    kind = section.get("recipe", RECIPES[modality][stage])
    if kind != RECIPES[modality][stage]:
        raise ConfigError(f"{where}.recipe must be {RECIPES[modality][stage]!r}, got {kind!r}")
    base: dict[str, Any] = {}
    if section.get("config"):
        config_path = Path(section["config"])
        if not config_path.is_absolute():
            candidates = [path.parent / config_path, Path.cwd() / config_path]
            config_path = next((c for c in candidates if c.is_file()), candidates[0])
        base = load_yaml(config_path)
        _check_config_keys(base, str(config_path))
    fixed = section.get("fixed") or {}
    _check_config_keys(fixed, f"{where}.fixed")
    base.update(fixed)
    groups = section.get("groups")
    if groups is not None and "grid" in section:
        raise ConfigError(f"{where}: give either grid or groups, not both")
    if groups is None:
        if "grid" in section:
            groups = [{"grid": section["grid"]}]
        elif section.get("ranges"):
            groups = []  # members are sampled from the ranges, none planned
        else:
            raise ConfigError(f"{where}: needs a grid, groups, or ranges (with --optuna)")
    if not isinstance(groups, list) or (not groups and not section.get("ranges")):
        raise ConfigError(f"{where}.groups must be a non-empty list")
    points: list[tuple[dict[str, Any], list[str]]] = []
    for number, group in enumerate(groups):
        gwhere = f"{where}.groups[{number}]" if "groups" in section else where
        for key in group:
            if key not in GROUP_KEYS:
                raise ConfigError(f"{gwhere}: unknown key {key!r} (known: fixed, grid)")
        group_fixed = group.get("fixed") or {}
        _check_config_keys(group_fixed, f"{gwhere}.fixed")
        _check_config_keys(group.get("grid") or {}, f"{gwhere}.grid")
        if "grid" in group and not group["grid"]:
            raise ConfigError(f"{gwhere}.grid is empty")
        for point in _grid_points(group.get("grid") or {}, gwhere):
            points.append(({**group_fixed, **point}, list(point)))
    ranges = section.get("ranges") or {}
    _check_config_keys(ranges, f"{where}.ranges")
    for key, spec in ranges.items():
        if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
            raise ConfigError(f"{where}.ranges.{key} needs low and high (and optional log), or choices")
        if "choices" in spec and not spec["choices"]:
            raise ConfigError(f"{where}.ranges.{key}.choices is an empty list")
    optuna = section.get("optuna") or {}
    if optuna and not ranges:
        raise ConfigError(f"{where}.optuna needs ranges to sample from")
    if set(optuna) - {"n_trials"}:
        raise ConfigError(f"{where}.optuna: unknown key {sorted(set(optuna) - {'n_trials'})[0]!r} (known: n_trials)")
    return StagePlan(modality, stage, kind, base, points, section.get("from_checkpoint", "last"),
                     ranges=ranges, optuna_trials=int(optuna.get("n_trials", 0)))


def _arguments(kind: str, base: dict[str, Any], params: dict[str, Any], grid_keys: list[str]):
    from zoo.runs import KIND_DEFAULTS, Arguments

    config = {**base, **params}
    name_factors = list(config.get("name_factors") or KIND_DEFAULTS[kind].get("name_factors") or
                        ["seed", "learning_rate", "weight_decay", "per_device_train_batch_size"])
    for key in grid_keys:  # every factor of the grid names the member (groups differ by member_prefix)
        if key not in name_factors and key not in ("member_prefix", "name_factors"):
            name_factors.append(key)
    config["name_factors"] = name_factors
    config.setdefault("output_dir", "unused")
    # precision and compilation do not name a member, and their checks need the device: leave them out here
    parsed = {k: v for k, v in config.items() if k not in DEVICE_KEYS}
    return Arguments(*parse_config(parsed, defaults=KIND_DEFAULTS[kind])), config


def plan_member(plan: StagePlan, point: dict[str, Any], grid_keys: list[str], parent: str | None) -> PlannedMember:
    from zoo.runs import member_name

    args, config = _arguments(plan.kind, plan.base, point, grid_keys)
    if plan.stage == "finetuning":
        args.zoo.pretrained = "parent"
    return PlannedMember(plan.modality, plan.stage, plan.kind, member_name(plan.kind, args),
                         {k: v for k, v in config.items() if k != "output_dir"}, parent,
                         int(args.training.num_train_epochs))


def plan_members(stages: list[StagePlan]) -> list[StagePlan]:
    """Fill every stage's `members`; finetuning stages get one member per (planned parent, grid point)."""

    by_modality: dict[str, list[PlannedMember]] = {}
    for plan in stages:
        plan.members = []
        parents = [None] if plan.stage == "pretraining" else [m.name for m in by_modality.get(plan.modality, [])]
        names: set[str] = set()
        if plan.optuna_trials:  # sampled members are known only once sampled
            continue
        for point, grid_keys in plan.points:
            first = plan_member(plan, point, grid_keys, None)
            if first.name in names:
                raise ConfigError(f"{plan.modality}.{plan.stage}: two grid points give the member name "
                                  f"{first.name!r}; add the differing key to name_factors")
            names.add(first.name)
            for parent in parents:
                plan.members.append(PlannedMember(first.modality, first.stage, first.kind, first.name, first.params,
                                                  parent, first.epochs))
        if plan.stage == "pretraining":
            by_modality[plan.modality] = plan.members
    return stages


def check_zoo_dir(zoo_dir: Path, spec: dict[str, Any]) -> None:
    existing = layout.read_zoo_file(zoo_dir)
    if existing is not None and existing["spec_hash"] != spec_hash(spec):
        raise ConfigError(f"--zoo-dir {zoo_dir} holds a zoo made from a different spec "
                          f"({existing['spec'].get('name', '?')!r}); use another folder")
    if existing is None and zoo_dir.is_dir() and any(p for p in zoo_dir.iterdir() if not p.name.startswith(".")):
        raise ConfigError(f"--zoo-dir {zoo_dir} is not empty and holds no zoo.json")


# ---------------------------------------------------------------- running with Ray Tune


def _scratch_dir(zoo_dir: Path) -> Path:
    """Ray's storage for a zoo: outside the zoo, removed once the stage is done."""
    digest = hashlib.sha256(str(zoo_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "transformer-zoo-ray" / digest


def _make_trainer_class():
    from zoo.runs import train_prepared
    from zoo.training import MemberWriter, ZooTrainer

    class PopulationTrainer(ZooTrainer):
        """A ZooTrainer whose `train(trial=...)` trains the trial's planned member into the zoo."""

        def setup_population(self, run, plans: dict[str, PlannedMember], zoo_dir: str,
                             stage: StagePlan | None = None, parent: str | None = None):
            self.run, self.plans, self.zoo_dir, self.stage_plan, self.parent = run, plans, zoo_dir, stage, parent

        def _plan(self, trial) -> PlannedMember:
            if isinstance(trial, dict):  # Ray: the grid names the member
                return self.plans[trial["member"]]
            values = self.stage_plan.sample(trial)  # Optuna: a member from the sampled values
            return plan_member(self.stage_plan, values, list(values), self.parent)

        def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
            if trial is None or not hasattr(self, "plans"):
                return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
            plan = self._plan(trial)
            zoo_dir = Path(self.zoo_dir)
            member_dir = zoo_dir / plan.relpath()
            args = self.run.args.with_params({k: v for k, v in plan.params.items()
                                              if k not in ("pretrained", "output_dir")})
            writer = self.run.prepare_member(args, member_dir, _provenance())
            args.training.output_dir = str(layout.trainer_state_dir(zoo_dir, member_dir))
            args.training.disable_tqdm = True
            self.args = args.training
            self._train_batch_size = self.args.train_batch_size
            self.create_accelerator_and_postprocess()  # a fresh worker process has no accelerator state yet
            self.model_init = lambda trial=None: self.run.build_model(args)
            self.zoo_objective = self.run.objective(args)
            self.callback_handler.remove_callback(MemberWriter)
            self.callback_handler.add_callback(writer)
            writer.trainer, self.member_writer = self, writer
            self._member_dir = str(member_dir)
            return train_prepared(self, member_dir)  # calls train() without a trial: the stock Trainer.train

        def _tune_save_checkpoint(self, checkpoint_dir: str) -> None:
            # Ray would copy the model and optimizer of every trial into its storage (GBs over a zoo); the member is
            # already in the zoo and its resumable state in .trainer_state, so Ray keeps a pointer only.
            pointer = {"member": getattr(self, "_member_dir", None)}
            layout.atomic_write_json(Path(checkpoint_dir) / "member.json", pointer)

    return PopulationTrainer


def _provenance() -> dict[str, Any]:
    """Where a trial ran: the Ray node and host (useful on a cluster)."""
    import socket

    info: dict[str, Any] = {"hostname": socket.gethostname()}
    try:
        import ray

        context = ray.get_runtime_context()
        info.update(ray_node_id=context.get_node_id(), ray_trial=context.get_actor_name())
    except Exception:  # noqa: BLE001 - outside Ray there is nothing more to say
        pass
    return info


def _population_trainer(run, plans: dict[str, PlannedMember], zoo_dir: Path, stage: StagePlan | None = None,
                        parent: str | None = None):
    args = run.args
    splits = run.data.splits
    trainer = _make_trainer_class()(
        model_init=lambda trial=None: run.build_model(args),
        args=args.training,
        train_dataset=splits["train"],
        eval_dataset=splits["test"],
        data_collator=run.collator,
        processing_class=run.processing_class if run.modality == "language" else None,
        compute_metrics=run.trainer(args, None).compute_metrics,
        objective=run.objective(args),
        train_eval_dataset=splits["train"].select(range(min(len(splits["train"]), len(splits["test"])))),
    )
    trainer.setup_population(run, plans, str(zoo_dir.resolve()), stage, parent)
    return trainer


def _objective_value(metrics: dict[str, float]) -> float:
    return float(metrics.get("eval_acc", -metrics.get("eval_loss", 0.0)))


def _run_stage(run, members: list[PlannedMember], zoo_dir: Path, resources: dict[str, float], name: str) -> None:
    """Train `members` as one Ray Tune grid search (one trial per member)."""
    from ray import tune

    plans = {m.name: m for m in members}
    trainer = _population_trainer(run, plans, zoo_dir)
    storage = _scratch_dir(zoo_dir)
    storage.mkdir(parents=True, exist_ok=True)
    try:
        trainer.hyperparameter_search(
            hp_space=lambda trial: {"member": tune.grid_search(sorted(plans))},
            backend="ray",
            n_trials=1,
            direction="maximize",
            compute_objective=_objective_value,
            resources_per_trial=resources,
            storage_path=str(storage),
            name=name,
            raise_on_failed_trial=False,
            verbose=0,
        )
    except (AttributeError, TypeError) as err:
        # every trial failed: the integration cannot pick a best run; failures are recorded per member
        if "NoneType" not in str(err):
            raise
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)


def _run_optuna(run, plan: StagePlan, parent: str | None, zoo_dir: Path, n_trials: int, name: str) -> None:
    """Sample members from the stage's ranges with Optuna (in this process), up to `n_trials` in all."""
    trainer = _population_trainer(run, {}, zoo_dir, plan, parent)
    folder = layout.zoo_stage_dir(zoo_dir, plan.modality, plan.stage, parent)
    left = n_trials - len([m for m in layout.scan_members(folder)] if folder.is_dir() else [])
    if left <= 0:
        return
    study_dir = zoo_dir / ".optuna"
    study_dir.mkdir(parents=True, exist_ok=True)
    trainer.hyperparameter_search(
        hp_space=plan.sample, backend="optuna", n_trials=left, direction="maximize",
        compute_objective=_objective_value, storage=f"sqlite:///{study_dir.resolve() / 'studies.db'}",
        study_name=name, load_if_exists=True, catch=(Exception,),
    )


class Progress:
    """A progress bar over planned epochs, refreshed from the zoo folder (works for trials on any node)."""

    def __init__(self, zoo_dir: Path, members: list[PlannedMember]):
        from tqdm.auto import tqdm

        self.zoo_dir, self.members = zoo_dir, members
        self.bar = tqdm(total=sum(m.epochs + 1 for m in members), desc="zoo", unit="epoch", dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _refresh(self) -> None:
        done = running = failed = epochs = 0
        current = ""
        for plan in self.members:
            path = self.zoo_dir / plan.relpath()
            if not layout.is_member_dir(path):
                continue
            info = layout.load_member(path)
            epochs += min(info.epochs_done, plan.epochs + 1)
            # a cheap look (no weight headers read every refresh); `zoo status` does the full check
            if info.epochs_done > plan.epochs and set(info.planned_checkpoints) <= set(info.checkpoints):
                done += 1
            elif info.error:
                failed += 1
            elif info.results:
                running += 1
                current = f"{info.name} epoch {info.epochs_done - 1}/{plan.epochs}"
        self.bar.n = epochs
        left = len(self.members) - done - running - failed
        self.bar.set_postfix_str(f"done {done} running {running} failed {failed} left {left} {current}"[:120])
        self.bar.refresh()

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self._refresh()
            except (layout.LayoutError, OSError, ValueError):
                pass

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._refresh()
        finally:
            self.bar.close()


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables off (verbose=0): the zoo shows its own progress
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)


def generate(spec_path: str | Path, zoo_dir: str | Path, ray_address: str | None = None,
             cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
             modalities: tuple[str, ...] = ("vision", "language"),
             stages_wanted: tuple[str, ...] = ("pretraining", "finetuning"),
             optuna_trials: int | None = None) -> list[layout.MemberInfo]:
    """Train every planned member that is not complete yet; return the zoo's members."""
    from zoo.runs import Arguments, MemberRun

    spec, stages = load_spec(spec_path)
    gpus = gpus_per_trial if gpus_per_trial is not None else (spec.get("resources") or {}).get("gpu", 0)
    if gpus > 1:  # a trial is one process: it would train on one GPU and leave the others idle
        where = f"--gpus-per-trial {gpus:g}" if gpus_per_trial is not None else f"resources.gpu {gpus:g}"
        raise ConfigError(f"{where}: a zoo trial trains its member in one process on at most one GPU; give 1 or a "
                          "fraction, or train members that need several GPUs one per `accelerate launch` (README)")
    for plan in stages:
        if optuna_trials and plan.ranges:
            plan.optuna_trials = optuna_trials
        if not plan.points and not plan.optuna_trials:
            raise ConfigError(f"{plan.modality}.{plan.stage} has only ranges: give --optuna N or optuna.n_trials")
    plan_members(stages)
    zoo_dir = Path(zoo_dir).resolve()  # trials run in Ray's own working folders: absolute paths only
    check_zoo_dir(zoo_dir, spec)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    planned = [{"member": m.relpath(), "stage": m.stage, "epochs": m.epochs} for plan in stages for m in plan.members]
    layout.write_zoo_file(zoo_dir, spec, spec_hash(spec), spec_path=str(Path(spec_path).resolve()), planned=planned)
    resources = dict(spec.get("resources") or {})
    resources = {"cpu": cpus_per_trial or resources.get("cpu", 1), "gpu": gpus_per_trial or resources.get("gpu", 0)}
    _init_ray(ray_address)
    for plan in stages:
        if plan.modality not in modalities or plan.stage not in stages_wanted:
            continue
        for parent, members in _stage_work(zoo_dir, plan).items():
            base = dict(plan.base)
            if parent is not None:
                parent_info = layout.load_member(zoo_dir / layout.zoo_member_dir("", plan.modality, "pretraining",
                                                                                 parent))
                epoch = plan.from_checkpoint
                epoch = parent_info.checkpoints[-1] if epoch == "last" else int(epoch)
                base["pretrained"] = str(parent_info.checkpoint_dir(epoch))
            base["output_dir"] = str(zoo_dir)
            base["disable_tqdm"] = True
            args = Arguments(*parse_config(base, defaults=_defaults(plan.kind)))
            run = MemberRun(plan.kind, args, base)
            name = (f"{plan.modality}-{plan.stage}" + (f"-{parent}" if parent else ""))[:100]
            if members:  # planned grid members, or sampled members left incomplete by an earlier run
                with Progress(zoo_dir, members):
                    _run_stage(run, members, zoo_dir, resources, name)
            if plan.optuna_trials:
                _run_optuna(run, plan, parent, zoo_dir, plan.optuna_trials, name)
    return layout.scan_members(zoo_dir)


def _stage_work(zoo_dir: Path, plan: StagePlan) -> dict[str | None, list[PlannedMember]]:
    """Per parent (None when pretraining): the members still to train. Finetuning waits for complete parents."""
    if plan.stage == "pretraining":
        parents: list[str | None] = [None]
    else:
        pretrained = zoo_dir / plan.modality / "pretraining"
        found = layout.scan_members(pretrained) if pretrained.is_dir() else []
        planned = {m.parent for m in plan.members}
        parents = []
        for member in found:
            if plan.members and member.name not in planned:
                continue
            if member.is_complete():
                parents.append(member.name)
            else:
                print(f"zoo: skipping the finetuning of {member.name}: the parent is not complete", file=sys.stderr)
    work: dict[str | None, list[PlannedMember]] = {}
    for parent in parents:
        if plan.optuna_trials:  # resume sampled members that an earlier run left incomplete
            folder = layout.zoo_stage_dir(zoo_dir, plan.modality, plan.stage, parent)
            members = []
            for found_member in (layout.scan_members(folder) if folder.is_dir() else []):
                if not found_member.is_complete():
                    values = {k: found_member.config["recipe"][k] for k in plan.ranges}
                    members.append(plan_member(plan, values, list(values), parent))
        else:
            points = plan.members if plan.stage == "pretraining" else [m for m in plan.members if m.parent == parent]
            if plan.stage == "finetuning" and not plan.members:  # parents were sampled: expand the grid now
                points = [plan_member(plan, point, keys, parent) for point, keys in plan.points]
            members = [m for m in points if not _complete(zoo_dir, m)]
        work[parent] = members
    return work


def _defaults(kind: str) -> dict[str, Any]:
    from zoo.runs import KIND_DEFAULTS

    return KIND_DEFAULTS[kind]


def _complete(zoo_dir: Path, member: PlannedMember) -> bool:
    path = zoo_dir / member.relpath()
    return layout.is_member_dir(path) and layout.load_member(path).is_complete()


# ---------------------------------------------------------------- status


def status_rows(zoo_dir: str | Path) -> list[dict[str, Any]]:
    """One row per planned member (as recorded in zoo.json when generating) and per other member found on disk."""
    zoo_dir = Path(zoo_dir)
    zoo_file = layout.read_zoo_file(zoo_dir) or {}
    found = {m.relpath: m for m in layout.scan_members(zoo_dir)} if zoo_dir.is_dir() else {}
    rows = [_row(p["member"], p["stage"], found.pop(p["member"], None), p["epochs"])
            for p in zoo_file.get("planned", [])]
    rows += [_row(relpath, member.stage, member, member.planned_epochs) for relpath, member in found.items()]
    return rows


def _row(relpath: str, stage: str, member: layout.MemberInfo | None, epochs: int) -> dict[str, Any]:
    row = {"member": relpath, "stage": stage, "epochs_done": 0, "epochs": epochs, "metric": None, "value": None,
           "state": "pending", "error": None}
    if member is not None:
        last = member.last_result or {}
        row.update(epochs_done=max(member.epochs_done - 1, 0), metric=member.config.get("metric"),
                   value=last.get(member.config.get("metric", "")), state=member.state, error=member.error)
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["member", "stage", "epochs", "last test metric", "state"]
    lines = [header]
    for row in rows:
        value = row["value"]
        metric = "-" if value is None else f"{row['metric'].removeprefix('test_')} {value:.4g}"
        state = row["state"] + (f" ({row['error'][:60]})" if row["error"] and row["state"] == "failed" else "")
        lines.append([row["member"], row["stage"], f"{row['epochs_done']}/{row['epochs']}", metric, state])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    out.append(f"{len(rows)} members: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(out)


# ---------------------------------------------------------------- CLI


def cli_generate(args) -> int:
    spec, stages = load_spec(args.spec)
    plan_members(stages)
    modalities = ("vision", "language") if args.modality == "all" else (args.modality,)
    stages_wanted = ("pretraining", "finetuning") if args.stage == "all" else (args.stage,)
    if args.optuna is not None:
        if args.optuna < 1:
            raise ValueError(f"--optuna must be >= 1, got {args.optuna}")
        if not any(plan.ranges for plan in stages):
            raise ValueError(f"--optuna {args.optuna}: the spec {args.spec} has no stage with `ranges` to sample")
    if args.dry_run:
        members = [m for plan in stages for m in plan.members
                   if m.modality in modalities and m.stage in stages_wanted]
        for member in members:
            print(member.relpath())
        counts: dict[str, int] = {}
        for member in members:
            key = f"{member.modality}/{member.stage}"
            counts[key] = counts.get(key, 0) + 1
        print(f"{len(members)} members: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        for plan in stages:
            sampled = args.optuna or plan.optuna_trials
            if plan.ranges and sampled and plan.modality in modalities and plan.stage in stages_wanted:
                per_parent = " per parent" if plan.stage == "finetuning" else ""
                print(f"plus {sampled} members{per_parent} sampled by Optuna in {plan.modality}/{plan.stage} "
                      f"from ranges of {', '.join(plan.ranges)}")
        return 0
    zoo_dir = Path(args.zoo_dir)
    generate(args.spec, zoo_dir, args.ray_address, args.cpus_per_trial, args.gpus_per_trial, modalities,
             stages_wanted, args.optuna)
    rows = status_rows(zoo_dir)
    print(format_table(rows))
    return 0 if all(row["state"] == "complete" for row in rows) else 1


def cli_status(args) -> int:
    zoo_dir = Path(args.zoo_dir)
    if not zoo_dir.is_dir():
        raise ValueError(f"{zoo_dir}: no such zoo folder")
    rows = status_rows(zoo_dir)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0
