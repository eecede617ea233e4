"""hfplug-imbalance: losses for class imbalance and long-tailed labels, for ``Trainer(compute_loss_func=...)``.

Names load on first access (:func:`hfplug.lazy.lazy_exports`): loading plugins imports neither torch nor
transformers, and the losses need torch only, not transformers' Trainer (``LDAMDRWCallback`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfplug.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LDAMDRWCallback": "callbacks",
        **dict.fromkeys(
            [
                "BalancedSoftmaxLoss",
                "DiceLoss",
                "F1WeightedCrossEntropyLoss",
                "FocalLoss",
                "LDAMLoss",
                "LogitAdjustedLoss",
                "MultiLabelCategoricalCrossEntropyLoss",
                "WeightedCrossEntropyLoss",
            ],
            "losses",
        ),
        **dict.fromkeys(["PostHocLogitAdjuster", "post_hoc_logit_adjust"], "post_hoc"),
        **dict.fromkeys(["class_counts", "class_priors", "class_weights"], "priors"),
    },
)
