"""Populations: a zoo spec (grids of generating factors) expanded into members and trained with Ray Tune.

Each stage of a modality is one `Trainer.hyperparameter_search(backend="ray")` call whose search space is a
`tune.grid_search` over the stage's planned members (a member = one point of the grid or of a group); finetuning
runs one search per complete pretrained parent. Members land in the zoo layout of `zoo.layout`; complete ones are
skipped, incomplete ones resume from their Trainer state, failed ones are recorded and retried on the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import kinds, layout
from zoo.arguments import ConfigError, check_keys, load_yaml, parse_config

SPEC_KEYS = {"name", "description", "license", "resources", "vision", "language"}
STAGE_KEYS = {"recipe", "config", "fixed", "grid", "groups", "from_checkpoint", "ranges", "optuna", "pack",
              "pack_mode"}
GROUP_KEYS = {"fixed", "grid"}
DEVICE_KEYS = {"bf16", "fp16", "tf32", "bf16_full_eval", "fp16_full_eval", "torch_compile", "use_cpu"}


@dataclass
class PlannedMember:
    modality: str
    stage: str
    kind: str
    name: str
    params: dict[str, Any]  # config values on top of the stage's base config
    parent: str | None = None  # finetuning: the pretrained member's name
    epochs: int = 0
    checkpoints: tuple[int, ...] = ()  # the epochs that get a checkpoint

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
    pack: int = 1  # members trained at once in one process (`zoo.packs`); 1: one member per trial
    pack_mode: str = "auto"  # auto: vmap, member after member for a model vmap cannot batch (zoo.packs)
    where: str = ""  # `<spec>: <modality>.<stage>`, for messages
    planner: Any = field(default=None, repr=False, compare=False)  # its _Planner, made when first needed

    def __getstate__(self) -> dict[str, Any]:  # a trial gets the plan without the planner's caches
        return {**self.__dict__, "planner": None}

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
    for modality in kinds.MODALITIES:
        section = spec.get(modality) or {}
        for stage in section:
            if stage not in kinds.STAGES:
                raise ConfigError(f"{path}: {modality}.{stage} is not a stage ({', '.join(kinds.STAGES)})")
        for stage in kinds.STAGES:
            # a stage is one section, or a list of sections of different kinds (GPT-2 beside BERT)
            sections = section.get(stage) or []
            sections = sections if isinstance(sections, list) else [sections]
            for number, stage_section in enumerate(sections):
                where = f"{path}: {modality}.{stage}" + (f"[{number}]" if len(sections) > 1 else "")
                stages.append(_load_stage(where, path, modality, stage, stage_section or {}))
    pretraining_kinds = {(plan.modality, plan.kind) for plan in stages if plan.stage == "pretraining"}
    for plan in stages:
        parent_kind = kinds.get(plan.kind).parent_kind
        if plan.stage == "finetuning" and (plan.modality, parent_kind) not in pretraining_kinds:
            raise ConfigError(f"{path}: {plan.modality}.finetuning ({plan.kind}) needs a {plan.modality}.pretraining "
                              f"stage of recipe {parent_kind!r}")
    return spec, stages


def _load_stage(where: str, path: Path, modality: str, stage: str, section: dict[str, Any]) -> StagePlan:
    """One stage section of a spec, checked: its kind, base config, grid points, and Optuna ranges."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: a stage must be a mapping (recipe, config, fixed, grid, ...)")
    for key in section:
        if key not in STAGE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(STAGE_KEYS))})")
    kind = section.get("recipe") or kinds.default_for(modality, stage).name
    fitting = [k.name for k in kinds.REGISTRY.values() if k.modality == modality and k.stage == stage]
    if kind not in fitting:
        raise ConfigError(f"{where}.recipe must be one of {', '.join(fitting)}, got {kind!r}")
    ranges, optuna_trials = _stage_ranges(where, section)
    _check_keys_read(where, kinds.get(kind), section)
    pack, pack_mode = section.get("pack", 1), section.get("pack_mode", "auto")
    check_pack(f"{where}.pack", pack)
    if pack_mode not in ("auto", "vmap", "loop"):
        raise ConfigError(f"{where}.pack_mode must be auto, vmap or loop, got {pack_mode!r}")
    return StagePlan(modality, stage, kind, _stage_base(where, path, section), _stage_points(where, section),
                     _from_checkpoint(where, stage, section), ranges=ranges, optuna_trials=optuna_trials,
                     pack=pack, pack_mode=pack_mode, where=where)


def _from_checkpoint(where: str, stage: str, section: dict[str, Any]) -> Any:
    """The stage's `from_checkpoint` as given ('last' by default); `plan_members` checks it against the parents."""
    if "from_checkpoint" in section and stage != "finetuning":
        raise ConfigError(f"{where}.from_checkpoint: only a finetuning stage starts from a parent's checkpoint")
    value = section.get("from_checkpoint", "last")
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _check_from_checkpoint(plan: StagePlan, parents: list[PlannedMember]) -> None:
    """A finetuning stage starts from 'last' or from an epoch that every one of its planned parents checkpoints."""
    value = plan.from_checkpoint
    if value == "last":
        return
    common = sorted(set.intersection(*(set(p.checkpoints) for p in parents))) if parents else []
    allowed = "'last' or an epoch every parent checkpoints" + (f": {', '.join(map(str, common))}" if common else "")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{plan.where}.from_checkpoint must be {allowed}, got {value!r}")
    lacking = [parent for parent in parents if value not in parent.checkpoints]
    if lacking:
        more = f", and {len(lacking) - 1} more parents lack it" if len(lacking) > 1 else ""
        raise ConfigError(f"{plan.where}.from_checkpoint: epoch {value} is not a checkpoint of the parent "
                          f"{lacking[0].relpath()} (it checkpoints epochs {', '.join(map(str, lacking[0].checkpoints))}"
                          f"{more}); give {allowed}")


# Config keys that only some kinds read (see zoo.kinds, zoo.models, zoo.training, zoo.data): a grid over one of them
# in a stage of another kind makes members that differ in name only. Keys missing here are read by every kind.
_READ_BY: dict[str, tuple[str, Any]] = {}


def _read_by(readers: str, test, *keys: str) -> None:
    _READ_BY.update((key, (readers, test)) for key in keys)


_read_by("vision kinds", lambda k: k.modality == "vision", "label_smoothing", "mixup_alpha", "cutmix_alpha",
         "mix_prob", "mix_switch_prob", "random_erasing", "crop_scale_min", "hflip", "augment", "image_column",
         "image_mean", "image_std")
_read_by("vision pretraining (a finetuned ViT takes its parent's size)",
         lambda k: k.modality == "vision" and k.stage == "pretraining", "mode", "color_jitter", "temperature",
         "projection_dim", "image_size", "patch_size", "num_channels")
_read_by("pretraining kinds (a finetuned member takes its parent's architecture)", lambda k: k.stage == "pretraining",
         "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_dropout",
         "attention_dropout", "init", "init_std")
_read_by("finetuning kinds", lambda k: k.stage == "finetuning", "freeze_encoder")
_read_by("vision finetuning", lambda k: k.modality == "vision" and k.stage == "finetuning", "head",
         "head_hidden_size")
_read_by("language kinds", lambda k: k.modality == "language", "text_column")
_read_by("language pretraining (a finetuned member takes its parent's tokenizer)",
         lambda k: k.modality == "language" and k.stage == "pretraining", "block_size", "tokenizer_name", "vocab_size")
_read_by("language finetuning", lambda k: k.modality == "language" and k.stage == "finetuning", "max_length")
_read_by("masked-LM pretraining", lambda k: isinstance(k, kinds.MLMPretrain), "mlm_probability")


def _check_keys_read(where: str, kind: kinds.MemberKind, section: dict[str, Any]) -> None:
    """Refuse a grid (or Optuna range) over a key that the stage's kind never reads."""
    groups = section.get("groups") if isinstance(section.get("groups"), list) else [section]
    varied = [(f"{where}.ranges", key) for key in section.get("ranges") or {}]
    for number, group in enumerate(groups):
        grid = group.get("grid") if isinstance(group, dict) else None
        gwhere = f"{where}.groups[{number}].grid" if "groups" in section else f"{where}.grid"
        varied += [(gwhere, key) for key in (grid if isinstance(grid, dict) else {})]
    for place, key in varied:
        readers, test = _READ_BY.get(key, ("", None))
        if test is not None and not test(kind):
            raise ConfigError(f"{place}.{key}: {kind.name} members ignore {key!r} (read by {readers} only): each "
                              f"value would make the same member under another name; remove it from the stage")


def env_pack() -> int | None:
    """`ZOO_PACK=K` packs every stage like `--pack K` (runs a test suite with packs on); None when unset."""
    value = os.environ.get("ZOO_PACK", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"ZOO_PACK={value!r}: must be a whole number of members >= 1 (it packs every stage like "
                          "--pack), or unset")
    return int(value)


def check_pack(where: str, pack: Any) -> None:
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"{where} must be a whole number of members >= 1, got {pack!r}")


def _stage_base(where: str, path: Path, section: dict[str, Any]) -> dict[str, Any]:
    """The stage's base config: its config file (relative to the spec, or to the working folder) + `fixed`."""
    base: dict[str, Any] = {}
    if section.get("config"):
        config_path = Path(section["config"])
        if not config_path.is_absolute():
            candidates = [path.parent / config_path, Path.cwd() / config_path]
            config_path = next((c for c in candidates if c.is_file()), candidates[0])
        base = load_yaml(config_path)
        check_keys(base, str(config_path))
    fixed = section.get("fixed") or {}
    check_keys(fixed, f"{where}.fixed")
    return {**base, **fixed}


def _stage_points(where: str, section: dict[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """Per planned member: its values (group fixed + grid point) and its grid keys."""
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
        check_keys(group_fixed, f"{gwhere}.fixed")
        check_keys(group.get("grid") or {}, f"{gwhere}.grid")
        if "grid" in group and not group["grid"]:
            raise ConfigError(f"{gwhere}.grid is empty")
        points += [({**group_fixed, **point}, list(point)) for point in _grid_points(group.get("grid") or {}, gwhere)]
    return points


def _stage_ranges(where: str, section: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """Optuna: the ranges to sample from and how many members to sample."""
    ranges = section.get("ranges") or {}
    check_keys(ranges, f"{where}.ranges")
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
    return ranges, int(optuna.get("n_trials", 0))


def kind_defaults(kind: kinds.MemberKind) -> dict[str, Any]:
    """Config defaults of a kind (under the config file): its name factors and any others it declares."""
    return {**kind.defaults, "name_factors": kind.default_name_factors()}


def member_name(kind: kinds.MemberKind, args) -> str:
    """The member's folder name, from its prefix and the values of its `name_factors` (`zoo.runs.member_name`)."""
    flat = args.flat()
    prefix = args.zoo.member_prefix or kind.default_prefix(args)
    return layout.member_name(prefix, {kinds.ALIASES.get(k, k): flat[k] for k in args.zoo.name_factors})


class _PlanArguments:
    """A member's arguments as planning reads them (`zoo.runs.Arguments` without its heavy imports): the four
    dataclasses, and `flat()` with the TrainingArguments part computed once per distinct TrainingArguments."""

    def __init__(self, model, data, zoo, training, training_flat: dict[str, Any]):
        self.model, self.data, self.zoo, self.training = model, data, zoo, training
        self._training_flat = training_flat

    def flat(self) -> dict[str, Any]:
        """What `zoo.arguments.as_dict` gives (equal values; the small dataclasses read without deep copies)."""
        flat: dict[str, Any] = {}
        for part in (self.model, self.data, self.zoo):
            names = _FLAT_NAMES.get(type(part))
            if names is None:
                names = _FLAT_NAMES[type(part)] = [f.name for f in dataclasses.fields(part)
                                                   if not f.name.startswith("_") and "token" not in f.name]
            for name in names:
                value = getattr(part, name)
                flat[name] = value.value if hasattr(value, "value") else value
        return {**flat, **self._training_flat}


_FLAT_NAMES: dict[type, list[str]] = {}


def _frozen(value: Any) -> tuple[str, str]:
    """A hashable key for a config value (1, 1.0 and True stay apart)."""
    if value is None or isinstance(value, (str, int, float)):
        return type(value).__name__, repr(value)
    return type(value).__name__, json.dumps(value, sort_keys=True, default=repr)


class _Planner:
    """Checked arguments for the members of one stage, fast enough for 10,000-member grids.

    A member's arguments are what `zoo.arguments.parse_config` makes of the stage's base config plus the member's
    values: HfArgumentParser turns tokens into typed values (a namespace), then builds the four dataclasses from them
    (TrainingArguments checks its values in __post_init__). Doing that per member cost ~25 ms (building the parser
    of ~200 options, then parsing): minutes for 10,000 members. Here the parser is built once per process, the base
    config is parsed once per stage and every distinct grid value once (an option's typed value depends on its own
    tokens only); per member the namespace is the base's with the member's typed values swapped in, and the
    dataclasses are built from it as HfArgumentParser builds them (a TrainingArguments once per distinct set of its
    values). So every member still passes every check a recipe runs, in ~0.1 ms.
    """

    _parser = None

    def __init__(self, kind: str, base: dict[str, Any]):
        from zoo.arguments import ALL_ARGUMENTS

        self.kind = kinds.get(kind)
        self.defaults = kind_defaults(self.kind)
        self.base = {"output_dir": "unused", **base}
        self.fields = [(cls, [f.name for f in dataclasses.fields(cls) if f.init]) for cls in ALL_ARGUMENTS]
        self.training_fields = set(self.fields[-1][1])
        self._base: dict[str, Any] | None = None
        self._typed: dict[tuple, Any] = {}
        self._trainings: dict[tuple, tuple[Any, dict[str, Any]]] = {}
        self._metrics: set[tuple] = set()

    def _parse(self, config: dict[str, Any]) -> dict[str, Any]:
        """The namespace HfArgumentParser makes of `config` (on the kind's defaults), before any dataclass."""
        from zoo.arguments import ALL_ARGUMENTS, TRAINING_DEFAULTS, _Parser, did_you_mean, field_names, to_tokens

        # precision and compilation do not name a member, and their checks need the device: leave them out here
        config = {k: v for k, v in config.items() if k not in DEVICE_KEYS}
        check_keys(config, "config")
        if _Planner._parser is None:
            _Planner._parser = _Parser(ALL_ARGUMENTS)
        try:
            namespace, rest = _Planner._parser.parse_known_args(to_tokens({**TRAINING_DEFAULTS, **self.defaults,
                                                                            **config}))
        except ValueError as err:
            raise ConfigError(str(err).splitlines()[0]) from None
        if rest:
            hint = did_you_mean(rest[0], field_names()).replace("'", "'--", 1) if rest[0].startswith("--") else ""
            raise ConfigError(f"unknown argument {rest[0]!r}{hint}")
        return vars(namespace)

    def _value(self, key: str, value: Any) -> Any:
        """The typed value of one config value (parsed once per stage)."""
        cache = (key, _frozen(value))
        if cache not in self._typed:
            self._typed[cache] = self._parse({**self.base, key: value})[key]
        return self._typed[cache]

    def _training(self, namespace: dict[str, Any], overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The member's TrainingArguments (checked by its __post_init__) and their flat dict, shared by the members
        with the same training values."""
        from zoo.arguments import as_dict

        key = tuple(sorted((k, _frozen(v)) for k, v in overrides.items() if k in self.training_fields))
        if key not in self._trainings:
            cls, names = self.fields[-1]
            try:
                training = cls(**{name: copy.copy(namespace[name]) for name in names})
            except ValueError as err:
                raise ConfigError(str(err).splitlines()[0]) from None
            if len(self._trainings) >= 4096:
                self._trainings.clear()
            self._trainings[key] = (training, as_dict(training))
        return self._trainings[key]

    def arguments(self, params: dict[str, Any], grid_keys: list[str]) -> tuple[_PlanArguments, dict[str, Any]]:
        """A member's checked arguments and its config (the base config, its values and its name factors)."""
        from zoo.metrics import UnknownMetricError, check_names

        config = {**self.base, **params}
        name_factors = list(config.get("name_factors") or self.defaults["name_factors"])
        for key in grid_keys:  # every factor of the grid names the member (groups differ by member_prefix)
            if key not in name_factors and key not in ("member_prefix", "name_factors"):
                name_factors.append(key)
        config["name_factors"] = name_factors
        if self._base is None:
            self._base = self._parse(self.base)
        overrides = {key: self._value(key, value) for key, value in params.items()
                     if key not in DEVICE_KEYS and key != "name_factors"}
        overrides["name_factors"] = [str(factor) for factor in name_factors]
        namespace = {**self._base, **overrides}
        model, data, zoo = (cls(**{name: copy.copy(namespace[name]) for name in names})
                            for cls, names in self.fields[:-1])
        training, training_flat = self._training(namespace, overrides)
        metrics = tuple(zoo.eval_metrics)
        if metrics not in self._metrics:
            try:
                check_names(zoo.eval_metrics)
            except UnknownMetricError as err:
                raise ConfigError(str(err)) from None
            self._metrics.add(metrics)
        return _PlanArguments(model, data, zoo, training, training_flat), config


def _planner(plan: StagePlan) -> _Planner:
    """The stage's planner, made once (for its kind and base config)."""
    if plan.planner is None:
        plan.planner = _Planner(plan.kind, plan.base)
    return plan.planner


def plan_member(plan: StagePlan, point: dict[str, Any], grid_keys: list[str], parent: str | None) -> PlannedMember:
    """One planned member, checked by the same config checks a recipe runs (a bad grid value fails here)."""
    kind = kinds.get(plan.kind)
    where = f"{plan.modality}.{plan.stage} ({plan.kind})"
    try:
        args, config = _planner(plan).arguments(point, grid_keys)
        kinds.check_common(kind, args)
    except ConfigError as err:
        values = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise ConfigError(f"{where}, member with {values or 'the base config'}: {err}") from None
    if plan.stage == "finetuning":
        args.zoo.pretrained = "parent"
    epochs = int(args.training.num_train_epochs)
    return PlannedMember(plan.modality, plan.stage, plan.kind, member_name(kind, args),
                         {k: v for k, v in config.items() if k != "output_dir"}, parent, epochs,
                         tuple(layout.planned_checkpoints(epochs, args.zoo.checkpoint_every)))


def plan_members(stages: list[StagePlan]) -> list[StagePlan]:
    """Fill every stage's `members`; finetuning stages get one member per (planned parent, grid point), the
    parents being the planned pretraining members of the stage's parent kind."""

    from tqdm.auto import tqdm

    pretrained: dict[tuple[str, str], list[PlannedMember]] = {}
    total = sum(len(plan.points) for plan in stages if not plan.optuna_trials)
    # a bar only where planning takes a while (a grid of thousands), and only on a terminal
    with tqdm(total=total, desc="zoo: planning", unit="member", delay=2.0, file=sys.stderr, disable=None,
              leave=False) as bar:
        for plan in stages:
            _plan_stage(plan, pretrained, bar)
    taken: dict[str, str] = {}
    for plan in stages:
        for member in plan.members:
            if taken.setdefault(member.relpath(), plan.kind) != plan.kind:
                raise ConfigError(f"{member.relpath()} is planned by two stages ({taken[member.relpath()]} and "
                                  f"{plan.kind}); give them different member_prefix values")
    return stages


def _plan_stage(plan: StagePlan, pretrained: dict[tuple[str, str], list[PlannedMember]], bar) -> None:
    """Fill one stage's `members` (see `plan_members`); `pretrained` collects the pretraining stages' members."""
    plan.members = []
    parent_members = pretrained.get((plan.modality, kinds.get(plan.kind).parent_kind), [])
    parents = [None] if plan.stage == "pretraining" else [m.name for m in parent_members]
    if plan.stage == "finetuning":
        _check_from_checkpoint(plan, parent_members)
    if plan.optuna_trials:  # sampled members are known only once sampled
        return
    names: set[str] = set()
    for point, grid_keys in plan.points:
        first = plan_member(plan, point, grid_keys, None)
        if first.name in names:
            raise ConfigError(f"{plan.modality}.{plan.stage}: two grid points give the member name "
                              f"{first.name!r}; add the differing key to name_factors")
        names.add(first.name)
        plan.members += [PlannedMember(first.modality, first.stage, first.kind, first.name, first.params, parent,
                                       first.epochs, first.checkpoints) for parent in parents]
        bar.update()
    if plan.stage == "pretraining":
        pretrained.setdefault((plan.modality, plan.kind), []).extend(plan.members)


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


def _remove_scratch(storage: Path, name: str) -> None:
    """Drop a stage's Ray storage, and the scratch folders it leaves empty."""
    shutil.rmtree(storage / name, ignore_errors=True)
    for folder in (storage, storage.parent):
        try:
            folder.rmdir()  # only when empty: another zoo's stage may be running
        except OSError:
            break


def _writer_guard(zoo_dir: str, writer_id: str | None, driver_pid: int):
    """What a trial holds while it trains: a `layout.WriterGuard` on its driver's lock (see the comment above
    layout.ZooLock); nothing in the driver itself (Optuna trains there) or without a lock."""
    if writer_id is None or os.getpid() == driver_pid:
        return contextlib.nullcontext()
    return layout.WriterGuard(zoo_dir, writer_id)


def _guarded_trainer_class():
    from zoo.training import ZooTrainer

    class GuardedTrainer(ZooTrainer):
        """A member's trainer in a trial: its resumable-state saves (written by the Trainer, not through zoo.layout)
        are checked against the driver's lock too."""

        def _save_checkpoint(self, model, trial):
            layout.check_writer()
            return super()._save_checkpoint(model, trial)

    return GuardedTrainer


def _make_trainer_class():
    from zoo.training import ZooTrainer

    class PopulationTrainer(ZooTrainer):
        """The trainer a search runs: `train(trial=...)` trains the trial's planned member into the zoo with a
        member trainer of its own (built in the trial's process), and `evaluate()` then reports that member's
        final metrics from its result.json, so the search needs no model of its own."""

        def setup_population(self, run, plans: dict[str, PlannedMember], zoo_dir: str,
                             stage: StagePlan | None = None, parent: str | None = None):
            self.run, self.plans, self.zoo_dir, self.stage_plan, self.parent = run, plans, zoo_dir, stage, parent
            self.pack_mode = stage.pack_mode if stage is not None else "auto"
            self._member_dir: str | None = None
            # the trials check the driver's lock before every write (see the comment above layout.ZooLock)
            self.writer_id, self.driver_pid = layout.held_writer_id(zoo_dir), os.getpid()

        def _plan(self, trial) -> list[PlannedMember]:
            if isinstance(trial, dict):  # Ray: the grid names the member, or the pack
                return self.plans[trial["member"]]
            values = self.stage_plan.sample(trial)  # Optuna: a member from the sampled values
            return [plan_member(self.stage_plan, values, list(values), self.parent)]

        def _member_args(self, plan: PlannedMember):
            return self.run.args.with_params({k: v for k, v in plan.params.items()
                                              if k not in ("pretrained", "output_dir")})

        def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
            if trial is None:
                raise ValueError("PopulationTrainer trains the members of a search; use ZooTrainer for one member")
            plans = self._plan(trial)
            zoo_dir = Path(self.zoo_dir)
            self._member_dir = str(zoo_dir / plans[0].relpath())
            with _writer_guard(self.zoo_dir, self.writer_id, self.driver_pid):
                if len(plans) == 1:
                    return _train_member(self, plans[0], zoo_dir)
                members = _train_pack(self, plans, zoo_dir, trial["member"])
            complete = [m for m in members if m.is_complete()]  # the search reports one of them
            self._member_dir = str(complete[0].path) if complete else self._member_dir
            return members

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            last = layout.load_member(self._member_dir).last_result or {} if self._member_dir else {}
            return {f"{metric_key_prefix}_{key.removeprefix('test_')}": value for key, value in last.items()
                    if key.startswith("test_") and isinstance(value, (int, float))}

        def _tune_save_checkpoint(self, checkpoint_dir: str) -> None:
            # Ray would copy the model and optimizer of every trial into its storage (GBs over a zoo); the member is
            # already in the zoo and its resumable state in .trainer_state, so Ray keeps a pointer only.
            layout.atomic_write_json(Path(checkpoint_dir) / "member.json", {"member": self._member_dir})

    return PopulationTrainer


def _train_member(trainer, plan: PlannedMember, zoo_dir: Path):
    """A trial that trains one member."""
    from zoo.runs import train_prepared

    member_dir = zoo_dir / plan.relpath()
    args = trainer._member_args(plan)
    writer = trainer.run.prepare_member(args, member_dir, _provenance())
    args.training.output_dir = str(layout.trainer_state_dir(zoo_dir, member_dir))
    args.training.disable_tqdm = True
    return train_prepared(trainer.run.trainer(args, writer, trainer_class=_guarded_trainer_class()), member_dir)


def _train_pack(trainer, plans: list[PlannedMember], zoo_dir: Path, key: str) -> list[layout.MemberInfo]:
    """A trial that trains the pack `key` (zoo.packs)."""
    from zoo import packs

    first = plans[0]
    stage_dir = layout.zoo_stage_dir(zoo_dir, first.modality, first.stage, first.parent)
    return packs.train_pack(trainer.run, [(p.name, trainer._member_args(p), zoo_dir / p.relpath()) for p in plans],
                            layout.trainer_state_dir(zoo_dir, stage_dir) / key, trainer.pack_mode, _provenance())


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


def _population_trainer(run, plans: dict[str, list[PlannedMember]], zoo_dir: Path, stage: StagePlan | None = None,
                        parent: str | None = None):
    trainer = run.trainer(run.args, None, trainer_class=_make_trainer_class())
    trainer.setup_population(run, plans, str(zoo_dir.resolve()), stage, parent)
    return trainer


def _all_trials_failed(err: AttributeError | KeyError) -> bool:
    """The Ray integration found no best trial (`None.trial_id`), or one without a result (`["objective"]`): every
    trial failed, each recorded in its member(s)."""
    if isinstance(err, KeyError):
        return err.args == ("objective",)
    return err.obj is None and err.name == "trial_id"


def _objective_value(metrics: dict[str, float]) -> float:
    return float(metrics.get("eval_acc", -metrics.get("eval_loss", 0.0)))


def _run_stage(run, members: list[PlannedMember], zoo_dir: Path, resources: dict[str, float], name: str,
               plan: StagePlan | None = None) -> None:
    """Train `members` as one Ray Tune grid search: one trial per member, or per pack of members."""
    from ray import tune

    from zoo.packs import group_packs, pack_id

    size = plan.pack if plan is not None else 1
    plans: dict[str, list[PlannedMember]] = {}
    for group in group_packs(members, lambda m: m.params, size):
        plans[group[0].name if len(group) == 1 else pack_id([m.relpath() for m in group])] = group
    for key, group in plans.items():
        epoch = resume_epoch(zoo_dir, group, key)
        for member in group if epoch else []:
            say(f"{member.relpath()} resumes from epoch {epoch}")
    trainer = _population_trainer(run, plans, zoo_dir, plan)
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
    except (AttributeError, KeyError) as err:
        if not _all_trials_failed(err):
            raise
    finally:
        _remove_scratch(storage, name)


def resume_epoch(zoo_dir: Path, group: list[PlannedMember], key: str) -> int | None:
    """The epoch after which the trial of `group` (one member, or the pack `key`) goes on: that of the newest
    complete resumable state it will find (zoo.runs.last_trainer_checkpoint, zoo.packs); None when it starts
    afresh. Only reads."""
    first = group[0]
    try:
        if len(group) == 1:
            state_dir = layout.trainer_state_dir(zoo_dir, zoo_dir / first.relpath())
            states = state_dir.glob("checkpoint-*/trainer_state.json")
            newest = max(states, key=lambda p: int(p.parent.name.split("-")[-1]), default=None)
            return int(round(layout.read_json(newest)["epoch"])) if newest else None
        stage_dir = layout.zoo_stage_dir(zoo_dir, first.modality, first.stage, first.parent)
        infos = sorted((layout.trainer_state_dir(zoo_dir, stage_dir) / key).glob("epoch-*/pack.json"))
        info = layout.read_json(infos[-1]) if infos else {}
        return int(info["epoch"]) if info.get("members") == [m.name for m in group] and info["epoch"] else None
    except (layout.LayoutError, OSError, KeyError, TypeError, ValueError):  # unreadable: the trial starts afresh
        return None


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
    """Progress over planned epochs, refreshed from the zoo folder (works for trials on any node).

    On a terminal: one bar. Otherwise (a log file, CI): a line per finished or failed member and a summary line
    every `log_every` seconds, instead of a new line at every refresh.
    """

    def __init__(self, zoo_dir: Path, members: list[PlannedMember], stream=None, log_every: float = 30.0):
        self.zoo_dir, self.members = zoo_dir, members
        self.stream = stream or sys.stderr
        self.total = sum(m.epochs + 1 for m in members)
        self.log_every, self._last_log = log_every, time.monotonic()
        self._shown: dict[str, Any] = {}  # per member, what its last line said: "done", or the failure it reported
        # error.json files of an earlier run are not this run's failures: ignored until the member's retry clears
        # or rewrites them (a new file)
        self._stale = {m.relpath(): _failure_id(zoo_dir / m.relpath()) for m in members}
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="zoo", unit="epoch", dynamic_ncols=True, file=self.stream)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _refresh(self, final: bool = False) -> None:
        done = running = failed = epochs = 0
        current = ""
        for plan in self.members:
            path = self.zoo_dir / plan.relpath()
            if not layout.is_member_dir(path):
                continue
            info = layout.load_member(path)
            epochs += min(info.epochs_done, plan.epochs + 1)
            failure = _failure_id(path) if info.error else None
            # a cheap look (no weight headers read every refresh); `zoo status` does the full check
            if info.epochs_done > plan.epochs and set(info.planned_checkpoints) <= set(info.checkpoints):
                done += 1
                self._report(plan, "done", "done")
            elif failure is not None and failure != self._stale.get(plan.relpath()):
                failed += 1
                self._report(plan, failure, f"failed ({info.error[:100]})")
            elif info.results:
                running += 1
                current = f"{info.name} epoch {info.epochs_done - 1}/{plan.epochs}"
        left = len(self.members) - done - running - failed
        summary = f"done {done} running {running} failed {failed} left {left}"
        if self.bar is not None:
            self.bar.n = epochs
            self.bar.set_postfix_str(f"{summary} {current}"[:120], refresh=False)
            self.bar.refresh()
        elif final or time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            print(f"zoo: {epochs}/{self.total} epochs, {summary}", file=self.stream, flush=True)

    def _report(self, plan: PlannedMember, state: Any, what: str) -> None:
        """A line when a member's state changes to done, or to a failure (each new failure once)."""
        if self.bar is None and self._shown.get(plan.relpath()) != state:
            self._shown[plan.relpath()] = state
            print(f"zoo: {what}: {plan.relpath()}", file=self.stream, flush=True)

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
            self._refresh(final=True)
        finally:
            if self.bar is not None:
                self.bar.close()


def _failure_id(member_dir: Path) -> tuple[int, int] | None:
    """Which error.json a member holds (inode and time: each failure is a new file), None without one."""
    try:
        stat = (member_dir / layout.FAILURE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables off (verbose=0): the zoo shows its own progress
    # Ctrl-C: Tune's own SIGINT handler would end the stage's search quietly, say `tune.run(..., resume=True)` (wrong
    # here) and let the run go on to the next stage; without it Ctrl-C raises KeyboardInterrupt at once, and
    # cli_generate says how to resume
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # a Ray of our own (not one found running on this machine), stopped when we exit
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    atexit.register(_RAY_STOPPING.set)  # runs before Ray's own exit handler (registered earlier) stops it
    threading.Thread(target=_watch_ray, daemon=True, name="zoo-ray-watch").start()


_RAY_STOPPING = threading.Event()


RAY_DIED = ("zoo generate: error: the Ray cluster under this run stopped ({}); finished members and epochs are "
            "kept: run the same command again to resume")


def _ray_alive() -> str | None:
    """None while the run's Ray cluster answers, else what is wrong."""
    import ray

    node = ray._private.worker._global_node
    for kind in ("gcs_server", "raylet"):  # a Ray this process started: its own processes
        for info in (node.all_processes.get(kind, []) if node is not None else []):
            if info.process.poll() is not None:
                return f"its {kind} process {info.process.pid} exited"
    try:
        ray._private.worker.global_worker.gcs_client.internal_kv_get(b"zoo-ping", None, timeout=5)
    except Exception as err:  # noqa: BLE001 - a dead GCS fails in many ways
        return f"its GCS does not answer: {type(err).__name__}"
    return None


def _watch_ray(period: float = 3.0, tries: int = 3) -> None:
    """Ray's core worker ends this process without a Python error (exit 1, a C++ log line) about a minute after
    its cluster goes away: notice first, say so in one line, and exit 3."""
    import ray

    failures = 0
    while ray.is_initialized():
        time.sleep(period)
        try:
            problem = _ray_alive() if ray.is_initialized() else None
        except Exception:  # noqa: BLE001 - shutting down
            return
        failures = failures + 1 if problem else 0
        if _RAY_STOPPING.is_set():
            return
        if failures >= tries or (problem and "exited" in problem):
            print(RAY_DIED.format(problem), file=sys.stderr, flush=True)
            node = ray._private.worker._global_node
            if node is not None and node.all_processes:  # our own Ray: stop what is left of it
                try:
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            os._exit(3)


def _ray_died(err: BaseException) -> bool:
    """Whether an error raised by the search means that the Ray cluster under the run went away."""
    if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
        return False  # the error came before any Ray was started
    names = {type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None}
    if names & {"RaySystemError", "RpcError", "NodeDiedError", "RayletDiedError", "LocalRayletDiedError"}:
        return True
    try:
        return _ray_alive() is not None
    except Exception:  # noqa: BLE001 - a half-stopped Ray
        return True


def generate(spec_path: str | Path, zoo_dir: str | Path, ray_address: str | None = None,
             cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
             modalities: tuple[str, ...] = ("vision", "language"),
             stages_wanted: tuple[str, ...] = ("pretraining", "finetuning"),
             optuna_trials: int | None = None, pack: int | None = None) -> list[layout.MemberInfo]:
    """Train every planned member that is not complete yet; return the zoo's members. `pack` overrides the
    stages' `pack:` (members trained at once in one trial)."""
    spec, stages = load_spec(spec_path)
    gpus = gpus_per_trial if gpus_per_trial is not None else (spec.get("resources") or {}).get("gpu", 0)
    if gpus > 1:  # a trial is one process: it would train on one GPU and leave the others idle
        where = f"--gpus-per-trial {gpus:g}" if gpus_per_trial is not None else f"resources.gpu {gpus:g}"
        raise ConfigError(f"{where}: a zoo trial trains its member in one process on at most one GPU; give 1 or a "
                          "fraction, or train members that need several GPUs one per `accelerate launch` "
                          "(docs/scale.md)")
    pack = pack if pack is not None else env_pack()
    for plan in stages:
        if pack is not None:
            check_pack("--pack", pack)
            plan.pack = pack
        if optuna_trials and plan.ranges:
            plan.optuna_trials = optuna_trials
        if not plan.points and not plan.optuna_trials:
            raise ConfigError(f"{plan.modality}.{plan.stage} has only ranges: give --optuna N or optuna.n_trials")
    plan_members(stages)
    zoo_dir = Path(zoo_dir).resolve()  # trials run in Ray's own working folders: absolute paths only
    check_zoo_dir(zoo_dir, spec)
    resources = dict(spec.get("resources") or {})
    resources = {"cpu": cpus_per_trial or resources.get("cpu", 1), "gpu": gpus_per_trial or resources.get("gpu", 0)}
    with contextlib.ExitStack() as stack:
        if layout.held_writer_id(zoo_dir) is None:  # called as a library: the lock `zoo generate` takes first
            stack.enter_context(layout.ZooLock(zoo_dir, "zoo generate"))
        _generate_stages(spec, str(Path(spec_path).resolve()), stages, zoo_dir, resources, ray_address, modalities,
                         stages_wanted)
    return layout.scan_members(zoo_dir)


def _generate_stages(spec: dict[str, Any], spec_path: str, stages: list[StagePlan], zoo_dir: Path,
                     resources: dict[str, float], ray_address: str | None, modalities, stages_wanted) -> None:
    """Record the zoo's spec and plan, then train the wanted stages in order (under the zoo's lock)."""
    sections = [(plan.modality, plan.stage) for plan in stages]
    wanted = [plan for plan in stages if plan.modality in modalities and plan.stage in stages_wanted]
    for plan in wanted:  # a damaged result.json stops the run before anything is written or trained
        for member in plan.members:
            layout.read_results(zoo_dir / member.relpath())
    zoo_dir.mkdir(parents=True, exist_ok=True)
    if layout.read_zoo_file(zoo_dir) is not None:
        say(f"resuming the zoo in {zoo_dir}: complete members are kept, the others go on from their last saved state")
    planned = [{"member": m.relpath(), "stage": m.stage, "epochs": m.epochs} for plan in stages for m in plan.members]
    layout.write_zoo_file(zoo_dir, spec, spec_hash(spec), spec_path=spec_path, planned=planned)
    stages = wanted
    for plan in stages:
        label = f"{plan.modality}/{plan.stage}" + \
            (f" ({plan.kind})" if sections.count((plan.modality, plan.stage)) > 1 else "")
        _generate_stage(plan, zoo_dir, resources, ray_address, label)


def say(message: str) -> None:
    """One line of `zoo generate`'s own, beside the progress (stderr)."""
    print(f"zoo: {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """45 s, 1 min 12 s, 2 h 5 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _generate_stage(plan: StagePlan, zoo_dir: Path, resources: dict[str, float], ray_address: str | None,
                    label: str) -> None:
    """Train what is left of one stage (per parent when finetuning); say what is left and, at the end, how long
    the stage took."""
    started = time.monotonic()
    work = _stage_work(zoo_dir, plan)
    for parent in work:
        drop_finished_states(zoo_dir, layout.zoo_stage_dir(zoo_dir, plan.modality, plan.stage, parent))
    todo = [member for members in work.values() for member in members]
    if not todo and not plan.optuna_trials:
        say(f"{label}: nothing to train")
        return  # no data to prepare, no Ray to start (a rerun is quick)
    if todo:
        say(f"{label}: {len(todo)} of {len(plan.members) or len(todo)} members to train")
    for parent, members in work.items():
        if members or plan.optuna_trials:
            _train_parent(plan, parent, members, zoo_dir, resources, ray_address)
    states = [layout.load_member(zoo_dir / m.relpath(), lenient=True).state if layout.is_member_dir(
        zoo_dir / m.relpath()) else "pending" for m in todo]
    others = ", ".join(f"{states.count(state)} {state}" for state in ("failed", "incomplete", "pending")
                       if states.count(state))
    sampled = " (and those Optuna sampled)" if plan.optuna_trials else ""
    done = states.count("complete")
    say(f"{label}: {done} member{'s' if done != 1 else ''} done{sampled}{', ' + others if others else ''} in "
        f"{duration(time.monotonic() - started)}")


def drop_finished_states(zoo_dir: Path, folder: Path) -> None:
    """Remove the Trainer or pack states that a killed run left for members that are complete (killed between a
    member's last epoch and the removal of its state): reruns skip complete members, so nothing else would."""
    state_root = layout.trainer_state_dir(zoo_dir, folder)
    for state in sorted(state_root.iterdir()) if state_root.is_dir() else []:
        names: list[str] | None = [state.name]
        if state.name.startswith("pack-"):
            infos = sorted(state.glob("epoch-*/pack.json"))
            try:
                names = layout.read_json(infos[-1]).get("members") if infos else None
            except layout.LayoutError:
                names = None
        if names and all(layout.is_member_dir(folder / name) and
                         layout.load_member(folder / name, lenient=True).is_complete() for name in names):
            layout.remove_trainer_state(state)


def _train_parent(plan: StagePlan, parent: str | None, members: list[PlannedMember], zoo_dir: Path,
                  resources: dict[str, float], ray_address: str | None) -> None:
    """Train a stage's `members` of one parent (None when pretraining), and sample more with Optuna if asked."""
    from zoo.runs import Arguments, MemberRun

    base = dict(plan.base)
    if parent is not None:
        parent_info = layout.load_member(zoo_dir / layout.zoo_member_dir("", plan.modality, "pretraining", parent))
        epoch = plan.from_checkpoint
        epoch = parent_info.checkpoints[-1] if epoch == "last" else int(epoch)
        if epoch not in parent_info.checkpoints:  # a parent sampled by Optuna: known only now
            raise ConfigError(f"{plan.where}.from_checkpoint: {epoch} is not a checkpoint of the parent "
                              f"{parent} (it saved epochs {', '.join(map(str, parent_info.checkpoints))})")
        base["pretrained"] = str(parent_info.checkpoint_dir(epoch))
    base["output_dir"] = str(zoo_dir)
    base["disable_tqdm"] = True
    args = Arguments(*parse_config(base, defaults=kind_defaults(kinds.get(plan.kind))))
    run = MemberRun(plan.kind, args, base)
    name = (f"{plan.modality}-{plan.stage}" + (f"-{parent}" if parent else ""))[:100]
    if members:  # planned grid members, or sampled members left incomplete by an earlier run
        _init_ray(ray_address)
        with Progress(zoo_dir, members):
            _run_stage(run, members, zoo_dir, resources, name, plan)
    if plan.optuna_trials:
        _run_optuna(run, plan, parent, zoo_dir, plan.optuna_trials, name)


def _stage_work(zoo_dir: Path, plan: StagePlan) -> dict[str | None, list[PlannedMember]]:
    """Per parent (None when pretraining): the members still to train. Finetuning waits for complete parents."""
    if plan.stage == "pretraining":
        parents: list[str | None] = [None]
    else:
        pretrained = zoo_dir / plan.modality / "pretraining"
        found = layout.scan_members(pretrained) if pretrained.is_dir() else []
        planned = {m.parent for m in plan.members}
        parent_kind = kinds.get(plan.kind).parent_kind
        parents = []
        for member in found:
            if plan.members and member.name not in planned:
                continue
            if getattr(kinds.of_member(member.config), "name", None) != parent_kind:
                continue  # a parent of another family (BERT beside GPT-2)
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


def _complete(zoo_dir: Path, member: PlannedMember) -> bool:
    path = zoo_dir / member.relpath()
    return layout.is_member_dir(path) and layout.load_member(path).is_complete()


# ---------------------------------------------------------------- CLI


def _print_packs(stages: list[StagePlan], modalities, stages_wanted) -> None:
    for plan in stages:
        if plan.pack > 1 and plan.modality in modalities and plan.stage in stages_wanted and plan.members:
            from zoo.packs import group_packs

            by_parent: dict[str | None, list[PlannedMember]] = {}
            for member in plan.members:
                by_parent.setdefault(member.parent, []).append(member)
            sizes = [len(g) for group in by_parent.values() for g in group_packs(group, lambda m: m.params, plan.pack)]
            print(f"{plan.modality}/{plan.stage}: {len(sizes)} trials, packs of {sorted(sizes, reverse=True)}")


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
    pack = args.pack if args.pack is not None else env_pack()  # what the real run packs
    if pack is not None:
        check_pack("--pack", pack)
        for plan in stages:
            plan.pack = pack
    if args.dry_run:
        if Path(args.zoo_dir).exists() and not Path(args.zoo_dir).is_dir():  # what the real run's lock refuses
            raise layout.LayoutError(f"{args.zoo_dir}: is a file, not a zoo folder")
        check_zoo_dir(Path(args.zoo_dir).resolve(), spec)  # the real run's refusal of another spec's zoo
        _print_plan(stages, modalities, stages_wanted, args.optuna)
        return 0
    from zoo.status import format_table, status_rows

    zoo_dir = Path(args.zoo_dir)
    with layout.ZooLock(zoo_dir, "zoo generate"):  # one writer per zoo; the kernel drops it if we are killed
        try:
            generate(args.spec, zoo_dir, args.ray_address, args.cpus_per_trial, args.gpus_per_trial, modalities,
                     stages_wanted, args.optuna, args.pack)
        except KeyboardInterrupt:  # Ctrl-C: Ray's own hint (tune.run(..., resume=True)) does not apply here
            print(INTERRUPTED, file=sys.stderr, flush=True)
            return 130
        except Exception as err:  # noqa: BLE001 - Ray's own errors have many types
            if not _ray_died(err):
                raise
            print(RAY_DIED.format(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"),
                  file=sys.stderr)
            return 3
    rows = status_rows(zoo_dir)
    print(format_table(rows))
    return 0 if all(row["state"] == "complete" for row in rows) else 1


INTERRUPTED = ("zoo generate: interrupted: rerun the same command to resume (complete members are kept, the others "
               "go on from their last saved epoch)")


def _print_plan(stages: list[StagePlan], modalities, stages_wanted, optuna: int | None) -> None:
    """The dry run's output: the planned members, their count per stage, the packs, the Optuna samples."""
    members = [m for plan in stages for m in plan.members if m.modality in modalities and m.stage in stages_wanted]
    for member in members:
        print(member.relpath())
    counts: dict[str, int] = {}
    for member in members:
        key = f"{member.modality}/{member.stage}"
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(members)} members: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    _print_packs(stages, modalities, stages_wanted)
    for plan in stages:
        sampled = optuna or plan.optuna_trials
        if plan.ranges and sampled and plan.modality in modalities and plan.stage in stages_wanted:
            per_parent = " per parent" if plan.stage == "finetuning" else ""
            print(f"plus {sampled} members{per_parent} sampled by Optuna in {plan.modality}/{plan.stage} "
                  f"from ranges of {', '.join(plan.ranges)}")
