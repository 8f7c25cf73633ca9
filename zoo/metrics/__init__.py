"""The metrics a member may report, as `evaluate` modules shipped in this package and loaded by path (offline).

`eval_metrics` in a recipe config names them; any other name is a config error: `evaluate.load` of a Hub name
would download and run a script from the Hub.
"""

from __future__ import annotations

from pathlib import Path

# on predicted and reference class ids (the classification recipes' `eval_metrics`)
CLASSIFICATION = ("accuracy", "f1", "precision", "recall", "matthews_correlation")
AVAILABLE = (*CLASSIFICATION, "perplexity")
_HERE = Path(__file__).resolve().parent


class UnknownMetricError(ValueError):
    """A metric name that the project does not ship."""


def check_names(names: list[str] | tuple[str, ...]) -> None:
    for name in names:
        if name not in CLASSIFICATION:
            raise UnknownMetricError(f"eval_metrics: unknown metric {name!r} (available: {', '.join(CLASSIFICATION)})")


def load(name: str):
    """The project's `evaluate` module `name`, from the package's own file (never the Hub)."""
    if name not in AVAILABLE:
        raise UnknownMetricError(f"eval_metrics: unknown metric {name!r} (available: {', '.join(AVAILABLE)})")
    import evaluate

    if name in CLASSIFICATION:  # one module, one configuration per metric
        return evaluate.load(str(_HERE / "classification.py"), name, keep_in_memory=True)
    return evaluate.load(str(_HERE / f"{name}.py"), keep_in_memory=True)
