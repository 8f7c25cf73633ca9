"""Weight-space learning baselines on a zoo (`zoo benchmark`): per-tensor statistics of every checkpoint (Unterthiner
et al. 2020) fed to gradient boosting, predicting a checkpoint's test accuracy or a member's generating factor.

Members are split as the zoo fixes it when it has a `splits.json` (written by `zoo.weightspace.assign_splits`:
trained on the train and validation members, scored on the test members; members it does not record are left out),
else cross-validated by member (GroupKFold). Either way a member's checkpoints are never in both train and test.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo import kinds, layout
from zoo.layout.splits import SPLITS_FILE
from zoo.studies.evaluation import is_classifier
from zoo.studies.weights import QUANTILES, Reader, shared_keys, tensor_stats

MIN_BENCHMARK_MEMBERS = 4

CROSS_VALIDATED = "GroupKFold by member"
TASKS = ("predict-accuracy", "predict-factor")
DEFAULT_FACTORS = ("optimizer", "optim")  # the first found is --factor's default


class BenchmarkError(ValueError):
    """Bad benchmark input: not a zoo, too few members, nothing to predict."""


def checkpoint_features(members: list[layout.MemberInfo]) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    """Per-tensor statistics of every checkpoint of `members` over the tensors they all share: (X, rows, columns).
    Checkpoints are read one at a time, one tensor at a time."""
    from tqdm.auto import tqdm

    checkpoints = [m.checkpoint_dir(e) for m in members for e in m.checkpoints]
    keys = shared_keys(checkpoints)
    if not keys:
        raise BenchmarkError("the members share no parameter tensor to compute statistics on")
    stat_names = ["mean", "std", *[f"q{int(q * 100)}" for q in QUANTILES]]
    columns = [f"{key}:{stat}" for key in keys for stat in stat_names]
    features, rows = [], []
    for member in tqdm(members, desc="weight statistics", leave=False, disable=len(members) < 4):
        results = {int(r["epoch"]): r for r in member.results}
        for epoch in member.checkpoints:
            reader = Reader([member.checkpoint_dir(epoch)])
            features.append([s for key in keys for s in tensor_stats(reader.get(0, key))])
            rows.append({"member": member.relpath, "epoch": epoch, **(results.get(epoch) or {}),
                         "factors": member.factors})
    return np.asarray(features, dtype=np.float64), rows, columns


def _kind(member: layout.MemberInfo) -> str:
    return str(member.config.get("kind") or "?")


def unknown_choice(option: str, value: str, choices: list[str], plural: str) -> BenchmarkError:
    """The one-line error of an unknown option value: the closest choice (difflib) and every choice."""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return BenchmarkError(f"unknown {option} {value!r}: {hint}available {plural}: {', '.join(choices) or 'none'}")


@dataclass
class Population:
    """The members a benchmark runs on, and why these: one modality, the stages and kinds they span."""

    members: list[layout.MemberInfo]
    what: str  # e.g. "finetuned classification members"
    modality: str | None
    why: list[str]  # the reasons of the choice, one per choice made
    factor: str | None = None  # predict-factor: the factor predicted

    @property
    def stages(self) -> list[str]:
        return [s for s in kinds.STAGES if any(m.stage == s for m in self.members)]

    @property
    def kinds(self) -> list[str]:
        return sorted({_kind(m) for m in self.members})

    def describe(self) -> str:
        kind_names = ", ".join(self.kinds)
        return (f"{len(self.members)} {self.what}: {self.modality or 'no modality'} {' + '.join(self.stages)}"
                + (f" (kind {kind_names})" if kind_names else ""))


def _filtered(members: list[layout.MemberInfo], modality: str | None, stage: str | None, kind: str | None
              ) -> list[layout.MemberInfo]:
    """The members of the chosen modality, stage and kind (None or 'all': any); unknown values are refused."""
    if modality is not None and modality not in kinds.MODALITIES:
        raise unknown_choice("--modality", modality, list(kinds.MODALITIES), "modalities")
    if stage not in (None, "all", *kinds.STAGES):
        raise unknown_choice("--stage", str(stage), [*kinds.STAGES, "all"], "stages")
    zoo_kinds = sorted({_kind(m) for m in members})
    if kind is not None and kind not in zoo_kinds:
        raise unknown_choice("--kind", kind, zoo_kinds, "kinds in this zoo")
    return [m for m in members if modality in (None, m.modality) and stage in (None, "all", m.stage)
            and kind in (None, _kind(m))]


def _largest_modality(members: list[layout.MemberInfo]) -> int:
    counts = [sum(m.modality == modality for m in members) for modality in kinds.MODALITIES]
    return max(counts, default=0)


def _task_members(members: list[layout.MemberInfo], task: str, factor: str | None, stage: str | None
                  ) -> tuple[list[layout.MemberInfo], str]:
    """The members a task can use and what they are: predict-accuracy takes finetuned classifiers unless --stage
    says otherwise or no modality has enough of them, then every classifier reporting test_acc."""
    if task == "predict-factor":
        return [m for m in members if factor in m.factors], f"members with factor {factor!r}"
    classifiers = [m for m in members if is_classifier(m)]
    finetuned = [m for m in classifiers if kinds.is_finetuning(m.stage)]
    if stage is None:
        use_finetuned = _largest_modality(finetuned) >= MIN_BENCHMARK_MEMBERS
    else:
        use_finetuned = kinds.is_finetuning(stage)
    if use_finetuned:
        return finetuned, "finetuned classification members"
    return [m for m in classifiers if m.metric == "test_acc"], "classification members"


def _stage_reason(population: Population, task: str, stage: str | None) -> str | None:
    """Why these stages."""
    stages = population.stages
    if stage:
        return f"stage{'s' if len(stages) > 1 else ''} {' + '.join(stages) or stage}: chosen with --stage {stage}"
    if task == "predict-accuracy" and population.what.startswith("finetuned"):
        return "stage finetuning: finetuned members first; --stage all adds the pretrained classifiers"
    reason = (f"as no modality has {MIN_BENCHMARK_MEMBERS} finetuned classification members"
              if task == "predict-accuracy" else f"every stage with {population.what}")
    if len(stages) == 1:
        return f"stage {stages[0]}: {reason}"
    return f"stages {' + '.join(stages)} pooled: {reason}; choose one with --stage" if stages else None


def _check_factor(members: list[layout.MemberInfo], factor: str | None) -> str:
    """The factor to predict (default: DEFAULT_FACTORS), known to the members and varying among them."""
    factors = sorted({key for m in members for key in m.factors})
    option = "--factor" if factor else "--factor (the default)"
    factor = factor or _default_factor(members)
    if factor not in factors:
        raise unknown_choice(option, factor, factors, "factors of these members")
    return factor


def _pick_modality(members: list[layout.MemberInfo], modality: str | None, what: str) -> tuple[str | None, str]:
    """The modality to benchmark (weights of two modalities share nothing) and why it."""
    if modality is not None:
        return modality, f"modality {modality}: chosen with --modality"
    counts = {mod: n for mod in kinds.MODALITIES if (n := sum(m.modality == mod for m in members))}
    if not counts:
        return None, "no modality has any"
    best = max(counts, key=lambda mod: counts[mod])  # ties: the first in kinds.MODALITIES
    if len(counts) == 1:
        return best, f"modality {best}: the only one with {what}"
    seen = ", ".join(f"{mod} {n}" for mod, n in counts.items())
    return best, f"modality {best}: the one with the most {what} ({seen}); choose another with --modality"


def select_population(zoo_dir: str | Path, task: str, factor: str | None = None, modality: str | None = None,
                      stage: str | None = None, kind: str | None = None) -> Population:
    """The members a benchmark uses: those of `modality`, `stage` and `kind` (None: any) that the task can use, of
    one modality (the given one, else the one with the most such members). Raises BenchmarkError on unknown values
    and on too few members."""
    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise BenchmarkError(f"{zoo_dir}: not a folder")
    if task not in TASKS:
        raise unknown_choice("--task", task, list(TASKS), "tasks")
    members = _filtered([m for m in layout.scan_members(zoo_dir) if m.checkpoints], modality, stage, kind)
    if task == "predict-factor":
        factor = _check_factor(members, factor)
    chosen, what = _task_members(members, task, factor, stage)
    modality, modality_why = _pick_modality(chosen, modality, what)
    population = Population([m for m in chosen if m.modality == modality], what, modality, [modality_why], factor)
    population.why += [why for why in (_stage_reason(population, task, stage),
                                       f"kind {kind}: chosen with --kind" if kind else None) if why]
    if len(population.members) < MIN_BENCHMARK_MEMBERS:
        among = " ".join(value for value in (modality, stage if stage != "all" else None,
                                             f"kind {kind}" if kind else None) if value)
        raise BenchmarkError(f"{zoo_dir}: too few {what}{' among the ' + among + ' members' if among else ''} for "
                             f"--task {task}: {len(population.members)}, need at least {MIN_BENCHMARK_MEMBERS} (a "
                             "member is never in both train and test)")
    values = sorted({str(m.factors.get(factor)) for m in population.members})
    if task == "predict-factor" and len(values) < 2:  # refused before any weight is read
        raise BenchmarkError(f"{zoo_dir}: factor {factor!r} takes one value ({values[0]}) among the "
                             f"{population.describe()}; nothing to predict")
    return population


def majority_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always answering the most frequent class of the whole population: the chance level a factor
    classifier must beat (1/k for k balanced classes). A majority taken per grouped fold would fall below chance,
    since holding a member out leaves its class the minority of the training part."""
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / counts.sum()) if len(labels) else float("nan")


def _targets(zoo_dir: Path, task: str, factor: str | None, rows: list[dict[str, Any]], what: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the rows used, targets) for the task."""
    if task == "predict-accuracy":
        keep = np.asarray([isinstance(row.get("test_acc"), (int, float)) for row in rows])
        y = np.asarray([row["test_acc"] for row, k in zip(rows, keep) if k], dtype=np.float64)
        if len(y) < 2 * MIN_BENCHMARK_MEMBERS or len(np.unique(y)) < 2:
            raise BenchmarkError(f"{zoo_dir}: too few checkpoints with a test_acc ({len(y)}) or no variation to "
                                 "predict")
        return keep, y
    labels = np.asarray([str(row["factors"].get(factor)) for row in rows])
    if len(set(labels)) < 2:
        raise BenchmarkError(f"{zoo_dir}: factor {factor!r} takes one value ({labels[0]}) among the {what}; "
                             "nothing to predict")
    return np.ones(len(rows), dtype=bool), labels


@dataclass
class Evaluation:
    """Predictions of the scored checkpoints: their targets, the model's and the train-mean baseline's (accuracy
    only) predictions, the number of folds, and how members were split."""

    y: np.ndarray
    predictions: np.ndarray
    baseline: np.ndarray
    folds: int
    split: str


def recorded_splits(zoo_dir: Path) -> dict[str, str] | None:
    """member path -> split, as the zoo's splits.json records them; None when it has none."""
    try:
        recorded = layout.read_splits(zoo_dir)
    except layout.LayoutError as err:
        raise BenchmarkError(str(err)) from None
    return recorded.members if recorded is not None else None


def _fit_predict(task: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    """Gradient boosting fitted on the train rows, predicting the test rows (one class in train: that class)."""
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

    if task == "predict-accuracy":
        model = GradientBoostingRegressor(random_state=seed, n_estimators=100, max_depth=2)
    elif len(set(y_train)) < 2:
        return np.full(len(x_test), y_train[0], dtype=object)
    else:
        model = GradientBoostingClassifier(random_state=seed, n_estimators=100, max_depth=2)
    model.fit(x_train, y_train)
    return model.predict(x_test)


def _cross_validate(task: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int,
                    split: str = CROSS_VALIDATED) -> Evaluation:
    """Out-of-fold predictions and (for accuracy) the train-mean baseline, by GroupKFold over members."""
    from sklearn.model_selection import GroupKFold

    folds = min(5, len(set(groups)))
    predictions = np.empty(len(y), dtype=object if task == "predict-factor" else np.float64)
    baseline = np.empty_like(predictions)
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        assert not set(groups[train]) & set(groups[test])
        if task == "predict-accuracy":
            baseline[test] = y[train].mean()
        predictions[test] = _fit_predict(task, x[train], y[train], x[test], seed)
    return Evaluation(y, predictions, baseline, folds, split)


def _held_out(task: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, splits: dict[str, str],
              seed: int) -> Evaluation:
    """Trained on the train and validation members of the zoo's splits, scored on its test members; cross-validated
    (saying why) when these members leave too few on either side."""
    member_split = np.asarray([splits.get(member, "") for member in groups])
    train, test = np.isin(member_split, ("train", "validation")), member_split == "test"
    counts = f"train+validation members {len(set(groups[train]))}, test members {len(set(groups[test]))}"
    left_out = len(set(groups[~(train | test)]))
    counts += f", members not in it (left out) {left_out}" if left_out else ""
    if len(set(groups[train])) < 2 or test.sum() < 2:
        return _cross_validate(task, x, y, groups, seed, f"{CROSS_VALIDATED}: {SPLITS_FILE} leaves too few of "
                                                         f"these members to score ({counts})")
    predictions = _fit_predict(task, x[train], y[train], x[test], seed)
    baseline = np.full(int(test.sum()), y[train].mean() if task == "predict-accuracy" else None)
    return Evaluation(y[test], predictions, baseline, 1, f"{SPLITS_FILE}: {counts}")


def _default_factor(members: list[layout.MemberInfo]) -> str:
    found = {key for m in members for key in m.factors}
    return next((f for f in DEFAULT_FACTORS if f in found), DEFAULT_FACTORS[0])


def benchmark(zoo_dir: str | Path, task: str = "predict-accuracy", factor: str | None = None, seed: int = 0,
              modality: str | None = None, stage: str | None = None, kind: str | None = None,
              population: Population | None = None) -> dict[str, Any]:
    """Weight-statistics baselines, split by member (the zoo's splits.json, else GroupKFold): predict each
    checkpoint's test accuracy (R^2, Kendall's tau, against the train-mean baseline) or a member's generating factor
    (accuracy against the population's majority class), on the members `select_population` chooses (or
    `population`)."""
    zoo_dir = Path(zoo_dir)
    if population is None:
        population = select_population(zoo_dir, task, factor, modality, stage, kind)
    factor = population.factor
    x, rows, columns = checkpoint_features(population.members)
    keep, y = _targets(zoo_dir, task, factor, rows, population.what)
    x, groups = x[keep], np.asarray([row["member"] for row in rows])[keep]
    splits = recorded_splits(zoo_dir)
    scored = (_held_out(task, x, y, groups, splits, seed) if splits is not None
              else _cross_validate(task, x, y, groups, seed))
    result: dict[str, Any] = {"task": task, "zoo": str(zoo_dir), "modality": population.modality,
                              "stages": population.stages, "kinds": population.kinds, "why": population.why,
                              "members": len(set(groups)), "checkpoints": int(len(y)), "features": len(columns),
                              "folds": scored.folds, "split": scored.split, "model": "GradientBoosting",
                              "seed": seed, "population": population.what}
    result.update(_scores(task, factor, scored, y))
    return result


def _scores(task: str, factor: str | None, scored: Evaluation, y: np.ndarray) -> dict[str, Any]:
    """R^2 and Kendall's tau against the train-mean baseline (accuracy), or accuracy against the majority class of
    the population's targets `y` (factor)."""
    from scipy.stats import kendalltau
    from sklearn.metrics import accuracy_score, r2_score

    if task == "predict-accuracy":
        predictions = scored.predictions.astype(np.float64)
        tau = kendalltau(scored.y, predictions).statistic
        return {"target": "test_acc", "r2": float(r2_score(scored.y, predictions)),
                "kendall_tau": float(tau) if tau is not None and not np.isnan(tau) else 0.0,
                "baseline_r2": float(r2_score(scored.y, scored.baseline.astype(np.float64)))}
    return {"target": factor, "classes": sorted(set(y.tolist())),
            "accuracy": float(accuracy_score(scored.y.astype(str), scored.predictions.astype(str))),
            "majority_accuracy": majority_accuracy(y)}


def cli_benchmark(args) -> int:
    population = select_population(args.zoo_dir, args.task, args.factor, args.modality, args.stage, args.kind)
    print(f"benchmarking {population.describe()}")
    for reason in population.why:
        print(f"  {reason}")
    result = benchmark(args.zoo_dir, args.task, args.factor, args.seed, population=population)
    keys = [k for k in ("task", "target", "modality", "stages", "kinds", "population", "members", "checkpoints",
                        "features", "folds", "split", "model", "r2", "kendall_tau", "baseline_r2", "accuracy",
                        "majority_accuracy") if k in result]
    width = max(len(k) for k in keys)
    for key in keys:
        value = result[key]
        value = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.out:
        layout.atomic_write_json(args.out, result)
        print(f"written to {args.out}", file=sys.stderr)
    return 0
