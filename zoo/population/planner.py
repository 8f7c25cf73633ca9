"""The planner: a stage's grid points turned into named, checked members (`plan_members`).

Every planned member passes the config checks its recipe runs, so a bad grid value fails before anything trains;
finetuning stages get one member per planned parent and grid point.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from typing import Any

from zoo import kinds, layout
from zoo.arguments import Arguments, ConfigError, check_keys
from zoo.kinds import kind_defaults, member_name
from zoo.population.plans import PlannedMember, StagePlan

DEVICE_KEYS = {"bf16", "fp16", "tf32", "bf16_full_eval", "fp16_full_eval", "torch_compile", "use_cpu"}


class _PlanArguments(Arguments):
    """A member's arguments as planning reads them: `Arguments` whose `flat()` takes the TrainingArguments part
    computed once per distinct TrainingArguments."""

    def __init__(self, model, data, zoo, training, training_flat: dict[str, Any]):
        super().__init__(model, data, zoo, training)
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
    (TrainingArguments checks its values in __post_init__). Doing that per member costs ~25 ms (building the parser
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
    if kinds.is_finetuning(plan.stage):
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
    parents: list[PlannedMember | None] = [None] if kinds.is_pretraining(plan.stage) else list(parent_members)
    if kinds.is_finetuning(plan.stage):
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
        plan.members += [_for_parent(plan, point, grid_keys, first, parent) for parent in parents]
        bar.update()
    if kinds.is_pretraining(plan.stage):
        pretrained.setdefault((plan.modality, plan.kind), []).extend(plan.members)


def _for_parent(plan: StagePlan, point: dict[str, Any], grid_keys: list[str], member: PlannedMember,
                parent: PlannedMember | None) -> PlannedMember:
    """A planned member under one parent. A finetuned member takes its parent's architecture family: it is
    planned again with it (its name may say it) unless that is the kind's default."""
    architecture = parent.params.get("architecture") if parent is not None else None
    if architecture in (None, kinds.get(plan.kind).default_family):
        return dataclasses.replace(member, parent=parent.name if parent is not None else None)
    return plan_member(plan, {**point, "architecture": architecture}, grid_keys, parent.name)


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
