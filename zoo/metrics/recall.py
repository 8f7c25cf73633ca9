"""`recall`: recall, macro-averaged over classes by default.

An `evaluate` metric module of transformer-zoo, loaded from the package by path.
"""

import datasets
import evaluate
from sklearn.metrics import recall_score


class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="recall, macro-averaged over classes by default",
            citation="",
            inputs_description="predictions and references: class ids; average: macro, micro or weighted",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro"):
        return {"recall": float(recall_score(references, predictions, average=average, zero_division=0))}
