"""Predicting a checkpoint's test accuracy from its weights: the members to learn from, training on the train split
of the zoo, and R² and Kendall's tau on its test split.

    settings = TrainingSettings(epochs=30, seed=0)
    flat = predict_from_flat("my-zoo", settings)      # FlatMLP on the members of the most common tensor layout
    tokens = predict_from_tokens("my-zoo", settings)  # TokenTransformer on the members of every layout
    print(flat.r2, flat.kendall_tau, tokens.r2, tokens.kendall_tau)

The members are those judged by the target (their config's `metric` is `test_acc`), complete, and every checkpoint
of theirs (`checkpoints="all"`) whose properties hold a number for the target. Weights are normalised per tensor
(`normalize=True`, statistics over the train split) and the target is standardised by its train mean and std.
Everything random (initialisation, dropout, batch order, token windows) follows `settings.seed`, so a run repeats
on the same machine. `predictors` holds the two models.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .collate import collate_flat, collate_tokens
from .dataset import WeightDataset
from .errors import WeightSpaceError
from .predictors import FlatMLP, TokenTransformer
from .sources import Source, SourceMember, as_source
from .splits import SplitAssignment
from .tensor_layout import TensorTable

TARGET = "test_acc"
FLAT_PREDICTOR = "MLP on flat weights"
TOKENS_PREDICTOR = "transformer on weight tokens"


@dataclass(frozen=True)
class TrainingSettings:
    """How a predictor is trained (AdamW on the mean squared error of the standardised target)."""

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0
    num_workers: int = 0


@dataclass
class Prediction:
    """A predictor's scores on the test split, and what it learnt from and was scored on."""

    predictor: str
    population: str
    members: dict[str, int]  # split -> members with a checkpoint in it
    checkpoints: dict[str, int]  # split -> checkpoints
    r2: float
    kendall_tau: float
    train_mean_r2: float  # R² of always predicting the train split's mean


class MemberSubset(Source):
    """The given members of a source, the others hidden; splits, files and caches are the source's own."""

    def __init__(self, source: Source, relpaths: list[str]):
        self.source, self.relpaths = source, frozenset(relpaths)

    def __str__(self) -> str:
        return f"{self.source} ({len(self.relpaths)} members)"

    def members(self) -> list[SourceMember]:
        return [member for member in self.source.members() if member.relpath in self.relpaths]

    def weights_file(self, relpath: str, epoch: int) -> Path:
        return self.source.weights_file(relpath, epoch)

    def location(self, relpath: str, epoch: int) -> str:
        return self.source.location(relpath, epoch)

    def splits(self, assign: bool) -> SplitAssignment | None:
        return self.source.splits(assign)

    def cache_dir(self) -> Path:
        return self.source.cache_dir()

    def table(self, relpath: str, epoch: int) -> TensorTable:
        return self.source.table(relpath, epoch)

    @contextmanager
    def open_weights(self, relpath: str, epoch: int) -> Iterator[Any]:
        with self.source.open_weights(relpath, epoch) as handle:
            yield handle


def judged_members(source: Source, target: str = TARGET) -> list[SourceMember]:
    """The complete members, with checkpoints, whose config names `target` as their metric."""
    return [member for member in source.members()
            if member.config.get("metric") == target and member.checkpoints and member.is_complete()]


def kinds_of(members: list[SourceMember]) -> str:
    return ", ".join(sorted({str(member.kind) for member in members}))


def flat_population(source: Source, target: str = TARGET) -> tuple[MemberSubset, str]:
    """The judged members of the most common tensor layout (the first found on a tie), and a description."""
    members = judged_members(source, target)
    tables = [source.table(member.relpath, member.checkpoints[-1]) for member in members]
    if not tables:
        raise WeightSpaceError(f"{source}: no complete member has {target} as its metric")
    table, _ = Counter(tables).most_common(1)[0]
    chosen = [member for member, other in zip(members, tables) if other == table]
    return (MemberSubset(source, [member.relpath for member in chosen]),
            f"{len(chosen)} members judged by {target}, of the most common tensor layout ({table.numel:,} weights; "
            f"{kinds_of(chosen)})")


def tokens_population(source: Source, target: str = TARGET) -> tuple[MemberSubset, str]:
    """Every judged member, whatever its layout, and a description."""
    members = judged_members(source, target)
    if not members:
        raise WeightSpaceError(f"{source}: no complete member has {target} as its metric")
    layouts = len({source.table(member.relpath, member.checkpoints[-1]) for member in members})
    return (MemberSubset(source, [member.relpath for member in members]),
            f"{len(members)} members judged by {target}, of {layouts} tensor layout{'s' if layouts > 1 else ''} "
            f"({kinds_of(members)})")


def _target_value(properties: dict[str, Any], target: str) -> float | None:
    value = properties.get(target)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def with_target(dataset: WeightDataset, target: str) -> Subset:
    """The dataset's items whose properties hold a number for `target`."""
    keep = [index for index, entry in enumerate(dataset.entries)
            if _target_value(entry.properties, target) is not None]
    if not keep:
        raise WeightSpaceError(f"{dataset.source}: no {dataset.split} checkpoint has a {target}")
    return Subset(dataset, keep)


def targets_of(subset: Subset, target: str) -> torch.Tensor:
    """The target of every item of the subset, read from the selection (no weights read)."""
    entries = subset.dataset.entries
    return torch.tensor([_target_value(entries[index].properties, target) for index in subset.indices])


def regression_scores(truth: torch.Tensor, predicted: torch.Tensor) -> tuple[float, float]:
    """(R², Kendall's tau) of predictions; tau is 0 where either side is constant (no ranking)."""
    from scipy.stats import kendalltau
    from sklearn.metrics import r2_score

    truth_np, predicted_np = truth.double().numpy(), predicted.double().numpy()
    r2 = float(r2_score(truth_np, predicted_np)) if len(truth_np) > 1 else math.nan
    tau = kendalltau(truth_np, predicted_np).statistic
    return r2, 0.0 if tau is None or math.isnan(tau) else float(tau)


def fit(model: nn.Module, loader: DataLoader, target: str, scale: tuple[float, float],
        settings: TrainingSettings, desc: str) -> None:
    """Train `model` for `settings.epochs` epochs on the standardised target (a tqdm bar over the epochs)."""
    from tqdm.auto import tqdm

    mean, std = scale
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    bar = tqdm(range(settings.epochs), desc=desc, unit="epoch")
    for _ in bar:
        model.train()
        total, count = 0.0, 0
        for batch in loader:
            truth = (torch.as_tensor(batch["properties"][target], dtype=torch.float32) - mean) / std
            loss = nn.functional.mse_loss(model(batch), truth)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(truth), count + len(truth)
        bar.set_postfix(loss=f"{total / count:.4f}")


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, scale: tuple[float, float]) -> torch.Tensor:
    """The model's predictions of every item, in loader order, on the target's own scale."""
    model.eval()
    mean, std = scale
    return torch.cat([model(batch) for batch in loader]) * std + mean


def members_in(subset: Subset) -> int:
    """The number of members with an item in the subset."""
    return len({subset.dataset.entries[index].relpath for index in subset.indices})


def train_and_score(name: str, population: tuple[Source, str], dataset_options: dict[str, Any],
                    make_model: Callable[[WeightDataset], nn.Module], collate: Callable,
                    settings: TrainingSettings, target: str = TARGET) -> Prediction:
    """Train a model on the train split of the population's checkpoints and score it on the test split."""
    source, description = population
    train, test = (with_target(WeightDataset(source, split=split, checkpoints="all", normalize=True,
                                             **dataset_options), target) for split in ("train", "test"))
    truth = targets_of(train, target)
    scale = (float(truth.mean()), float(truth.std()) if len(truth) > 1 and truth.std() > 0 else 1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = make_model(train.dataset)
        order = torch.Generator().manual_seed(settings.seed)
        loader = DataLoader(train, settings.batch_size, shuffle=True, generator=order, collate_fn=collate,
                            num_workers=settings.num_workers)
        fit(model, loader, target, scale, settings, name)
    evaluation = DataLoader(test, settings.batch_size, collate_fn=collate, num_workers=settings.num_workers)
    test_truth = targets_of(test, target)
    r2, tau = regression_scores(test_truth, predict(model, evaluation, scale))
    mean_r2, _ = regression_scores(test_truth, torch.full_like(test_truth, scale[0]))
    return Prediction(name, description, {"train": members_in(train), "test": members_in(test)},
                      {"train": len(train), "test": len(test)}, r2, tau, mean_r2)


def predict_from_flat(source: Source | str, settings: TrainingSettings | None = None, hidden: int = 64,
                      target: str = TARGET) -> Prediction:
    """A `FlatMLP` on the flat weights of the judged members of the most common tensor layout."""
    population = flat_population(as_source(source), target)
    return train_and_score(FLAT_PREDICTOR, population, {"format": "flat"},
                           lambda dataset: FlatMLP(dataset.table.numel, hidden), collate_flat,
                           settings or TrainingSettings(), target)


def predict_from_tokens(source: Source | str, settings: TrainingSettings | None = None, token_size: int = 64,
                        width: int = 64, window: int = 512, target: str = TARGET) -> Prediction:
    """A `TokenTransformer` on the weight tokens of every judged member, across architectures."""
    settings = settings or TrainingSettings()
    population = tokens_population(as_source(source), target)
    return train_and_score(TOKENS_PREDICTOR, population,
                           {"format": "tokens", "token_size": token_size},
                           lambda dataset: TokenTransformer(token_size, width, window=window, seed=settings.seed),
                           collate_tokens, settings, target)
