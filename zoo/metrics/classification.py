"""`classification`: accuracy, and macro-averaged f1, precision and recall, and the Matthews correlation, of predicted
against reference class ids; the configuration name picks the metric (`evaluate.load(path, "f1")`).

An `evaluate` metric module of transformer-zoo, loaded from the package by path.
"""

import datasets
import evaluate
from sklearn import metrics

# configuration name -> (description, score function of (references, predictions))
SCORES = {
    "accuracy": ("fraction of predictions equal to their reference", metrics.accuracy_score),
    "f1": ("F1 score, macro-averaged over classes",
           lambda y, p: metrics.f1_score(y, p, average="macro", zero_division=0)),
    "precision": ("precision, macro-averaged over classes",
                  lambda y, p: metrics.precision_score(y, p, average="macro", zero_division=0)),
    "recall": ("recall, macro-averaged over classes",
               lambda y, p: metrics.recall_score(y, p, average="macro", zero_division=0)),
    "matthews_correlation": ("Matthews correlation coefficient", metrics.matthews_corrcoef),
}


class Classification(evaluate.Metric):
    def _info(self):
        if self.config_name not in SCORES:
            raise KeyError(f"classification metric {self.config_name!r} is not one of {', '.join(SCORES)}")
        return evaluate.MetricInfo(
            description=SCORES[self.config_name][0],
            citation="",
            inputs_description="predictions and references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {self.config_name: float(SCORES[self.config_name][1](references, predictions))}
