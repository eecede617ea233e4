"""Post-hoc logit adjustment (Menon et al. 2021): predict ``argmax_y f_y(x) - tau log pi_y``.

For a model trained with plain cross-entropy; a model trained with :class:`LogitAdjustedLoss` or
:class:`BalancedSoftmaxLoss` already predicts with its raw logits.

Non-finite logits (NaN, +-inf) raise ``ValueError`` by default: an argmax over a NaN row returns the NaN's
index, a prediction no metric should silently count. ``check_finite=False`` adjusts element-wise instead
(NaN stays NaN, +-inf stays +-inf, every finite entry is shifted as usual).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hfplug.validation import check_bool, check_float

from .losses import MAX_LOGIT_SHIFT, _float32
from .priors import CountsLike, _class_priors, class_counts


def _log_priors(priors: CountsLike, tau: float, smoothing: float) -> torch.Tensor:
    log_priors = _class_priors(priors, "priors", smoothing).log()
    _float32("tau * log(priors)", tau * log_priors, MAX_LOGIT_SHIFT)
    return log_priors


def _first_bad(bad: torch.Tensor) -> str:
    return f"[{', '.join(map(str, bad.nonzero()[0].tolist()))}]"


def _adjust(logits: Any, log_priors: torch.Tensor, tau: float, check_finite: bool) -> Any:
    if isinstance(logits, (tuple, list)):  # Trainer passes a tuple when the model returns several tensors
        if not logits:
            raise ValueError("logits is an empty tuple; expected the logits as its first element")
        return type(logits)([_adjust(logits[0], log_priors, tau, check_finite), *logits[1:]])
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
    if check_finite and tensor.is_floating_point():
        bad = ~torch.isfinite(tensor)
        if bad.any():
            raise ValueError(
                f"logits: {int(bad.sum())} of {tensor.numel()} values are NaN or inf (first at {_first_bad(bad)}); "
                "the model diverged or overflowed (check_finite=False adjusts them element-wise)"
            )
    shift = (tau * log_priors).to(
        device=tensor.device, dtype=tensor.dtype if tensor.is_floating_point() else torch.float32
    )
    adjusted = tensor - shift
    if check_finite:
        bad = ~torch.isfinite(adjusted)
        if bad.any():
            raise ValueError(
                f"logits: adjusting by tau * log(priors) (tau={tau:g}) leaves the range of {adjusted.dtype} "
                f"at {_first_bad(bad)}; adjust float32 logits (logits.float())"
            )
    return adjusted.numpy() if isinstance(logits, np.ndarray) else adjusted


def post_hoc_logit_adjust(
    logits: Any,
    priors: CountsLike,
    tau: float = 1.0,
    *,
    smoothing: float = 0.0,
    check_finite: bool = True,
) -> Any:
    """``logits - tau * log(pi)`` for a tensor or numpy array ``[..., C]``; ``priors`` are counts or probabilities.

    ``tau >= 0`` (default 1), ``smoothing >= 0`` added to every count. NaN or inf logits, or an adjustment
    that leaves the logits' dtype, raise ``ValueError`` unless ``check_finite=False`` (element-wise).
    """
    tau = check_float("tau", tau, minimum=0.0)
    check_finite = check_bool("check_finite", check_finite)
    return _adjust(logits, _log_priors(priors, tau, smoothing), tau, check_finite)


class PostHocLogitAdjuster:
    """Callable that applies :func:`post_hoc_logit_adjust` with fixed priors.

    - ``Trainer(preprocess_logits_for_metrics=adjuster)``: evaluation metrics see adjusted logits;
    - ``adjuster(trainer.predict(ds).predictions)`` or ``adjuster.predict(logits)`` (class indices).

    ``check_finite`` (default True): NaN / inf logits raise ``ValueError`` (see :func:`post_hoc_logit_adjust`).
    """

    def __init__(
        self, priors: CountsLike, tau: float = 1.0, *, smoothing: float = 0.0, check_finite: bool = True
    ) -> None:
        self.tau = check_float("tau", tau, minimum=0.0)
        self.check_finite = check_bool("check_finite", check_finite)
        self.log_priors = _log_priors(priors, self.tau, smoothing)

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
        return _adjust(logits, self.log_priors, self.tau, self.check_finite)

    def predict(self, logits: Any) -> Any:
        """Adjusted ``argmax`` over the last dimension (same array type as ``logits``)."""
        adjusted = self(logits)
        return adjusted.argmax(-1)

    def __repr__(self) -> str:
        return f"PostHocLogitAdjuster(tau={self.tau}, num_classes={self.log_priors.numel()})"
