"""Predict a checkpoint's test accuracy from its weights, and compare with `zoo benchmark`'s statistics baseline.

Usage: python recipes/weightspace_predict_accuracy.py ZOO_DIR [--epochs N] [--seed S]

Trains an MLP on the flat weights of the members of the most common tensor layout and a small transformer on the
weight tokens of the members of every layout, on the zoo's train split (assigned with the defaults, and written to
splits.json, when the zoo has none), and prints R² and Kendall's tau on its test split next to
`zoo benchmark --task predict-accuracy` (per-tensor statistics and gradient boosting, cross-validated by member).
The models and the training live in `zoo.weightspace.predict`; docs/weightspace.md shows a run.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from zoo.studies.benchmark import BenchmarkError, benchmark  # noqa: E402
from zoo.weightspace import WeightSpaceError  # noqa: E402
from zoo.weightspace.predict import (  # noqa: E402
    FLAT_PREDICTOR,
    TOKENS_PREDICTOR,
    TrainingSettings,
    predict_from_flat,
    predict_from_tokens,
)

COLUMNS = ("predictor", "trained on", "scored on", "R²", "Kendall tau", "train-mean R²")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("zoo_dir", metavar="ZOO_DIR", help="a zoo folder")
    parser.add_argument("--epochs", type=int, default=TrainingSettings.epochs, help="training epochs per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and windows")
    return parser.parse_args(argv)


def _counts(members: int, checkpoints: int) -> str:
    return f"{members} members, {checkpoints} checkpoints"


def model_rows(args: argparse.Namespace) -> tuple[list[tuple[str, ...]], list[str]]:
    """Table rows and population lines of the two models trained on weights."""
    settings = TrainingSettings(epochs=args.epochs, seed=args.seed)
    rows, notes = [], []
    for name, run in ((FLAT_PREDICTOR, predict_from_flat), (TOKENS_PREDICTOR, predict_from_tokens)):
        try:
            result = run(args.zoo_dir, settings)
        except WeightSpaceError as err:
            rows.append((name, "-", "-", "-", "-", "-"))
            notes.append(f"{name}: not run: {err}")
            continue
        rows.append((name, _counts(result.members["train"], result.checkpoints["train"]),
                     f"test split: {_counts(result.members['test'], result.checkpoints['test'])}",
                     f"{result.r2:.3f}", f"{result.kendall_tau:.3f}", f"{result.train_mean_r2:.3f}"))
        notes.append(f"{name}: {result.population}")
    return rows, notes


def baseline_rows(args: argparse.Namespace) -> tuple[list[tuple[str, ...]], list[str]]:
    """The row and population line of `zoo benchmark --task predict-accuracy` on the same zoo and seed."""
    name = "zoo benchmark statistics"
    try:
        result = benchmark(args.zoo_dir, "predict-accuracy", seed=args.seed)
    except BenchmarkError as err:
        return [(name, "-", "-", "-", "-", "-")], [f"{name}: not run: {err}"]
    row = (name, f"{_counts(result['members'], result['checkpoints'])} in all", "split below",
           f"{result['r2']:.3f}", f"{result['kendall_tau']:.3f}", f"{result['baseline_r2']:.3f}")
    return [row], [f"{name}: {result['population']}, {result['modality']} ({', '.join(result['kinds'])}); "
                   f"{result['features']} features, {result['model']}; split: {result['split']} "
                   f"({result['folds']} fold{'s' if result['folds'] != 1 else ''})"]


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[index]) for row in (COLUMNS, *rows)) for index in range(len(COLUMNS))]
    for row in (COLUMNS, *rows):
        print("  ".join(cell.ljust(width) if index < 3 else cell.rjust(width)
                        for index, (cell, width) in enumerate(zip(row, widths))).rstrip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.zoo_dir).is_dir():
        print(f"{args.zoo_dir}: not a zoo folder", file=sys.stderr)
        return 2
    rows, notes = model_rows(args)
    baseline, baseline_notes = baseline_rows(args)
    epochs = f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}"
    print(f"test accuracy predicted from weights: {args.zoo_dir} (seed {args.seed}, {epochs})")
    print_table(rows + baseline)
    for note in notes + baseline_notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
