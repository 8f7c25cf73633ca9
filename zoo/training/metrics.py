"""The Trainer's `compute_metrics`: accuracy of the predictions, and a recipe's extra `evaluate` metrics."""

from __future__ import annotations

import numpy as np


def accuracy_metrics(extra_metrics: list | None = None):
    """`compute_metrics` for the Trainer: accuracy of argmax predictions, ignoring -100 labels."""

    def compute(eval_pred) -> dict[str, float]:
        predictions, labels = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        mask = labels != -100
        out = {"acc": float((predictions[mask] == labels[mask]).mean()) if mask.any() else float("nan")}
        for metric in extra_metrics or []:
            for key, value in metric.compute(predictions=predictions[mask], references=labels[mask]).items():
                out[key] = float(value)
        return out

    return compute
