"""`f1`: F1 score, macro-averaged over classes by default.

An `evaluate` metric module of transformer-zoo, loaded from the package by path.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score, macro-averaged over classes by default",
            citation="",
            inputs_description="predictions and references: class ids; average: macro, micro or weighted",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro"):
        return {"f1": float(f1_score(references, predictions, average=average, zero_division=0))}
