"""What planning makes of a zoo spec: a `StagePlan` per stage section, holding its `PlannedMember`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo import layout


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
