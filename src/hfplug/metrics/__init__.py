"""Metrics shipped as evaluate modules inside the package, loadable offline.

``evaluate.load("accuracy")`` fetches a script from the Hub; these load from site-packages:

    import evaluate, hfplug.metrics
    clf = evaluate.load(hfplug.metrics.path("classification"))   # accuracy, balanced acc., macro-F1, head/tail recall
    rep = evaluate.load(hfplug.metrics.path("repetition"))       # rep-n, seq-rep-n, distinct-n, non-termination
    Trainer(..., compute_metrics=hfplug.metrics.classification_metrics(class_counts=[3000, 150]))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

MODULES: tuple[str, ...] = ("classification", "repetition")


def path(name: str) -> str:
    """Folder of the evaluate module ``name`` (one of ``MODULES``), to pass to ``evaluate.load``."""
    if name not in MODULES:
        raise ValueError(f"unknown hfplug metric module {name!r}; available: {', '.join(MODULES)}")
    return str(Path(__file__).parent / "modules" / name)


def load(name: str, **kwargs: Any):
    """``evaluate.load(path(name), **kwargs)``."""
    import evaluate

    return evaluate.load(path(name), **kwargs)


def classification_metrics(
    class_counts: list[int] | None = None,
    head_classes: list[int] | None = None,
    tail_classes: list[int] | None = None,
) -> Callable[[Any], dict[str, float]]:
    """A ``Trainer(compute_metrics=...)`` function: argmax of the logits scored by the classification module."""
    metric = load("classification")

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return metric.compute(
            predictions=logits.argmax(-1),
            references=eval_prediction.label_ids,
            class_counts=class_counts,
            head_classes=head_classes,
            tail_classes=tail_classes,
        )

    return compute_metrics
