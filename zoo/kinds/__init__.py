"""Member kinds: the registry that says what each kind of zoo member is trained to do.

A kind (`vit-pretrain`, `lm-finetune`, `mlm-pretrain`, ...) is data: its modality and stage, the recipe script,
its default member prefix and name factors, its headline metric, how its data are prepared (`data`), what it is
trained on (`objective`, also the task its architecture family builds a model for), the architecture families it
trains (`zoo.families`; the first is the default, `architecture: <family>` picks another) and, when finetuning,
the kind its parents come from. Its `check` validates config values only. Preparing data (`zoo.data.prepare`),
building models (`zoo.models`) and objectives (`zoo.training`) look up what a kind names; no module outside this
registry and `zoo.families` compares kind, stage, modality or family names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo import families, layout
from zoo.arguments import ALIASES, DEFAULT_NAME_FACTORS, Arguments, ConfigError

MODALITIES = ("vision", "language")
PRETRAINING, FINETUNING = "pretraining", "finetuning"
STAGES = (PRETRAINING, FINETUNING)
LABELLED_OBJECTIVES = ("image_classification", "sequence_classification")
# Label counts of the embedded image sets, known before their data is read (planning checks MLP heads with them)
EMBEDDED_IMAGE_LABELS = {"embedded:digits": 10, "embedded:mnist5k": 10}


def is_pretraining(stage: str) -> bool:
    """A stage whose members start from their own initialisation."""
    return stage == PRETRAINING


def is_finetuning(stage: str) -> bool:
    """A stage whose members start from a parent of the pretraining stage (and live in its folder)."""
    return stage == FINETUNING


class KindError(ValueError):
    """An unknown member kind, or a config value a kind cannot accept."""


def check_mlp_head(hidden: int, num_labels: int) -> None:
    """An MLP head's hidden size must differ from the number of labels: its hidden layer is saved as
    `classifier.weight` (see `zoo.models.MLPHead`), and with equal sizes stock loaders would take it for a linear
    head without complaint instead of refusing the checkpoint."""
    if hidden == num_labels:
        raise KindError(f"head_hidden_size {hidden} equals the number of labels: the MLP head's hidden layer "
                        "(classifier.weight) would load into stock classifiers as a linear head; choose another "
                        "head_hidden_size")


@dataclass(frozen=True)
class MemberKind:
    name: str  # the recipe kind, e.g. "vit-pretrain"
    modality: str
    stage: str
    script: str  # recipes/<script>
    prefix: str  # default member-name prefix; `{architecture}` becomes the family's name
    data: str  # how its data are prepared (zoo.data.prepare): images, lm_blocks, text_classification
    objective: str  # what it trains on (zoo.training), and the task its family builds a model for
    family_tasks: tuple[str, ...]  # a family it trains has models for these tasks (zoo.families)
    default_family: str
    default_dataset: str
    name_factors: tuple[str, ...] = DEFAULT_NAME_FACTORS
    metric: str = "test_acc"  # headline metric (a result.json key)
    parent_kind: str | None = None  # finetuning: the kind whose members are parents
    perplexity: bool = False  # result.json also reports train/test perplexity
    padding_side: str = "right"  # of a saved tokenizer: "left" where the model generates
    heads: bool = False  # takes `head` / `head_hidden_size` (a new classifier head on a vision backbone)
    defaults: dict[str, Any] = field(default_factory=dict)  # config defaults under the config file

    @property
    def from_parent(self) -> bool:
        return is_finetuning(self.stage)

    @property
    def families(self) -> tuple[str, ...]:
        """The architecture families it trains: its default, then every other family with its tasks."""
        return tuple(dict.fromkeys([self.default_family, *families.with_tasks(self.family_tasks)]))

    @property
    def parent_model_types(self) -> tuple[str, ...]:
        """The `model_type` a parent checkpoint may have."""
        return tuple(families.get(name).model_type for name in self.families)

    def objective_for(self, args: Arguments) -> str:
        return self.objective

    def predicts_labels(self, args: Arguments) -> bool:
        """Whether its model outputs the data's labels (a new model gets them in its config)."""
        return self.objective_for(args) in LABELLED_OBJECTIVES

    def model_kwargs(self, args: Arguments) -> dict[str, Any]:
        """Extra arguments of the training model's class (a training wrapper's, e.g. a projection size)."""
        return {}

    def member_kind(self, args: Arguments) -> str:
        """The `kind` recorded in a member's config.json (a variant of the recipe kind, e.g. vit-contrastive)."""
        return self.name

    def member_kinds(self) -> tuple[str, ...]:
        """Every value `member_kind` can return."""
        return (self.name,)

    def default_prefix(self, args: Arguments) -> str:
        return self.prefix.format(architecture=self.family_name(args))

    def default_name_factors(self) -> list[str]:
        return list(self.defaults.get("name_factors") or self.name_factors)

    def family_name(self, args: Arguments) -> str:
        """The architecture family a member of this kind is built with (a finetuned member's is its parent's)."""
        name = args.model.architecture or self.default_family
        if name not in self.families:
            raise KindError(f"architecture {name!r}: {self.name} trains {', '.join(self.families)}")
        return name

    def family(self, args: Arguments) -> families.Family:
        return families.get(self.family_name(args))

    def check(self, args: Arguments) -> None:
        """Config checks of this kind; run when planning a zoo (no data, no parent) and by recipes."""
        family = self.family(args)
        if not self.from_parent:  # a finetuned member's model arguments are its parent's
            family.check(args.model)
        if self.heads and args.zoo.head == "mlp":
            labels = None if args.data.dataset_dump else EMBEDDED_IMAGE_LABELS.get(args.data.dataset
                                                                                   or self.default_dataset)
            if labels is not None:
                check_mlp_head(args.zoo.head_hidden_size, labels)


@dataclass(frozen=True)
class ViTPretrain(MemberKind):
    """Supervised (label smoothing, mixup, cutmix, random erasing) or SimCLR pretraining."""

    MODES = ("supervised", "contrastive")
    OBJECTIVES = {"supervised": "image_classification", "contrastive": "contrastive"}

    def objective_for(self, args):
        return self.OBJECTIVES[args.zoo.mode]

    def model_kwargs(self, args):
        return {"projection_dim": args.zoo.projection_dim} if args.zoo.mode == "contrastive" else {}

    def member_kind(self, args):
        return f"vit-{args.zoo.mode}"

    def member_kinds(self):
        return tuple(f"vit-{mode}" for mode in self.MODES)

    def default_prefix(self, args):
        return ("sl_" if args.zoo.mode == "supervised" else "ssl_") + self.family_name(args)

    def check(self, args):
        super().check(args)
        model = args.model
        if args.zoo.mode not in self.MODES:
            raise KindError(f"mode {args.zoo.mode!r} is not one of {', '.join(self.MODES)}")
        if model.image_size % model.patch_size:
            raise KindError(f"image_size {model.image_size} is not a multiple of patch_size {model.patch_size}")


@dataclass(frozen=True)
class MaskedLMPretrain(MemberKind):
    def check(self, args):
        super().check(args)
        if not 0.0 < args.zoo.mlm_probability < 1.0:
            raise KindError(f"mlm_probability must be between 0 and 1, got {args.zoo.mlm_probability}")


REGISTRY: dict[str, MemberKind] = {}


def register(kind: MemberKind) -> MemberKind:
    if kind.modality not in MODALITIES or kind.stage not in STAGES:
        raise KindError(f"kind {kind.name!r}: modality/stage must be in {MODALITIES}/{STAGES}")
    REGISTRY[kind.name] = kind
    return kind


_FINETUNE_FACTORS = ("optimizer", "learning_rate", "seed")
_LM_FACTORS = ("seed", "learning_rate", "weight_decay")
_CLASSIFY = "sequence_classification"
for _kind in (
    ViTPretrain("vit-pretrain", "vision", PRETRAINING, "pretrain_vit.py", "sl_{architecture}", "images",
                "image_classification", ("image_classification", "contrastive"), "vit", "embedded:mnist5k"),
    MemberKind("vit-finetune", "vision", FINETUNING, "finetune_vit.py", "ft_{architecture}", "images",
               "image_classification", ("image_classification", "backbone"), "vit", "embedded:digits",
               name_factors=("head", *_FINETUNE_FACTORS), parent_kind="vit-pretrain", heads=True),
    MemberKind("lm-pretrain", "language", PRETRAINING, "pretrain_lm.py", "lm_{architecture}", "lm_blocks",
               "causal_lm", ("causal_lm",), "gpt2", "embedded:bbcnews", name_factors=_LM_FACTORS,
               metric="test_perplexity", perplexity=True, padding_side="left"),
    MemberKind("lm-finetune", "language", FINETUNING, "finetune_lm.py", "ft_{architecture}", "text_classification",
               _CLASSIFY, ("causal_lm", _CLASSIFY), "gpt2", "embedded:rotten_tomatoes",
               name_factors=_FINETUNE_FACTORS, parent_kind="lm-pretrain"),
    MaskedLMPretrain("mlm-pretrain", "language", PRETRAINING, "pretrain_mlm.py", "mlm_{architecture}", "lm_blocks",
                     "masked_lm", ("masked_lm",), "bert", "embedded:bbcnews", name_factors=_LM_FACTORS,
                     metric="test_perplexity", perplexity=True),
    MemberKind("mlm-finetune", "language", FINETUNING, "finetune_mlm.py", "ft_{architecture}", "text_classification",
               _CLASSIFY, ("masked_lm", _CLASSIFY), "bert", "embedded:rotten_tomatoes",
               name_factors=_FINETUNE_FACTORS, parent_kind="mlm-pretrain"),
):
    register(_kind)


def get(name: str) -> MemberKind:
    """The kind called `name` (a recipe kind such as `lm-pretrain`, or a member's recorded kind)."""
    if name in REGISTRY:
        return REGISTRY[name]
    for kind in REGISTRY.values():
        if name in kind.member_kinds():
            return kind
    raise KindError(f"kind {name!r} is not one of {', '.join(REGISTRY)}")


def names() -> list[str]:
    return list(REGISTRY)


def default_for(modality: str, stage: str) -> MemberKind:
    """The kind a spec stage uses when it names no recipe: the first registered for the modality and stage."""
    for kind in REGISTRY.values():
        if kind.modality == modality and kind.stage == stage:
            return kind
    raise KindError(f"no member kind for {modality}/{stage}")


def of_member(config: dict[str, Any]) -> MemberKind | None:
    """The kind of a member from its config.json (None for members of kinds this installation lacks)."""
    try:
        return get(str(config.get("kind")))
    except KindError:
        return None


def check_common(kind: MemberKind, args: Arguments) -> None:
    """Every check of a member's config: the argument groups' own, then the kind's. Run when planning (every grid
    point) and by recipes."""
    args.check()
    try:
        kind.check(args)
    except (KindError, families.FamilyError) as err:
        raise ConfigError(str(err)) from None


def kind_defaults(kind: MemberKind) -> dict[str, Any]:
    """Config defaults of a kind (under the config file): its name factors and any others it declares."""
    return {**kind.defaults, "name_factors": kind.default_name_factors()}


def member_name(kind: MemberKind, args: Arguments) -> str:
    """The member's folder name: its prefix (`{architecture}` in it becomes the family's name) and the values of its
    `name_factors`, shortened by `ALIASES`: sl_vit_tiny_seed_42_lr_0.001."""
    flat = args.flat()
    prefix = (args.zoo.member_prefix or kind.default_prefix(args)).replace("{architecture}", kind.family_name(args))
    return layout.member_name(prefix, {ALIASES.get(k, k): flat[k] for k in args.zoo.name_factors})
