"""hfplug-imbalance: losses for class imbalance and long-tailed labels, for ``Trainer(compute_loss_func=...)``.

``LDAMDRWCallback`` is imported on first access: the losses need torch only, not transformers' Trainer.
"""

from typing import TYPE_CHECKING, Any

from .losses import (
    BalancedSoftmaxLoss,
    DiceLoss,
    F1WeightedCrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    MultiLabelCategoricalCrossEntropyLoss,
    WeightedCrossEntropyLoss,
)
from .post_hoc import PostHocLogitAdjuster, post_hoc_logit_adjust
from .priors import class_counts, class_priors, class_weights

if TYPE_CHECKING:
    from .callbacks import LDAMDRWCallback

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "LDAMDRWCallback":
        from .callbacks import LDAMDRWCallback

        return LDAMDRWCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BalancedSoftmaxLoss",
    "DiceLoss",
    "F1WeightedCrossEntropyLoss",
    "FocalLoss",
    "LDAMDRWCallback",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MultiLabelCategoricalCrossEntropyLoss",
    "PostHocLogitAdjuster",
    "WeightedCrossEntropyLoss",
    "__version__",
    "class_counts",
    "class_priors",
    "class_weights",
    "post_hoc_logit_adjust",
]
