"""`precision`: precision, macro-averaged over classes by default.

An `evaluate` metric module of transformer-zoo, loaded from the package by path.
"""

import datasets
import evaluate
from sklearn.metrics import precision_score


class Precision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="precision, macro-averaged over classes by default",
            citation="",
            inputs_description="predictions and references: class ids; average: macro, micro or weighted",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro"):
        return {"precision": float(precision_score(references, predictions, average=average, zero_division=0))}
