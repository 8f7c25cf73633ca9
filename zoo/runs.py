"""One zoo member from a recipe config: data, model factory, objective, member plan and trainer.

The four recipes (`vit-pretrain`, `vit-finetune`, `lm-pretrain`, `lm-finetune`) share this code; a recipe script
only names its kind. `MemberRun` is also what a population search reuses for every trial: data are prepared once,
then `for_params(trial)` gives each trial its own arguments, model, objective and member folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import default_data_collator, set_seed
from transformers.training_args import OptimizerNames

from zoo import kinds, layout
from zoo.arguments import ConfigError, as_dict, parse_recipe_args
from zoo.data import DataError, TaskData
from zoo.models import CheckpointError
from zoo.training import (
    MemberWriter,
    TrainingDiverged,
    ZooTrainer,
    accuracy_metrics,
    check_process_group,
    is_main_process,
    join_cpu_processes,
    run_provenance,
)

logger = logging.getLogger("zoo")

# Keys that say where things go, not what the member is: ignored when comparing configs for resuming.
PLACE_KEYS = {"output_dir", "logging_dir", "run_name", "pretrained", "dataset_dump", "preprocessing_num_workers",
              "dataloader_num_workers", "disable_tqdm", "report_to", "dataloader_persistent_workers"}
# Errors of a member's setup (bad config, data or parent): one line and exit 2, no traceback.
SETUP_ERRORS = (ConfigError, DataError, CheckpointError, ValueError, FileNotFoundError)


@dataclass
class Arguments:
    model: Any
    data: Any
    zoo: Any
    training: Any

    def flat(self) -> dict[str, Any]:
        return as_dict(self.model, self.data, self.zoo, self.training)

    def with_params(self, params: dict[str, Any]) -> Arguments:
        """A copy with `params` (a trial's values) applied to whichever dataclass owns each key."""
        out = Arguments(*(copy.deepcopy(part) for part in (self.model, self.data, self.zoo, self.training)))
        for key, value in params.items():
            for part in (out.model, out.data, out.zoo, out.training):
                if any(f.name == key for f in dataclasses.fields(part)):
                    setattr(part, key, _coerce(getattr(part, key), value, key))
                    break
            else:
                raise ConfigError(f"unknown config key {key!r}")
        _apply_optimizer(out.training, out.zoo)  # `optimizer` decides the Trainer's `optim`
        return out


def _coerce(old: Any, value: Any, key: str) -> Any:
    """A YAML value in the type of the field it replaces (PyYAML reads `1e-3` as text, for instance)."""
    if not isinstance(value, str) or old is None or isinstance(old, str):
        return value
    try:
        if isinstance(old, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(old, (int, float)):
            number = float(value)
            return int(number) if isinstance(old, int) and number.is_integer() else number
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not a valid {type(old).__name__}") from None
    return value


def _apply_optimizer(training, zoo) -> None:
    if zoo.optimizer == "adamw":
        fused = zoo.fused_optimizer and torch.cuda.is_available()
        training.optim = OptimizerNames("adamw_torch_fused" if fused else "adamw_torch")
        training.optim_args = None
    elif zoo.optimizer == "sgd":
        training.optim = OptimizerNames("sgd")
        training.optim_args = f"momentum={zoo.momentum}"
    else:
        raise ConfigError(f"optimizer {zoo.optimizer!r} is not one of adamw, sgd")


def _jsonable(obj: Any) -> Any:
    return json.loads(layout.to_json(obj))


class MemberRun:
    """Everything needed to train members of one kind on one data set (and, when finetuning, one parent)."""

    def __init__(self, kind: str | kinds.MemberKind, args: Arguments, raw_config: dict[str, Any] | None = None):
        self.kind = kinds.get(kind) if isinstance(kind, str) else kind
        self.args, self.raw_config = args, dict(raw_config or {})
        self.modality, self.stage = self.kind.modality, self.kind.stage
        self.parent: dict[str, Any] | None = None
        self._check(args)
        self.root = Path(args.training.output_dir)
        self.processing_class: Any = None
        self.collator = default_data_collator
        self.eval_collator = None  # a factory of the evaluation collator, when it differs (seeded masking)
        self.image_size = self.channels = 0
        self.data: TaskData = self._prepare_data()

    # ------------------------------------------------ checks and data

    def _check(self, args: Arguments) -> None:
        zoo = args.zoo
        if self.stage == "finetuning" and not zoo.pretrained:
            raise ConfigError("--pretrained is required: a parent member's checkpoint folder")
        if zoo.pretrained:
            zoo.pretrained = str(Path(zoo.pretrained).resolve())
        kinds.check_common(self.kind, args)
        _apply_optimizer(args.training, zoo)

    def _prepare_data(self) -> TaskData:
        data = self.kind.prepare_data(self)
        for name in ("train", "test"):
            if len(data.splits[name]) == 0:
                raise DataError(f"split {name!r} is empty")
        return data

    def parent_info(self, pretrained: str) -> dict[str, Any]:
        """The parent member of a finetuning run, as recorded in the child's config.json."""
        checkpoint = Path(pretrained).resolve()
        member_dir = checkpoint.parent
        info: dict[str, Any] = {"member": None, "path": str(member_dir), "checkpoint": checkpoint.name}
        if layout.is_member_dir(member_dir):
            parent_config = layout.read_member_config(member_dir)
            info["member"] = parent_config["name"]
            info["kind"] = parent_config.get("kind")
            info["mode"] = parent_config.get("recipe", {}).get("mode")
            zoo_root = layout.zoo_root_of(member_dir)
            if zoo_root is not None:
                info["path"] = member_dir.relative_to(zoo_root).as_posix()
        return info

    # ------------------------------------------------ per member (per trial)

    def member_name(self, args: Arguments) -> str:
        return member_name(self.kind, args)

    def member_config(self, args: Arguments, name: str) -> dict[str, Any]:
        epochs = int(args.training.num_train_epochs)
        recipe = {k: v for k, v in _jsonable(args.flat()).items() if k not in PLACE_KEYS}
        return {
            "name": name,
            "modality": self.modality,
            "stage": self.stage,
            "kind": self.kind.member_kind(args),
            "factors": {k: recipe.get(k) for k in args.zoo.name_factors},
            "parent": self.parent,
            "epochs": epochs,
            "checkpoint_every": args.zoo.checkpoint_every,
            "checkpoints": layout.planned_checkpoints(epochs, args.zoo.checkpoint_every),
            "metric": self.kind.metric,
            "num_labels": self.data.num_labels,
            "label_names": self.data.label_names,
            "data": self.data.info,
            "recipe": recipe,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        }

    def objective(self, args: Arguments):
        return self.kind.objective(self, args)

    def build_model(self, args: Arguments) -> torch.nn.Module:
        set_seed(args.training.seed)  # seeded here: a search applies a trial's seed only after model_init
        return self.kind.build_model(self, args)

    def check_member_config(self, args: Arguments, member_dir: Path) -> dict[str, Any]:
        """The member's config.json content; refuses a folder that holds a member trained with another config."""
        config = self.member_config(args, member_dir.name)
        if layout.is_member_dir(member_dir):
            old = layout.read_member_config(member_dir).get("recipe", {})
            for key in sorted(set(old) | set(config["recipe"])):
                if key not in PLACE_KEYS and old.get(key) != config["recipe"].get(key):
                    raise ConfigError(
                        f"{member_dir} holds a member trained with {key}={old.get(key)!r}, not "
                        f"{config['recipe'].get(key)!r}; remove it or choose another --output_dir")
        return config

    def prepare_member(self, args: Arguments, member_dir: Path, provenance: dict | None = None) -> MemberWriter:
        """Write (or check) the member's config.json and return its writer; raises if it holds another config."""
        config = self.check_member_config(args, member_dir)
        config["provenance"] = {**run_provenance(args.training), **(provenance or {})}
        if is_main_process():  # with several processes per member, only the main one writes it
            layout.clean_temporaries(member_dir)
            layout.write_member_config(member_dir, config)
            layout.clear_failure(member_dir)
        extras = [self.processing_class] if self.processing_class is not None else []
        return MemberWriter(member_dir, config["checkpoints"], extras, perplexity=self.kind.perplexity)

    def trainer(self, args: Arguments, writer: MemberWriter | None, trainer_class: type = ZooTrainer,
                model: torch.nn.Module | None = None) -> ZooTrainer:
        """The member's trainer; it builds its model when training starts, unless given one (a pack's member)."""
        splits = self.data.splits
        train = splits["train"]
        train_eval = train.select(range(min(len(train), len(splits["test"]))))
        return trainer_class(
            model=model,
            model_init=None if model is not None else (lambda trial=None: self.build_model(args)),
            args=args.training,
            train_dataset=train,
            eval_dataset=splits["test"],
            data_collator=self.collator,
            processing_class=self.tokenizer,
            compute_metrics=accuracy_metrics(_load_extra_metrics(args.zoo.eval_metrics)),
            objective=self.objective(args),
            member_writer=writer,
            train_eval_dataset=train_eval,
            eval_collator=self.eval_collator,
        )

    @property
    def tokenizer(self):
        """The processing class the Trainer gets (a tokenizer; image processors are saved by the writer)."""
        return None if self.image_size else self.processing_class

    def train_member(self, args: Arguments, member_dir: Path, state_root: Path) -> layout.MemberInfo:
        """Train one member into `member_dir`, resuming from its Trainer state; skip it when already complete."""
        if layout.is_member_dir(member_dir):
            member = layout.load_member(member_dir)
            if member.is_complete():
                self.check_member_config(args, member_dir)  # still refuses a different config
                logger.info("%s is complete; nothing to do", member_dir)
                return member
        writer = self.prepare_member(args, member_dir)
        args.training.output_dir = str(layout.trainer_state_dir(state_root, member_dir))
        trainer = self.trainer(args, writer)
        train_prepared(trainer, member_dir)
        return layout.load_member(member_dir)


def train_prepared(trainer, member_dir: Path):
    """Train a trainer set up for one member: resume from its last complete Trainer state, record a failure in
    the member, and drop the Trainer state once the member is complete. With several processes the main one
    chooses the state to resume (all resume together) and records a failure seen by all (a NaN) once."""
    state_dir = trainer.args.output_dir
    try:
        output = trainer.train(resume_from_checkpoint=trainer.main_process_decides(
            lambda: last_trainer_checkpoint(state_dir)))
    except Exception as err:
        if trainer.is_world_process_zero() or not isinstance(err, TrainingDiverged):
            message = str(err).splitlines()[0][:500] if str(err) else ""
            layout.record_failure(member_dir, f"{type(err).__name__}: {message}")
        raise
    trainer.accelerator.wait_for_everyone()  # the main process has written the last epoch
    if trainer.is_world_process_zero() and layout.load_member(member_dir).is_complete():
        layout.remove_trainer_state(state_dir)
    return output


def member_name(kind: kinds.MemberKind, args: Arguments) -> str:
    """The member's folder name, from its prefix and the values of its `name_factors` (defined with the planning
    of zoos, which must not import this module's training stack)."""
    from zoo.population import member_name as name

    return name(kind, args)


def last_trainer_checkpoint(folder: str | Path) -> str | None:
    """The newest *complete* Trainer checkpoint (its trainer_state.json is written last); partial ones removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete = []
    for candidate in folder.glob("checkpoint-*"):
        if (candidate / "trainer_state.json").is_file() and candidate.name.split("-")[-1].isdigit():
            complete.append(candidate)
        else:
            shutil.rmtree(candidate, ignore_errors=True)
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def _load_extra_metrics(names: list[str]) -> list:
    """The project's own `evaluate` modules (zoo/metrics), loaded by path: never a script from the Hub."""
    if not names:
        return []
    from zoo import metrics

    return [metrics.load(name) for name in names]


def recipe_main(kind: str, argv: list[str] | None = None) -> int:
    """The body of every recipe script: parse, train one member into <output_dir>/<member>, print where it is."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    member_kind = kinds.get(kind)
    join_cpu_processes()  # before the arguments: they set up the device and the process group
    try:
        (model_args, data_args, zoo_args, training_args), raw = parse_recipe_args(kind_defaults(member_kind),
                                                                                  argv)
        if not training_args.output_dir or training_args.output_dir == "trainer_output":
            raise ConfigError("--output_dir is required")
        check_process_group(training_args)
        args = Arguments(model_args, data_args, zoo_args, training_args)
        run = MemberRun(member_kind, args, raw)
        root = Path(training_args.output_dir)
        member_dir = root / run.member_name(args)
    except SETUP_ERRORS as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before training", file=sys.stderr)
        return 130
    try:  # errors while training keep their traceback (and are recorded in the member's error.json)
        member = run.train_member(args, member_dir, root)
    except ConfigError as err:  # the folder holds a member made from another config
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    last = member.last_result or {}
    metric = member.config["metric"]
    if is_main_process():
        print(f"member {member.path} ({member.state}): epochs {member.epochs_done - 1}/{member.planned_epochs}, "
              f"{metric} {last.get(metric)}, checkpoints {[layout.checkpoint_name(e) for e in member.checkpoints]}")
    return 0


def prepare_data_main(argv: list[str]) -> int:
    """`recipes/prepare_data.py KIND --config ... --dump FOLDER`: the recipe's splits, materialised to disk."""
    from zoo.data import save_dump

    if not argv or argv[0] not in kinds.names() or "--dump" not in argv or argv.index("--dump") + 1 >= len(argv):
        print(f"usage: prepare_data.py {{{','.join(kinds.names())}}} --config <yaml> [--key value ...] "
              "--dump <folder>", file=sys.stderr)
        return 2
    kind, rest = kinds.get(argv[0]), list(argv[1:])
    index = rest.index("--dump")
    dump = Path(rest[index + 1])
    del rest[index : index + 2]
    try:
        (model_args, data_args, zoo_args, training_args), raw = parse_recipe_args(kind_defaults(kind), rest)
        training_args.output_dir = str(dump.parent)
        run = MemberRun(kind, Arguments(model_args, data_args, zoo_args, training_args), raw)
        splits = kind.dump_splits(run.data.splits)
        save_dump(TaskData(splits, run.data.label_names, run.data.info), dump)
    except SETUP_ERRORS as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"dump {dump}: " + ", ".join(f"{name} {len(split)}" for name, split in splits.items()))
    return 0


def kind_defaults(kind: kinds.MemberKind) -> dict[str, Any]:
    """Config defaults of a kind (under the config file): its name factors and any others it declares."""
    from zoo.population import kind_defaults as defaults

    return defaults(kind)
