"""`perplexity`: exp of the token-weighted mean loss, from per-example mean token losses and their token counts.

An `evaluate` metric module of transformer-zoo, loaded from the package by path. The language members report the
same quantity from their evaluation loss.
"""

import math

import datasets
import evaluate


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="exp of the token-weighted mean cross-entropy loss",
            citation="",
            inputs_description="predictions: mean token losses (nats); references: token counts",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        tokens = sum(references)
        loss = sum(p * n for p, n in zip(predictions, references)) / max(tokens, 1)
        return {"perplexity": math.exp(loss) if loss < 700 else float("inf")}
