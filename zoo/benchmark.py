"""Weight-space learning baselines on a zoo (`zoo benchmark`): per-tensor statistics of every checkpoint (Unterthiner
et al. 2020) fed to gradient boosting, cross-validated by member (GroupKFold: a member's checkpoints are never in
both train and test), predicting a checkpoint's test accuracy or a member's generating factor."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from zoo import layout
from zoo.evaluation import is_classifier
from zoo.weights import QUANTILES, Reader, shared_keys, tensor_stats

MIN_BENCHMARK_MEMBERS = 4
TASKS = ("predict-accuracy", "predict-factor")


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


def _benchmark_members(zoo_dir: Path, task: str, factor: str | None) -> tuple[list[layout.MemberInfo], str]:
    members = [m for m in layout.scan_members(zoo_dir) if m.checkpoints]
    if task == "predict-accuracy":
        chosen = [m for m in members if m.stage == "finetuning" and is_classifier(m)]
        what = "finetuned classification members"
        if len(chosen) < MIN_BENCHMARK_MEMBERS:
            chosen = [m for m in members if is_classifier(m) and m.metric == "test_acc"]
            what = "classification members"
    else:
        chosen = [m for m in members if factor in m.factors]
        what = f"members with factor {factor!r}"
    by_modality: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in chosen:
        by_modality[member.modality].append(member)
    chosen = max(by_modality.values(), key=len, default=[])
    if len(chosen) < MIN_BENCHMARK_MEMBERS:
        raise BenchmarkError(f"{zoo_dir}: too few {what} for --task {task}: {len(chosen)}, need at least "
                             f"{MIN_BENCHMARK_MEMBERS} (a member is never in both train and test)")
    return chosen, what


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


def _cross_validate(task: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Out-of-fold predictions and (for accuracy) the train-mean baseline, by GroupKFold over members."""
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.model_selection import GroupKFold

    folds = min(5, len(set(groups)))
    predictions = np.empty(len(y), dtype=object if task == "predict-factor" else np.float64)
    baseline = np.empty_like(predictions)
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        assert not set(groups[train]) & set(groups[test])
        if task == "predict-accuracy":
            model = GradientBoostingRegressor(random_state=seed, n_estimators=100, max_depth=2)
            baseline[test] = y[train].mean()
        elif len(set(y[train])) < 2:
            predictions[test] = y[train][0]
            continue
        else:
            model = GradientBoostingClassifier(random_state=seed, n_estimators=100, max_depth=2)
        model.fit(x[train], y[train])
        predictions[test] = model.predict(x[test])
    return predictions, baseline, folds


def _default_factor(zoo_dir: Path) -> str:
    found = {key for m in layout.scan_members(zoo_dir) for key in m.factors}
    return next((f for f in ("optimizer", "optim") if f in found), "optimizer")


def benchmark(zoo_dir: str | Path, task: str = "predict-accuracy", factor: str | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Weight-statistics baselines, cross-validated by member: predict each checkpoint's test accuracy (R^2,
    Kendall's tau, against the train-mean baseline) or a member's generating factor (accuracy against the
    population's majority class)."""
    from scipy.stats import kendalltau
    from sklearn.metrics import accuracy_score, r2_score

    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise BenchmarkError(f"{zoo_dir}: not a folder")
    if task not in TASKS:
        raise BenchmarkError(f"unknown task {task!r}")
    if task == "predict-factor" and factor is None:
        factor = _default_factor(zoo_dir)
    members, what = _benchmark_members(zoo_dir, task, factor)
    x, rows, columns = checkpoint_features(members)
    keep, y = _targets(zoo_dir, task, factor, rows, what)
    x, groups = x[keep], np.asarray([row["member"] for row in rows])[keep]
    predictions, baseline, folds = _cross_validate(task, x, y, groups, seed)
    result: dict[str, Any] = {"task": task, "zoo": str(zoo_dir), "members": len(set(groups)),
                              "checkpoints": int(len(y)), "features": len(columns), "folds": folds,
                              "split": "GroupKFold by member", "model": "GradientBoosting", "seed": seed,
                              "population": what}
    if task == "predict-accuracy":
        tau = kendalltau(y, predictions.astype(np.float64)).statistic
        result.update({"target": "test_acc", "r2": float(r2_score(y, predictions.astype(np.float64))),
                       "kendall_tau": float(tau) if tau is not None and not np.isnan(tau) else 0.0,
                       "baseline_r2": float(r2_score(y, baseline.astype(np.float64)))})
    else:
        result.update({"target": factor, "classes": sorted(set(y.tolist())),
                       "accuracy": float(accuracy_score(y.astype(str), predictions.astype(str))),
                       "majority_accuracy": majority_accuracy(y)})
    return result


def cli_benchmark(args) -> int:
    result = benchmark(args.zoo_dir, args.task, args.factor, args.seed)
    keys = [k for k in ("task", "target", "population", "members", "checkpoints", "features", "folds", "model", "r2",
                        "kendall_tau", "baseline_r2", "accuracy", "majority_accuracy") if k in result]
    width = max(len(k) for k in keys)
    for key in keys:
        value = result[key]
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.out:
        layout.atomic_write_json(args.out, result)
        print(f"written to {args.out}", file=sys.stderr)
    return 0
