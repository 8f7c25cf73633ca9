"""Member kinds: the one place that says what differs between the kinds of zoo members.

A kind (`vit-pretrain`, `lm-finetune`, `mlm-pretrain`, ...) declares its modality and stage, its default member
prefix and name factors, its headline metric, the kind its parents come from, and four behaviours: its config
checks, its data, its model and its objective. Recipes, populations, soups, analysis and publishing ask the
registry; no other module compares kind names. Heavy imports (torch, transformers, datasets) stay inside the
behaviours, so planning a zoo and `zoo status` stay fast.

Adding a family means adding its kinds here, its model builders in `zoo.models` and, when its loss is new, an
objective in `zoo.training` — see the masked-LM (BERT) kinds below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from zoo.runs import Arguments, MemberRun

MODALITIES = ("vision", "language")
PRETRAINING, FINETUNING = "pretraining", "finetuning"
STAGES = (PRETRAINING, FINETUNING)
INIT_SCHEMES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "normal")
HEADS = ("linear", "mlp")
OPTIMIZERS = ("adamw", "sgd")
# Short names of factors in member names: sl_vit_tiny_seed_42_lr_0.001_wd_0.0001_bs_128
ALIASES = {"learning_rate": "lr", "weight_decay": "wd", "per_device_train_batch_size": "bs", "optimizer": "opt",
           "num_train_epochs": "ep", "label_smoothing": "ls", "temperature": "temp", "head_hidden_size": "hh",
           "freeze_encoder": "frozen", "hidden_dropout": "do", "mixup_alpha": "mixup", "cutmix_alpha": "cutmix",
           "random_erasing": "re", "mlm_probability": "mlm"}
DEFAULT_NAME_FACTORS = ("seed", "learning_rate", "weight_decay", "per_device_train_batch_size")


def is_pretraining(stage: str) -> bool:
    """A stage whose members start from their own initialisation."""
    return stage == PRETRAINING


def is_finetuning(stage: str) -> bool:
    """A stage whose members start from a parent of the pretraining stage (and live in its folder)."""
    return stage == FINETUNING


class KindError(ValueError):
    """An unknown member kind, or a config value a kind cannot accept."""


# Label counts of the embedded image sets, known before their data is read (planning checks MLP heads with them)
EMBEDDED_IMAGE_LABELS = {"embedded:digits": 10, "embedded:mnist5k": 10}


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
    """What one kind of member is; subclasses implement the behaviours."""

    name: str  # the recipe kind, e.g. "vit-pretrain"
    modality: str
    stage: str
    script: str  # recipes/<script>
    prefix: str  # default member-name prefix
    name_factors: tuple[str, ...] = DEFAULT_NAME_FACTORS
    metric: str = "test_acc"  # headline metric (a result.json key)
    parent_kind: str | None = None  # finetuning: the kind whose members are parents
    parent_model_types: tuple[str, ...] = ()  # finetuning: the checkpoint model_type a parent must have
    # saved model classes whose members predict labels that can be compared (soups, behaviour analysis)
    classifier_architectures: tuple[str, ...] = ()
    # saved bare backbones whose last hidden state is a representation (behaviour comparisons use them)
    backbone_architectures: tuple[str, ...] = ()
    # the module of a classifier whose input is the member's representation (hooked to read features)
    head_modules: tuple[str, ...] = ()
    # prefixes of parameter names that wrap the shared backbone (`vit.encoder...` ~ `encoder...`)
    backbone_prefixes: tuple[str, ...] = ()
    # prefixes (after the wrapper) of task-head parameters, not comparable across tasks
    head_prefixes: tuple[str, ...] = ()
    perplexity: bool = False  # result.json also reports train/test perplexity
    defaults: dict[str, Any] = field(default_factory=dict)  # config defaults under the config file

    # ---------------------------------------------------------------- names

    def member_kind(self, args: Arguments) -> str:
        """The `kind` recorded in a member's config.json (a variant of the recipe kind, e.g. vit-contrastive)."""
        return self.name

    def member_kinds(self) -> tuple[str, ...]:
        """Every value `member_kind` can return."""
        return (self.name,)

    def default_prefix(self, args: Arguments) -> str:
        return self.prefix

    def default_name_factors(self) -> list[str]:
        return list(self.defaults.get("name_factors") or self.name_factors)

    # ---------------------------------------------------------------- behaviours

    def check(self, args: Arguments) -> None:
        """Config checks beyond the common ones; run when planning a zoo (no data, no parent) and by recipes."""

    def prepare_data(self, run: MemberRun):
        """The member's `TaskData`; may set `run.processing_class`, `run.collator`, `run.eval_collator`."""
        raise NotImplementedError

    def build_model(self, run: MemberRun, args: Arguments):
        raise NotImplementedError

    def objective(self, run: MemberRun, args: Arguments):
        raise NotImplementedError

    def dump_splits(self, splits):
        """Splits as a dump stores them (`recipes/prepare_data.py`)."""
        return splits


# ---------------------------------------------------------------- helpers shared by kinds


def _check_parent(run: MemberRun) -> dict[str, Any]:
    from zoo.models import read_checkpoint_config

    kind = run.kind
    config = read_checkpoint_config(run.args.zoo.pretrained, kind.parent_model_types, kind.script)
    run.parent = run.parent_info(run.args.zoo.pretrained)
    return config


def _image_processor(run: MemberRun, image_size: int, channels: int, info: dict[str, Any]):
    """The checkpoint's image processor: what evaluation does to an image, for `pipeline("image-classification")`
    on raw images. Grayscale or RGB -> the model's channels (`do_convert_rgb` copies gray into RGB, as training
    does; a 1-channel model takes grayscale images), resized to the model's size with the filter the data path used
    (bilinear for the embedded sets and for images stored below the model's size, which evaluation upsamples
    bilinearly; bicubic where Hub images were resized when decoded), scaled to [0, 1], normalised with the
    training mean/std."""
    try:  # transformers 5: the PIL/numpy processor (the default one needs torchvision)
        from transformers import ViTImageProcessorPil as ViTImageProcessor
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import ViTImageProcessor
    from PIL import Image

    data_args = run.args.data
    decoded_at_size = (not str(info.get("source", "")).startswith("embedded:")
                       and info.get("stored_size", image_size) >= image_size)
    resample = Image.Resampling.BICUBIC if decoded_at_size else Image.Resampling.BILINEAR
    return ViTImageProcessor(size={"height": image_size, "width": image_size}, resample=resample,
                             do_convert_rgb=channels == 3, image_mean=[data_args.image_mean] * channels,
                             image_std=[data_args.image_std] * channels)


def _fit_tokenizer(tokenizer, max_length: int, padding_side: str) -> None:
    """Make the tokenizer saved with every checkpoint of a language member describe its model, for stock
    `pipeline(...)`: `truncation=True` cuts at the length the model was trained and evaluated at (never beyond its
    positions: a tokenizer trained here says 1,000,000), padding goes on the side its task needs, with a pad token."""
    tokenizer.model_max_length = max_length
    tokenizer.padding_side = padding_side
    tokenizer.init_kwargs["padding_side"] = padding_side  # saved with tokenizer_config.json only as an init kwarg
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _decode_images(splits):
    """Hub images are decoded lazily: materialise them as uint8 arrays for a dump."""
    import numpy as np

    columns = list(next(iter(splits.values())).column_names)
    return splits.map(lambda batch: {k: np.asarray(v) for k, v in batch.items()}, batched=True,
                      remove_columns=columns, desc="decoding")


# ---------------------------------------------------------------- vision


@dataclass(frozen=True)
class _VisionKind(MemberKind):
    classifier_architectures: tuple[str, ...] = ("ViTForImageClassification",)
    backbone_architectures: tuple[str, ...] = ("ViTModel",)  # a SimCLR member saves its backbone only
    head_modules: tuple[str, ...] = ("classifier",)
    backbone_prefixes: tuple[str, ...] = ("vit.",)
    head_prefixes: tuple[str, ...] = ("classifier", "pooler")

    def dump_splits(self, splits):
        return _decode_images(splits)

    def _images(self, run: MemberRun, image_size: int, channels: int, default: str):
        from zoo.data import DataError, load_images

        # Hub and local image sets are decoded once per zoo (or output folder), for all its members
        data = load_images(run.args.data, image_size, channels, default, cache_root=run.root / ".cache")
        if not data.label_names:
            raise DataError("the image data set has no labels")
        run.image_size, run.channels = image_size, channels
        run.processing_class = _image_processor(run, image_size, channels, data.info)
        return data


@dataclass(frozen=True)
class ViTPretrain(_VisionKind):
    """Supervised (label smoothing, mixup, cutmix, random erasing) or SimCLR pretraining of a stock ViT."""

    MODES = ("supervised", "contrastive")

    def member_kind(self, args):
        return f"vit-{args.zoo.mode}"

    def member_kinds(self):
        return tuple(f"vit-{mode}" for mode in self.MODES)

    def default_prefix(self, args):
        return "sl_vit" if args.zoo.mode == "supervised" else "ssl_vit"

    def check(self, args):
        model = args.model
        if args.zoo.mode not in self.MODES:
            raise KindError(f"mode {args.zoo.mode!r} is not one of {', '.join(self.MODES)}")
        if model.image_size % model.patch_size:
            raise KindError(f"image_size {model.image_size} is not a multiple of patch_size {model.patch_size}")

    def prepare_data(self, run):
        model_args = run.args.model
        return self._images(run, model_args.image_size, model_args.num_channels, "embedded:mnist5k")

    def build_model(self, run, args):
        from zoo.models import build_vit

        return build_vit(args.model, args.zoo.mode, run.data.num_labels, run.data.label_names,
                         args.zoo.projection_dim)

    def objective(self, run, args):
        from zoo.training import Contrastive, ImageClassification

        data_args = args.data
        if args.zoo.mode == "contrastive":
            return Contrastive(args.zoo, run.image_size, run.channels, data_args.image_mean, data_args.image_std)
        return ImageClassification(args.zoo, run.image_size, run.data.num_labels, data_args.image_mean,
                                   data_args.image_std)


@dataclass(frozen=True)
class ViTFinetune(_VisionKind):
    """A new linear or MLP head on a pretrained ViT member."""

    DEFAULT_DATA = "embedded:digits"

    def check(self, args):
        labels = None if args.data.dataset_dump else EMBEDDED_IMAGE_LABELS.get(args.data.dataset or self.DEFAULT_DATA)
        if args.zoo.head == "mlp" and labels is not None:
            check_mlp_head(args.zoo.head_hidden_size, labels)

    def prepare_data(self, run):
        parent = _check_parent(run)
        data = self._images(run, parent["image_size"], parent["num_channels"], self.DEFAULT_DATA)
        if run.args.zoo.head == "mlp":
            check_mlp_head(run.args.zoo.head_hidden_size, data.num_labels)
        return data

    def build_model(self, run, args):
        from zoo.models import vit_for_finetuning

        zoo = args.zoo
        return vit_for_finetuning(zoo.pretrained, run.data.num_labels, run.data.label_names, zoo.head,
                                  zoo.head_hidden_size, zoo.freeze_encoder)

    def objective(self, run, args):
        from zoo.training import ImageClassification

        return ImageClassification(args.zoo, run.image_size, run.data.num_labels, args.data.image_mean,
                                   args.data.image_std)


# ---------------------------------------------------------------- language


@dataclass(frozen=True)
class _LanguagePretrain(MemberKind):
    """Pretraining on packed token blocks with a tokenizer trained on the corpus (offline) or from the Hub."""

    special_tokens: str = "gpt2"  # the tokenizer's special-token scheme (see zoo.data.tokenizer)
    padding_side: str = "right"  # of the saved tokenizer: "left" where the model generates (batched prompts)

    def prepare_data(self, run):
        from zoo.data import load_lm_blocks
        from zoo.data.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(run.args.data, run.args.model.vocab_size, run.root / ".cache",
                                    self.special_tokens)
        run.processing_class = tokenizer
        data = load_lm_blocks(run.args.data, tokenizer)
        # the model has block_size positions (build_gpt2, build_bert)
        _fit_tokenizer(tokenizer, run.args.data.block_size, self.padding_side)
        return data


@dataclass(frozen=True)
class _LanguageFinetune(MemberKind):
    """Text classification from a pretrained language member, with its tokenizer."""

    def prepare_data(self, run):
        from transformers import AutoTokenizer, DataCollatorWithPadding

        from zoo.arguments import ConfigError
        from zoo.data import load_text_classification

        parent = _check_parent(run)
        tokenizer = AutoTokenizer.from_pretrained(str(run.args.zoo.pretrained))
        positions = parent.get("n_positions") or parent.get("max_position_embeddings")
        if positions and run.args.data.max_length > positions:
            raise ConfigError(f"max_length {run.args.data.max_length} exceeds the parent's {positions} positions")
        # texts are cut at max_length in training and evaluation; the classifier pads on the right
        _fit_tokenizer(tokenizer, run.args.data.max_length, "right")
        run.processing_class = tokenizer
        run.collator = DataCollatorWithPadding(tokenizer)
        return load_text_classification(run.args.data, tokenizer)

    def objective(self, run, args):
        from zoo.training import SequenceClassification

        return SequenceClassification()


@dataclass(frozen=True)
class LMPretrain(_LanguagePretrain):
    """GPT-2-style causal LM."""

    padding_side: str = "left"

    def build_model(self, run, args):
        from zoo.models import build_gpt2

        return build_gpt2(args.model, run.processing_class, args.data.block_size)

    def objective(self, run, args):
        from zoo.training import CausalLM

        return CausalLM()


@dataclass(frozen=True)
class LMFinetune(_LanguageFinetune):
    """`GPT2ForSequenceClassification` from a causal-LM member."""

    def build_model(self, run, args):
        from zoo.models import gpt2_for_classification

        return gpt2_for_classification(args.zoo.pretrained, run.data.num_labels, run.data.label_names,
                                       run.processing_class, args.zoo.freeze_encoder, args.model.attn_implementation)


@dataclass(frozen=True)
class MLMPretrain(_LanguagePretrain):
    """BERT-style masked LM: `BertForMaskedLM`, `DataCollatorForLanguageModeling` masking, perplexity and
    masked-token accuracy. Evaluation masks with a fixed seed, so a checkpoint's test metrics are repeatable."""

    special_tokens: str = "bert"

    def check(self, args):
        if not 0.0 < args.zoo.mlm_probability < 1.0:
            raise KindError(f"mlm_probability must be between 0 and 1, got {args.zoo.mlm_probability}")

    def prepare_data(self, run):
        from transformers import DataCollatorForLanguageModeling

        data = super().prepare_data(run)
        tokenizer, probability = run.processing_class, run.args.zoo.mlm_probability
        run.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
        run.eval_collator = lambda: DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability,
                                                                    seed=1234)
        return data

    def build_model(self, run, args):
        from zoo.models import build_bert

        return build_bert(args.model, run.processing_class, args.data.block_size)

    def objective(self, run, args):
        from zoo.training import MaskedLM

        return MaskedLM()


@dataclass(frozen=True)
class MLMFinetune(_LanguageFinetune):
    """`BertForSequenceClassification` from a masked-LM member."""

    def build_model(self, run, args):
        from zoo.models import bert_for_classification

        return bert_for_classification(args.zoo.pretrained, run.data.num_labels, run.data.label_names,
                                       args.zoo.freeze_encoder, args.model.attn_implementation)


# ---------------------------------------------------------------- the registry

REGISTRY: dict[str, MemberKind] = {}


def register(kind: MemberKind) -> MemberKind:
    if kind.modality not in MODALITIES or kind.stage not in STAGES:
        raise KindError(f"kind {kind.name!r}: modality/stage must be in {MODALITIES}/{STAGES}")
    REGISTRY[kind.name] = kind
    return kind


for _kind in (
    ViTPretrain("vit-pretrain", "vision", "pretraining", "pretrain_vit.py", "sl_vit"),
    ViTFinetune("vit-finetune", "vision", "finetuning", "finetune_vit.py", "ft_vit",
                name_factors=("head", "optimizer", "learning_rate", "seed"), parent_kind="vit-pretrain",
                parent_model_types=("vit",)),
    LMPretrain("lm-pretrain", "language", "pretraining", "pretrain_lm.py", "lm_gpt2",
               name_factors=("seed", "learning_rate", "weight_decay"), metric="test_perplexity", perplexity=True,
               backbone_prefixes=("transformer.",), head_prefixes=("lm_head",)),
    LMFinetune("lm-finetune", "language", "finetuning", "finetune_lm.py", "ft_gpt2",
               name_factors=("optimizer", "learning_rate", "seed"), parent_kind="lm-pretrain",
               parent_model_types=("gpt2",), classifier_architectures=("GPT2ForSequenceClassification",),
               head_modules=("score",), backbone_prefixes=("transformer.",), head_prefixes=("score",)),
    MLMPretrain("mlm-pretrain", "language", "pretraining", "pretrain_mlm.py", "mlm_bert",
                name_factors=("seed", "learning_rate", "weight_decay"), metric="test_perplexity", perplexity=True,
                backbone_prefixes=("bert.",), head_prefixes=("cls.", "pooler")),
    MLMFinetune("mlm-finetune", "language", "finetuning", "finetune_mlm.py", "ft_bert",
                name_factors=("optimizer", "learning_rate", "seed"), parent_kind="mlm-pretrain",
                parent_model_types=("bert",), classifier_architectures=("BertForSequenceClassification",),
                head_modules=("classifier",), backbone_prefixes=("bert.",), head_prefixes=("classifier", "pooler")),
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


def classifier_architectures() -> tuple[str, ...]:
    return _union("classifier_architectures")


def _union(field_name: str) -> tuple[str, ...]:
    """A per-kind tuple field, gathered over every registered kind (first-seen order, no repeats)."""
    return tuple(dict.fromkeys(item for kind in REGISTRY.values() for item in getattr(kind, field_name)))


def backbone_architectures() -> tuple[str, ...]:
    return _union("backbone_architectures")


def head_modules() -> tuple[str, ...]:
    return _union("head_modules")


def backbone_prefixes() -> tuple[str, ...]:
    return _union("backbone_prefixes")


def head_prefixes() -> tuple[str, ...]:
    return _union("head_prefixes")


def check_common(kind: MemberKind, args: Arguments) -> None:
    """Checks every kind shares, run when planning (every grid point) and by recipes."""
    from zoo.arguments import ConfigError

    zoo, model, training = args.zoo, args.model, args.training
    if zoo.head not in HEADS:
        raise ConfigError(f"head {zoo.head!r} is not one of {', '.join(HEADS)}")
    if zoo.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {zoo.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if model.init not in INIT_SCHEMES:
        raise ConfigError(f"init {model.init!r} is not one of {', '.join(INIT_SCHEMES)}")
    if model.hidden_size % model.num_attention_heads:
        raise ConfigError(f"hidden_size {model.hidden_size} is not a multiple of num_attention_heads "
                          f"{model.num_attention_heads}")
    if zoo.checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be >= 1, got {zoo.checkpoint_every}")
    epochs = training.num_train_epochs
    if epochs != int(epochs) or epochs < 1:
        raise ConfigError(f"num_train_epochs must be a whole number >= 1, got {epochs}")
    if training.learning_rate <= 0:
        raise ConfigError(f"learning_rate must be > 0, got {training.learning_rate}")
    flat = args.flat()
    for key in zoo.name_factors:
        if key not in flat:
            raise ConfigError(f"name_factors: unknown config key {key!r}")
    try:
        kind.check(args)
    except KindError as err:
        raise ConfigError(str(err)) from None
