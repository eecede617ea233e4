"""hfplug-imbalance: losses for class imbalance and long-tailed labels, for ``Trainer(compute_loss_func=...)``."""

from .callbacks import LDAMDRWCallback
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

__version__ = "0.1.0"

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
