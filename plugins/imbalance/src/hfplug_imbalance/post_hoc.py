"""Post-hoc logit adjustment (Menon et al. 2021): predict ``argmax_y f_y(x) - tau log pi_y``.

For a model trained with plain cross-entropy; a model trained with :class:`LogitAdjustedLoss` or
:class:`BalancedSoftmaxLoss` already predicts with its raw logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .losses import _check_number
from .priors import CountsLike, class_counts, class_priors


def _adjust(logits: Any, log_priors: torch.Tensor, tau: float) -> Any:
    if isinstance(logits, (tuple, list)):  # Trainer passes a tuple when the model returns several tensors
        return type(logits)([_adjust(logits[0], log_priors, tau), *logits[1:]])
    if isinstance(logits, torch.Tensor):
        tensor = logits
    elif isinstance(logits, np.ndarray):
        tensor = torch.from_numpy(logits)
    else:
        raise TypeError(f"logits must be a torch.Tensor or numpy array, got {type(logits).__name__}")
    if tensor.dim() < 1 or tensor.shape[-1] != log_priors.numel():
        raise ValueError(
            f"logits [..., C] must have C = {log_priors.numel()} classes (one per prior), got {tuple(tensor.shape)}"
        )
    shift = (tau * log_priors).to(
        device=tensor.device, dtype=tensor.dtype if tensor.is_floating_point() else torch.float32
    )
    adjusted = tensor - shift
    return adjusted.numpy() if isinstance(logits, np.ndarray) else adjusted


def post_hoc_logit_adjust(
    logits: Any, priors: CountsLike, tau: float = 1.0, *, smoothing: float = 0.0
) -> Any:
    """``logits - tau * log(pi)`` for a tensor or numpy array ``[..., C]``; ``priors`` are counts or probabilities."""
    tau = _check_number(tau, "tau", 0.0)
    return _adjust(logits, class_priors(priors, smoothing=smoothing).log(), tau)


class PostHocLogitAdjuster:
    """Callable that applies :func:`post_hoc_logit_adjust` with fixed priors.

    - ``Trainer(preprocess_logits_for_metrics=adjuster)``: evaluation metrics see adjusted logits;
    - ``adjuster(trainer.predict(ds).predictions)`` or ``adjuster.predict(logits)`` (class indices).
    """

    def __init__(self, priors: CountsLike, tau: float = 1.0, *, smoothing: float = 0.0) -> None:
        self.tau = _check_number(tau, "tau", 0.0)
        self.log_priors = class_priors(priors, smoothing=smoothing).log()

    @classmethod
    def from_dataset(
        cls,
        source: Any,
        label_column: str = "label",
        *,
        num_classes: int | None = None,
        all_reduce: bool = True,
        **kwargs: Any,
    ) -> PostHocLogitAdjuster:
        """Priors counted from ``source`` (see :func:`class_counts`)."""
        return cls(
            class_counts(source, label_column, num_classes=num_classes, all_reduce=all_reduce), **kwargs
        )

    def __call__(self, logits: Any, labels: Any = None) -> Any:
        return _adjust(logits, self.log_priors, self.tau)

    def predict(self, logits: Any) -> Any:
        """Adjusted ``argmax`` over the last dimension (same array type as ``logits``)."""
        adjusted = self(logits)
        return adjusted.argmax(-1)

    def __repr__(self) -> str:
        return f"PostHocLogitAdjuster(tau={self.tau}, num_classes={self.log_priors.numel()})"
