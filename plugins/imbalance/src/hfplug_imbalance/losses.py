"""Losses for class imbalance and long-tailed labels, usable as ``Trainer(compute_loss_func=loss)``.

Shapes: softmax losses take logits ``[..., C]`` and integer labels ``[...]`` (``[B, C]`` / ``[B]`` for
sequence classification, ``[B, T, C]`` / ``[B, T]`` for token classification) with ``ignore_index``
(-100) skipped. Sigmoid losses take logits and 0/1 (or soft) targets of the same shape, ``ignore_index``
entries skipped. Causal-LM label shifting is not done here: shift logits and labels yourself.

Normalisation: ``sum(per-target loss) / num_items_in_batch`` when the Trainer passes it (so gradient
accumulation and DDP equal one large batch), the mean over valid targets otherwise; an all-ignored batch
gives 0 with a zero gradient. A target is a label (softmax), a label entry (sigmoid), or a row of the
multi-label loss. Everything is computed in float32 through ``log_softmax`` / ``logsigmoid``-style
primitives; NaN or inf logits raise ``ValueError``, and so does a non-finite loss of finite logits (float32
overflow); ``check_finite=False`` skips both checks and lets NaN propagate (a NaN logit of a counted target
gives a NaN loss). ``num_items_in_batch`` must be a number or scalar tensor ``>= 0``; 0 (the Trainer's count
when every target of the step is ignored) is accepted only when the batch has no valid target (loss 0).

This module holds the public classes, their options and the input checks; the per-item formulas and the
hand-written value-and-gradient kernels are in ``_kernels.py``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, TypedDict, Unpack

import torch

from hfplug.losses import TrainerLoss, check_num_items, reduce_loss
from hfplug.validation import check_bool, check_choice, check_float, check_int

from . import _kernels as K
from .priors import CountsLike, _class_priors, _class_weights, as_counts, class_counts, class_weights

ACTIVATIONS = ("softmax", "sigmoid")

# Exponents (focal gamma, Dice alpha) above this only underflow (1 - p)**gamma to 0 in float32 while
# gamma * log(1 - p) overflows in the gradients; the papers use 0..5.
MAX_EXPONENT = 100.0
# Class weights and alpha multiply the loss: above this they only push it towards float32 overflow
# (``class_weights`` normalises to sum C; inverse frequencies of a 1e8 : 1 tail stay below it).
MAX_WEIGHT = 1e8
# Offsets and scales of the logits (tau * |log prior|, LDAM's scale and margin): 1e4 is far beyond any
# useful setting (tau ~ 1, s = 30, margin 0.5) and keeps the per-target loss far from float32 overflow.
MAX_LOGIT_SHIFT = 1e4
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class LossOptions(TypedDict, total=False):
    """Keyword options of every loss here.

    ``ignore_index`` (default -100): targets equal to it are skipped. ``check_finite`` (default True): NaN /
    inf logits, and a non-finite loss of finite logits, raise ``ValueError``.
    """

    ignore_index: int
    check_finite: bool


class SoftmaxLossOptions(LossOptions, total=False):
    """:class:`LossOptions` and ``label_smoothing`` in [0, 1) (default 0): the target distribution is
    ``(1 - eps) onehot(y) + eps / C`` (PyTorch's formula)."""

    label_smoothing: float


def _float32(name: str, values: torch.Tensor, maximum: float = _FLOAT32_MAX) -> torch.Tensor:
    """``values`` (finite float64) as float32; an entry with ``|v| > maximum`` (default: float32's range)
    is an error naming it."""
    flat = values.reshape(-1)
    big = (flat.abs() > maximum).nonzero()
    if big.numel():
        index = int(big[0])
        where = f"{name}[{index}]" if values.dim() else name
        raise ValueError(f"{where} must be at most {maximum:g} in magnitude, got {flat[index].item():g}")
    return values.float()


def _per_class(buffer: torch.Tensor, num_classes: int, name: str, like: torch.Tensor) -> torch.Tensor:
    if buffer.dim() == 1 and buffer.numel() != num_classes:
        raise ValueError(f"{name} has {buffer.numel()} entries but the logits have {num_classes} classes")
    return buffer.to(device=like.device, dtype=like.dtype)


def _as_labels(labels: Any, logits: torch.Tensor) -> torch.Tensor:
    if labels is None:
        raise ValueError(
            "labels are required (got None); the Trainer passes them when the dataset has a labels column"
        )
    return torch.as_tensor(labels, device=logits.device)


def _softmax_inputs(
    logits: torch.Tensor, labels: Any, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened float32 logits ``[N, C]``, labels ``[N]`` (ignored ones set to 0) and the valid mask."""
    labels = _as_labels(labels, logits)
    if logits.dim() < 2 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            "softmax losses need logits [..., C] and labels [...] (e.g. [B, C] and [B], or [B, T, C] and [B, T]); "
            f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    num_classes = logits.shape[-1]
    flat = labels.reshape(-1).long()  # uint8 / int16 / int32 labels index as int64 (a uint8 index is a mask)
    valid = flat != ignore_index
    bad = valid & ((flat < 0) | (flat >= num_classes))
    if bad.any():
        raise ValueError(
            f"labels must be in [0, {num_classes}) or ignore_index={ignore_index}; got label {int(flat[bad][0])}"
        )
    return logits.reshape(-1, num_classes).float(), flat.where(valid, 0), valid


def _sigmoid_inputs(
    logits: torch.Tensor, targets: Any, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Float32 logits, float targets (ignored ones set to 0) and the valid mask of the same shape (None
    when nothing is ignored)."""
    targets = _as_labels(targets, logits)
    if logits.dim() >= 1 and logits.shape[-1] == 1 and targets.shape == logits.shape[:-1]:
        logits = logits.squeeze(-1)
    if targets.shape != logits.shape:
        raise ValueError(
            "sigmoid losses need logits and targets of one shape (e.g. [B, C] multi-hot, or [B] binary); "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    targets = targets.float()
    if targets.numel() and not 0 <= ignore_index <= 1:
        low, high = torch.aminmax(targets)
        if bool((low >= 0) & (high <= 1)):  # common case, one pass: nothing ignored, nothing out of range
            return logits.float(), targets, None
    valid = targets != ignore_index
    bad = valid & ((targets < 0) | (targets > 1))
    if bad.any():
        raise ValueError(
            f"sigmoid targets must be in [0, 1] or ignore_index={ignore_index}; got {targets[bad][0].item():g}"
        )
    return logits.float(), targets.where(valid, 0.0), valid


class _FromCounts:
    """``from_dataset``: build the loss from class counts computed by :func:`class_counts`."""

    @classmethod
    def from_dataset(
        cls,
        source: Any,
        label_column: str = "label",
        *,
        num_classes: int | None = None,
        all_reduce: bool = True,
        **kwargs: Any,
    ):
        """Count the labels of ``source`` (a ``datasets.Dataset`` column, an iterable of labels or a
        ``{class: count}`` mapping, see :func:`class_counts`) and build the loss from them; ``kwargs`` go to
        the constructor."""
        counts = class_counts(
            source,
            label_column,
            num_classes=num_classes,
            ignore_index=kwargs.get("ignore_index", -100),
            all_reduce=all_reduce,
        )
        return cls._from_counts(counts, **kwargs)

    @classmethod
    def _from_counts(cls, counts: torch.Tensor, **kwargs: Any):
        return cls(counts, **kwargs)


class _ImbalanceLoss(TrainerLoss):
    """The options of :class:`LossOptions`, the input checks and the reduction.

    Subclasses implement ``per_item(logits, labels, extent) -> (per_item, valid or None)``.
    """

    def __init__(self, *, ignore_index: int = -100, check_finite: bool = True) -> None:
        super().__init__()
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.check_finite = check_bool("check_finite", check_finite)

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-item losses and the valid mask (None: all valid); ``extent`` is ``max |logits|`` when the
        finiteness check computed it, else None."""
        raise NotImplementedError

    def _items(self, num_items_in_batch: Any, logits: torch.Tensor) -> Any:
        return num_items_in_batch

    def loss(self, logits: torch.Tensor, labels: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
        check_num_items(num_items_in_batch)
        extent = None
        if self.check_finite and logits.numel():
            # one reduction instead of torch.isfinite (3 passes): a NaN or inf shows up in the min or max
            low, high = (float(v) for v in torch.aminmax(logits.detach()))
            if not (math.isfinite(low) and math.isfinite(high)):
                bad = int((~torch.isfinite(logits)).sum())
                raise ValueError(
                    f"{bad} of {logits.numel()} logits are NaN or inf; the model diverged or overflowed before "
                    "the loss"
                )
            extent = max(-low, high)
        per_item, valid = self.per_item(logits, labels, extent)
        if valid is not None and valid.all():  # one cheap pass instead of a masked sum and its backward
            valid = None
        if num_items_in_batch is not None and float(num_items_in_batch) == 0:
            count = per_item.numel() if valid is None else int(valid.sum())
            if count:
                raise ValueError(
                    f"num_items_in_batch=0 (no target in the optimizer step) but this batch has {count} valid "
                    "target(s); pass the number of targets, or None for the mean over valid targets"
                )
        result = reduce_loss(per_item, valid, self._items(num_items_in_batch, logits))
        if extent is not None:  # finite logits were checked: a non-finite loss is a float32 overflow
            value = float(result.detach())
            if not math.isfinite(value):
                raise ValueError(
                    f"the loss of finite logits is {value} (max |logit| = {extent:g}): {type(self).__name__} "
                    "overflowed float32; the logits are too large for this loss and its settings"
                )
        return result


class _SoftmaxLoss(_ImbalanceLoss):
    """Softmax cross-entropy on adjusted logits ``scale z + offsets``, with optional class weights and
    ``label_smoothing`` (:class:`SoftmaxLossOptions`). Without label smoothing the value and gradient come
    from one hand-written pass (:class:`~hfplug_imbalance._kernels.SoftmaxCrossEntropy`)."""

    def __init__(self, *, label_smoothing: float = 0.0, **options: Unpack[LossOptions]) -> None:
        super().__init__(**options)
        self.label_smoothing = check_float(
            "label_smoothing", label_smoothing, minimum=0.0, maximum=1.0, max_open=True
        )

    #: ``d adjust_logits / d logits`` (the adjustment is ``logit_scale * z + offsets``).
    logit_scale: float = 1.0

    def adjust_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The float32 logits ``[N, C]`` the softmax is taken of (identity here; else a new tensor)."""
        return logits

    def weights(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Per-class weights ``[C]`` for these logits, or None."""
        return None

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        z, y, valid = _softmax_inputs(logits, labels, self.ignore_index)
        weights = self.weights(z)
        if self.label_smoothing:
            adjusted = self.adjust_logits(z, y)
            return K.softmax_cross_entropy(adjusted, y, weights, 0.0, self.label_smoothing), valid
        return K.SoftmaxCrossEntropy(y, weights, self.logit_scale, self.adjust_logits)(z), valid


class WeightedCrossEntropyLoss(_FromCounts, _SoftmaxLoss):
    """Cross-entropy with class weights: ``-w_y log softmax(z)_y`` (label smoothing: PyTorch's formula).

    Weights come from ``class_counts`` with ``weighting`` = ``"inverse"`` (default), ``"sqrt_inverse"`` or
    ``"effective_number"`` (``beta``, default 0.999), normalised to ``sum(w) = C``; or pass ``weights``
    directly (used as given). The reduction is ``sum_i w_{y_i} l_i / N`` (N = valid targets or
    ``num_items_in_batch``), not PyTorch's ``/ sum_i w_{y_i}``, so micro-batches add up exactly.
    ``options``: :class:`SoftmaxLossOptions`.
    """

    def __init__(
        self,
        class_counts: CountsLike | None = None,
        weighting: str = "inverse",
        *,
        beta: float = 0.999,
        weights: CountsLike | None = None,
        smoothing: float = 0.0,
        **options: Unpack[SoftmaxLossOptions],
    ) -> None:
        super().__init__(**options)
        if (class_counts is None) == (weights is None):
            raise ValueError("pass exactly one of class_counts (weights computed from counts) or weights")
        if weights is not None:
            values = as_counts(weights, "weights")
        else:
            values = _class_weights(class_counts, "class_counts", weighting, beta, smoothing)
        self.weighting = weighting if weights is None else "given"
        self.register_buffer("class_weight", _float32("weights", values, MAX_WEIGHT))

    def weights(self, logits: torch.Tensor) -> torch.Tensor:
        return _per_class(self.class_weight, logits.shape[-1], "class_weight", logits)

    def extra_repr(self) -> str:
        return f"weighting={self.weighting!r}, num_classes={self.class_weight.numel()}"


class FocalLoss(_FromCounts, _SoftmaxLoss):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)**gamma log p_t``.

    ``activation="softmax"`` (default): multi-class, ``p_t = softmax(z)_y``; ``alpha`` is None, a scalar or
    per-class weights ``[C]``; composes with ``label_smoothing``. ``activation="sigmoid"``: binary or
    multi-label with targets of the logits' shape, ``p_t = p`` for positives and ``1 - p`` for negatives,
    ``alpha_t = alpha`` / ``1 - alpha`` (scalar or ``[C]`` in [0, 1]) as in torchvision's
    ``sigmoid_focal_loss`` (whose default is alpha=0.25; here None means no alpha term).
    ``gamma >= 0`` (default 2); ``gamma = 0`` without alpha is cross-entropy. ``1 - p_t`` is floored at 1e-12
    so gradients stay finite for ``0 < gamma < 1``. ``from_dataset(ds, weighting=...)`` sets ``alpha`` to
    class weights (softmax only). ``options``: :class:`SoftmaxLossOptions` (label smoothing: softmax only).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | CountsLike | None = None,
        *,
        activation: str = "softmax",
        **options: Unpack[SoftmaxLossOptions],
    ) -> None:
        super().__init__(**options)
        self.gamma = check_float("gamma", gamma, minimum=0.0, maximum=MAX_EXPONENT)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        if activation == "sigmoid" and self.label_smoothing:
            raise ValueError("label_smoothing applies to activation='softmax' only")
        if alpha is None:
            self.alpha = None
        else:
            sigmoid = activation == "sigmoid"
            if isinstance(alpha, (bool, numbers.Real)):
                bound = 1.0 if sigmoid else None
                values = torch.tensor(
                    check_float("alpha", alpha, minimum=0.0, maximum=bound), dtype=torch.float64
                )
            else:
                values = as_counts(alpha, "alpha")
            if sigmoid and (values > 1).any():
                raise ValueError(f"with activation='sigmoid' alpha must be in [0, 1], got {alpha!r}")
            self.register_buffer("alpha", _float32("alpha", values, MAX_WEIGHT))

    @classmethod
    def _from_counts(
        cls,
        counts: torch.Tensor,
        *,
        weighting: str = "inverse",
        beta: float = 0.999,
        smoothing: float = 0.0,
        **kwargs,
    ):
        if kwargs.get("activation", "softmax") != "softmax":
            raise ValueError("FocalLoss.from_dataset sets per-class alpha for activation='softmax' only")
        return cls(alpha=class_weights(counts, weighting, beta=beta, smoothing=smoothing), **kwargs)

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.activation == "softmax":
            z, y, valid = _softmax_inputs(logits, labels, self.ignore_index)
            alpha = None if self.alpha is None else _per_class(self.alpha, z.shape[-1], "alpha", z)
            return K.softmax_cross_entropy(z, y, alpha, self.gamma, self.label_smoothing), valid
        x, y, valid = _sigmoid_inputs(logits, labels, self.ignore_index)
        alpha = (
            None if self.alpha is None else _per_class(self.alpha, x.shape[-1] if x.dim() else 1, "alpha", x)
        )
        scratch = torch.empty_like(x)
        hard = K.extent(x, extent) <= K.FAST_EXTENT and K.is_hard(y, scratch)
        return K.SigmoidFocal(y, self.gamma, alpha, scratch if hard else None)(x), valid

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, activation={self.activation!r}, alpha={'None' if self.alpha is None else 'set'}"


class LogitAdjustedLoss(_FromCounts, _SoftmaxLoss):
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``-log softmax(z + tau log pi)_y``.

    ``priors``: class counts or probabilities (normalised here); ``tau >= 0`` (default 1; 0 is plain
    cross-entropy). Predict with the raw logits: the adjustment is for training only. A zero prior is an
    error unless ``smoothing > 0`` is added to every count. ``options``: :class:`SoftmaxLossOptions`.
    """

    def __init__(
        self,
        priors: CountsLike,
        tau: float = 1.0,
        *,
        smoothing: float = 0.0,
        **options: Unpack[SoftmaxLossOptions],
    ) -> None:
        super().__init__(**options)
        self.tau = check_float("tau", tau, minimum=0.0)
        log_priors = _class_priors(priors, "priors", smoothing).log()
        _float32("tau * log(priors)", self.tau * log_priors, MAX_LOGIT_SHIFT)
        self.register_buffer("log_priors", log_priors.float())

    def adjust_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.tau:
            return logits
        return torch.add(
            logits, _per_class(self.log_priors, logits.shape[-1], "priors", logits), alpha=self.tau
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}, num_classes={self.log_priors.numel()}"


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al. 2020): ``-log [pi_y e^{z_y} / sum_j pi_j e^{z_j}]``.

    Identical to :class:`LogitAdjustedLoss` with ``tau = 1``; kept as its own name because it is
    published and asked for as such.
    """

    def __init__(
        self, priors: CountsLike, *, smoothing: float = 0.0, **options: Unpack[SoftmaxLossOptions]
    ) -> None:
        super().__init__(priors, tau=1.0, smoothing=smoothing, **options)


class LDAMLoss(_FromCounts, _SoftmaxLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019) with deferred re-weighting (DRW).

    ``-log softmax(s (z - m_y e_y))_y`` with margins ``m_c ∝ n_c**-1/4`` scaled so the largest is
    ``max_margin`` (0.5) and ``scale`` s = 30 (the paper's values, which assume cosine logits in [-1, 1];
    use a smaller scale for an ordinary linear head). While ``reweight`` is True the per-class weights
    ``(1 - beta) / (1 - beta**n_c)`` (``drw_beta`` = 0.9999, normalised to sum C) multiply the loss;
    :class:`~hfplug_imbalance.LDAMDRWCallback` switches it on late in training.
    ``options``: :class:`SoftmaxLossOptions`.
    """

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_beta: float = 0.9999,
        smoothing: float = 0.0,
        **options: Unpack[SoftmaxLossOptions],
    ) -> None:
        super().__init__(**options)
        self.max_margin = check_float("max_margin", max_margin, minimum=0.0, maximum=MAX_LOGIT_SHIFT)
        self.scale = check_float("scale", scale, minimum=0.0, maximum=MAX_LOGIT_SHIFT, min_open=True)
        weights = _class_weights(
            class_counts, "class_counts", "effective_number", drw_beta, smoothing, "drw_beta"
        )
        counts = as_counts(class_counts) + smoothing
        margins = counts.pow(-0.25)
        margins = margins * (self.max_margin / margins.max())
        self.register_buffer("margins", margins.float())
        self.register_buffer("drw_weights", weights.float())
        self.reweight = False

    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        return self.scale

    def adjust_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        margins = _per_class(self.margins, logits.shape[-1], "margins", logits)
        scaled = logits * self.scale  # a new tensor: the in-place margin below does not touch the logits
        return scaled.scatter_add_(-1, labels[:, None], (-self.scale * margins[labels])[:, None])

    def weights(self, logits: torch.Tensor) -> torch.Tensor | None:
        return (
            _per_class(self.drw_weights, logits.shape[-1], "drw_weights", logits) if self.reweight else None
        )

    def extra_repr(self) -> str:
        return f"max_margin={self.max_margin}, scale={self.scale}, reweight={self.reweight}"


class DiceLoss(_ImbalanceLoss):
    """Per-target (self-adjusting) Dice loss (Li et al. 2020, "Dice Loss for Data-imbalanced NLP Tasks").

    With ``p~ = (1 - p)**alpha p``: ``1 - (2 p~ q + smooth) / (p~ + q + smooth)``, summed over the classes of
    a softmax target (q one-hot) or taken per entry for ``activation="sigmoid"``. ``alpha = 0`` (default) is
    soft Dice, ``alpha > 0`` self-adjusting Dice; ``smooth > 0`` (default 1). The Dice is per target, not
    per batch, so it adds up exactly over micro-batches and ranks. ``options``: :class:`LossOptions`.
    """

    def __init__(
        self,
        alpha: float = 0.0,
        smooth: float = 1.0,
        *,
        activation: str = "softmax",
        **options: Unpack[LossOptions],
    ) -> None:
        super().__init__(**options)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=MAX_EXPONENT)
        # smooth > 0 keeps 0/0 away from classes with p = q = 0; at most 1e30 so p + q + smooth stays exact
        # enough in float32 and (p + q + smooth)**2 finite
        self.smooth = check_float("smooth", smooth, minimum=0.0, maximum=1e30, min_open=True)
        self.activation = check_choice("activation", activation, ACTIVATIONS)

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.activation == "softmax":
            z, y, valid = _softmax_inputs(logits, labels, self.ignore_index)
            return K.SoftmaxDice(y, self.alpha, self.smooth)(z), valid
        x, y, valid = _sigmoid_inputs(logits, labels, self.ignore_index)
        if not self.alpha:
            return K.SigmoidSoftDice(y, self.smooth)(x), valid
        return K.dice(torch.sigmoid(x), torch.sigmoid(-x), y, self.alpha, self.smooth), valid

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, smooth={self.smooth}, activation={self.activation!r}"


class F1WeightedCrossEntropyLoss(_ImbalanceLoss):
    """Cross-entropy re-weighted by the batch's smooth F1 (Su 2020, "smooth F1 -> weighted cross-entropy").

    Per class c (one-vs-rest): ``F1_c = 2 sum_P p / (|P| + sum p)`` over the valid targets of the batch,
    detached; loss ``(1 - F1_c/2) (-log p)`` for positives and ``(F1_c/2) (-log(1 - p))`` for negatives.
    ``activation="softmax"`` (default): labels ``[...]``, p = softmax, summed over classes per target;
    ``"sigmoid"``: targets of the logits' shape, one F1 per column of the last dimension (1-D logits are
    one binary class). F1 is recomputed on every call, so under gradient accumulation or DDP the weights
    come from the micro-batch on each rank (the normalisation is still exact). ``options``:
    :class:`LossOptions`.
    """

    def __init__(self, *, activation: str = "softmax", **options: Unpack[LossOptions]) -> None:
        super().__init__(**options)
        self.activation = check_choice("activation", activation, ACTIVATIONS)

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.activation == "softmax":
            z, y, valid = _softmax_inputs(logits, labels, self.ignore_index)
            return K.SoftmaxF1CrossEntropy(y, valid)(z), valid
        x, y, valid = _sigmoid_inputs(logits, labels, self.ignore_index)
        with torch.no_grad():  # per-column smooth F1; y is already 0 where ignored
            columns = x.shape[-1] if x.dim() > 1 else 1
            ones = x.new_ones(x.numel() // columns)

            def column_sums(t: torch.Tensor) -> torch.Tensor:
                return ones @ t.reshape(-1, columns)

            p = torch.sigmoid(x)
            buffer = torch.mul(p, y)
            true_positive = column_sums(buffer)
            predicted = column_sums(p if valid is None else torch.mul(p, valid, out=buffer))
            half_f1 = true_positive / (column_sums(y) + predicted).clamp(min=K.EPS)
        return K.SigmoidF1CrossEntropy(y, half_f1, K.extent(x, extent), p, buffer)(x), valid

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class MultiLabelCategoricalCrossEntropyLoss(_ImbalanceLoss):
    """Multi-label categorical cross-entropy (Su 2020; ZLPR): per row
    ``log(1 + sum_{neg} e^{s_i}) + log(1 + sum_{pos} e^{-s_j})``; predict label j when ``s_j > 0``.

    Logits ``[..., C]`` and multi-hot targets of the same shape; ``ignore_index`` entries belong to neither
    sum and all-ignored rows are skipped. The Trainer counts label entries, so ``num_items_in_batch`` is
    divided by C to count rows (exact when whole rows are ignored, as for padding tokens).
    ``options`` (keyword only): :class:`LossOptions`.
    """

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        targets = _as_labels(labels, logits)
        if logits.dim() < 1 or targets.shape != logits.shape:
            raise ValueError(
                "multi-label loss needs logits [..., C] and multi-hot targets of the same shape; "
                f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
            )
        s, y, valid = _sigmoid_inputs(logits, targets, self.ignore_index)
        per_row = K.MultiLabelCrossEntropy(y, valid, self.ignore_index, K.extent(s, extent))(s)
        return per_row, None if valid is None else valid.any(-1)

    def _items(self, num_items_in_batch: Any, logits: torch.Tensor) -> Any:
        return None if num_items_in_batch is None else num_items_in_batch / logits.shape[-1]
