"""Classification metrics from label log-probs: accuracy, macro-F1 and per-class accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClassificationMetrics:
    accuracy: float
    macro_f1: float
    per_class_accuracy: list[float]  # recall of each class (nan where the class has no examples)
    n: int
    # Per example, in order: "1" where the prediction is right, "0" where not (paired comparisons of two
    # methods on the same test set; rlprompt.comparison)
    correct: str = ""

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.per_class_accuracy))]
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class_accuracy": {
                name: _clean(v) for name, v in zip(names, self.per_class_accuracy, strict=True)
            },
            "n": self.n,
        }


def _clean(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def classification_metrics(logprobs: np.ndarray, labels: np.ndarray) -> ClassificationMetrics:
    """Metrics of argmax predictions; ``logprobs`` is (examples, classes), ``labels`` (examples,)."""
    labels = np.asarray(labels)
    num_classes = logprobs.shape[-1]
    predictions = logprobs.argmax(-1)
    per_class, f1s = [], []
    for c in range(num_classes):
        actual = labels == c
        predicted = predictions == c
        true_pos = float(np.sum(actual & predicted))
        recall = true_pos / actual.sum() if actual.any() else float("nan")
        per_class.append(recall)
        denom = actual.sum() + predicted.sum()
        f1s.append(2 * true_pos / denom if denom else 0.0)
    return ClassificationMetrics(
        accuracy=float(np.mean(predictions == labels)) if len(labels) else float("nan"),
        macro_f1=float(np.mean(f1s)),
        per_class_accuracy=per_class,
        n=int(len(labels)),
        correct="".join("1" if right else "0" for right in predictions == labels),
    )
