"""One zoo member from a recipe config: its family, data, model, objective, member folder and trainer.

Every recipe shares this code; a recipe script only names its kind. `MemberRun` is also what a population search
reuses for every trial: data are prepared once, then each trial gets its own arguments, model, objective and member
folder. What differs between kinds and architectures is looked up in the registries (`zoo.kinds`, `zoo.families`).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import default_data_collator, set_seed

from zoo import families, kinds, layout
from zoo.arguments import Arguments, ConfigError, apply_optimizer, parse_recipe_args
from zoo.data import DataError, TaskData
from zoo.data.prepare import Prepared, dump_splits, prepare
from zoo.kinds import kind_defaults
from zoo.models import CheckpointError, classifier_from_parent, new_model, read_checkpoint_config
from zoo.training import (
    CausalLM,
    Contrastive,
    ImageClassification,
    MaskedLM,
    MemberWriter,
    SequenceClassification,
    TrainingDiverged,
    ZooTrainer,
    accuracy_metrics,
    check_process_group,
    is_main_process,
    join_cpu_processes,
    run_provenance,
)

__all__ = ["Arguments", "MemberRun", "kind_defaults", "recipe_main", "train_prepared"]

logger = logging.getLogger("zoo")

# Keys that say where things go, not what the member is: ignored when comparing configs for resuming.
PLACE_KEYS = {"output_dir", "logging_dir", "run_name", "pretrained", "dataset_dump", "preprocessing_num_workers",
              "dataloader_num_workers", "disable_tqdm", "report_to", "dataloader_persistent_workers"}
# Errors of a member's setup (bad config, data or parent): one line and exit 2, no traceback.
SETUP_ERRORS = (ConfigError, DataError, CheckpointError, ValueError, FileNotFoundError)

# The training objective of each kind's `objective` (zoo.kinds), from the run's prepared data
OBJECTIVES = {
    "image_classification": lambda run, args: ImageClassification(
        args.zoo, run.image_size, run.data.num_labels, args.data.image_mean, args.data.image_std),
    "contrastive": lambda run, args: Contrastive(
        args.zoo, run.image_size, run.channels, args.data.image_mean, args.data.image_std),
    "causal_lm": lambda run, args: CausalLM(),
    "masked_lm": lambda run, args: MaskedLM(),
    "sequence_classification": lambda run, args: SequenceClassification(),
}


def _jsonable(obj: Any) -> Any:
    return json.loads(layout.to_json(obj))


class MemberRun:
    """Everything needed to train members of one kind on one data set (and, when finetuning, one parent)."""

    def __init__(self, kind: str | kinds.MemberKind, args: Arguments, raw_config: dict[str, Any] | None = None):
        self.kind = kinds.get(kind) if isinstance(kind, str) else kind
        self.args, self.raw_config = args, dict(raw_config or {})
        self.modality, self.stage = self.kind.modality, self.kind.stage
        self._check(args)
        self.root = Path(args.training.output_dir)
        self.parent: dict[str, Any] | None = None
        parent_config = self._read_parent(args) if self.kind.from_parent else None
        self.family = self._family(args, parent_config)
        self.prepared = self._prepare_data(parent_config)
        self.data: TaskData = self.prepared.data
        self.processing_class = self.prepared.processing_class
        self.collator = self.prepared.collator or default_data_collator
        self.eval_collator = self.prepared.eval_collator
        self.image_size, self.channels = self.prepared.image_size, self.prepared.channels

    # ------------------------------------------------ checks and data

    def _check(self, args: Arguments) -> None:
        zoo = args.zoo
        if self.kind.from_parent and not zoo.pretrained:
            raise ConfigError("--pretrained is required: a parent member's checkpoint folder")
        if zoo.pretrained:
            zoo.pretrained = str(Path(zoo.pretrained).resolve())
        kinds.check_common(self.kind, args)
        apply_optimizer(args.training, zoo)

    def _read_parent(self, args: Arguments) -> dict[str, Any]:
        """The parent checkpoint's model config (checked to be of one of the kind's families)."""
        config = read_checkpoint_config(args.zoo.pretrained, self.kind.parent_model_types, self.kind.script)
        self.parent = self.parent_info(args.zoo.pretrained)
        return config

    def _family(self, args: Arguments, parent_config: dict[str, Any] | None) -> families.Family:
        """The member's architecture family: its parent's when finetuning (recorded as `architecture` unless it is
        the kind's default, so that planning names the member the same way)."""
        if parent_config is None:
            return self.kind.family(args)
        family = families.of_model_type(parent_config.get("model_type"))
        if args.model.architecture not in (None, family.name):
            raise ConfigError(f"architecture {args.model.architecture!r}: the parent checkpoint is a "
                              f"{family.name} model")
        if family.name != self.kind.default_family:
            args.model.architecture = family.name
        return family

    def _prepare_data(self, parent_config: dict[str, Any] | None) -> Prepared:
        prepared = prepare(self.kind, self.args, self.family, parent_config, self.root / ".cache")
        for name in ("train", "test"):
            if len(prepared.data.splits[name]) == 0:
                raise DataError(f"split {name!r} is empty")
        if self.kind.heads and self.args.zoo.head == "mlp":
            kinds.check_mlp_head(self.args.zoo.head_hidden_size, prepared.data.num_labels)
        return prepared

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
        return kinds.member_name(self.kind, args)

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
        name = self.kind.objective_for(args)
        if name not in OBJECTIVES:
            raise ConfigError(f"kind {self.kind.name}: no training objective {name!r} (known: {', '.join(OBJECTIVES)})")
        return OBJECTIVES[name](self, args)

    def build_model(self, args: Arguments) -> torch.nn.Module:
        set_seed(args.training.seed)  # seeded here: a search applies a trial's seed only after model_init
        task = self.kind.objective_for(args)
        if self.kind.from_parent:
            zoo = args.zoo
            return classifier_from_parent(
                self.family, task, zoo.pretrained, self.data.num_labels, self.data.label_names,
                tokenizer=self.tokenizer, head=zoo.head, head_hidden=zoo.head_hidden_size,
                freeze_encoder=zoo.freeze_encoder, attn_implementation=args.model.attn_implementation)
        labelled = self.kind.predicts_labels(args)
        return new_model(self.family, task, args.model, tokenizer=self.tokenizer,
                         positions=args.data.block_size if self.tokenizer is not None else 0,
                         num_labels=self.data.num_labels if labelled else 0,
                         label_names=self.data.label_names if labelled else None, **self.kind.model_kwargs(args))

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
        return self.prepared.tokenizer

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
        (model_args, data_args, zoo_args, training_args), raw = parse_recipe_args(kinds.kind_defaults(member_kind),
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
        (model_args, data_args, zoo_args, training_args), raw = parse_recipe_args(kinds.kind_defaults(kind), rest)
        training_args.output_dir = str(dump.parent)
        run = MemberRun(kind, Arguments(model_args, data_args, zoo_args, training_args), raw)
        splits = dump_splits(kind, run.data.splits)
        save_dump(TaskData(splits, run.data.label_names, run.data.info), dump)
    except SETUP_ERRORS as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"dump {dump}: " + ", ".join(f"{name} {len(split)}" for name, split in splits.items()))
    return 0
