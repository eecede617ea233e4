"""Classification metrics for long-tailed labels as an evaluate module (scikit-learn computes every number).

accuracy, balanced accuracy (mean per-class recall), macro-F1 and, when the training class counts or the
head/tail classes are given, the mean recall over head classes and over tail classes.
Load offline with ``evaluate.load(hfplug.metrics.path("classification"))``.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

_DESCRIPTION = "Accuracy, balanced accuracy, macro-F1 and head/tail recall for long-tailed classification."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    class_counts (list of int, optional): training examples per class id; head classes are those with at
        least the median count, tail classes the others (needs two distinct counts).
    head_classes, tail_classes (list of int, optional): explicit split instead of class_counts.
Returns:
    accuracy, balanced_accuracy, macro_f1 and, with a split, head_recall and tail_recall (mean per-class
    recall over the classes of each group that occur in references).
"""


def head_tail_split(class_counts: list[int]) -> tuple[list[int], list[int]]:
    """Head = classes with at least the median training count, tail = the rest."""
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any():
        raise ValueError(f"class_counts must list >= 2 non-negative counts, got {class_counts!r}")
    head = counts >= np.median(counts)
    if head.all():
        raise ValueError(f"class_counts {class_counts!r} are all equal: there is no tail")
    return np.flatnonzero(head).tolist(), np.flatnonzero(~head).tolist()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        class_counts: list[int] | None = None,
        head_classes: list[int] | None = None,
        tail_classes: list[int] | None = None,
    ) -> dict[str, float]:
        if class_counts is not None and (head_classes is not None or tail_classes is not None):
            raise ValueError("pass either class_counts or head_classes/tail_classes, not both")
        if (head_classes is None) != (tail_classes is None):
            raise ValueError("head_classes and tail_classes must be given together")
        result = {
            "accuracy": float(accuracy_score(references, predictions)),
            "balanced_accuracy": float(balanced_accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        }
        if class_counts is not None:
            head_classes, tail_classes = head_tail_split(class_counts)
        if head_classes is not None:
            present = set(np.unique(references).tolist())
            for group, classes in (("head", head_classes), ("tail", tail_classes)):
                labels = [c for c in classes if c in present]
                recall = recall_score(
                    references, predictions, labels=labels, average="macro", zero_division=0
                )
                result[f"{group}_recall"] = float(recall) if labels else float("nan")
        return result
