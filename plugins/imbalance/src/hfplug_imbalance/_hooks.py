"""hfplug hook implementations: the imbalance losses and the LDAM-DRW callback."""

from __future__ import annotations

import hfplug


@hfplug.hookimpl
def register_losses(register) -> None:
    from . import losses

    register("weighted_ce", losses.WeightedCrossEntropyLoss)
    register("focal", losses.FocalLoss)
    register("logit_adjusted", losses.LogitAdjustedLoss)
    register("balanced_softmax", losses.BalancedSoftmaxLoss)
    register("ldam", losses.LDAMLoss)
    register("dice", losses.DiceLoss)
    register("f1_weighted_ce", losses.F1WeightedCrossEntropyLoss)
    register("multilabel_ce", losses.MultiLabelCategoricalCrossEntropyLoss)


@hfplug.hookimpl
def register_callbacks(register) -> None:
    from .callbacks import LDAMDRWCallback

    register("ldam_drw", LDAMDRWCallback)
