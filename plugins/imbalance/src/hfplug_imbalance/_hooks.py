"""hfplug hook implementations: the imbalance losses and the LDAM-DRW callback, as lazy references to the
package's public names (loading plugins imports nothing; the first lookup imports the class)."""

from __future__ import annotations

import hfplug
from hfplug.hookspecs import RegisterCallback, RegisterLoss

_LOSSES = {
    "weighted_ce": "WeightedCrossEntropyLoss",
    "focal": "FocalLoss",
    "logit_adjusted": "LogitAdjustedLoss",
    "balanced_softmax": "BalancedSoftmaxLoss",
    "ldam": "LDAMLoss",
    "dice": "DiceLoss",
    "f1_weighted_ce": "F1WeightedCrossEntropyLoss",
    "multilabel_ce": "MultiLabelCategoricalCrossEntropyLoss",
}


@hfplug.hookimpl
def register_losses(register: RegisterLoss) -> None:
    for name, cls in _LOSSES.items():
        register(name, f"hfplug_imbalance:{cls}")


@hfplug.hookimpl
def register_callbacks(register: RegisterCallback) -> None:
    register("ldam_drw", "hfplug_imbalance:LDAMDRWCallback")
