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
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from hfplug.losses import TrainerLoss, reduce_loss
from hfplug.validation import check_bool, check_choice, check_float, check_int

from .priors import CountsLike, _class_priors, _class_weights, as_counts, class_counts, class_weights

ACTIVATIONS = ("softmax", "sigmoid")

# Floor for 1 - p before a fractional power or a log: keeps gradients finite for gamma < 1 at p -> 1.
_EPS = 1e-12
# Logits with |x| <= 80 keep sigmoid(+-x) and exp(+-x) normal float32 numbers, so their logs are finite: the
# element-wise losses then take a path with fewer passes (one sigmoid and one log instead of softplus).
_FAST_EXTENT = 80.0


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


def _check_num_items(value: Any) -> None:
    """``num_items_in_batch``: None, or a real number / one-element tensor: finite, and 0 or ``>= 1``."""
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"num_items_in_batch must be a count (a number >= 0), got a {value.dtype} tensor")
        if value.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must be one number (a scalar tensor), got shape {tuple(value.shape)}"
            )
        value = value.item()
    count = check_float("num_items_in_batch", value, minimum=0.0)
    if 0 < count < 1:
        raise ValueError(f"num_items_in_batch must be 0 or a count >= 1, got {count!r}")


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
    flat = labels.reshape(-1)
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


def _one_minus_p(logp: torch.Tensor) -> torch.Tensor:
    """``1 - exp(logp)`` without cancellation, floored at 1e-12."""
    return (-torch.expm1(logp)).clamp(min=_EPS)


def _modulated_nll(logp: torch.Tensor, gamma: float) -> torch.Tensor:
    """``-(1 - p)**gamma * log p`` (plain negative log-likelihood when gamma = 0)."""
    nll = -logp
    return nll * _one_minus_p(logp).pow(gamma) if gamma else nll


def _extent(x: torch.Tensor, extent: float | None) -> float:
    """``max |x|`` (``extent`` when the finiteness check already computed it)."""
    if extent is not None or not x.numel():
        return extent or 0.0
    low, high = torch.aminmax(x.detach())  # a float, not a graph node: no autograd involvement
    return max(-float(low), float(high))


def _is_hard(y: torch.Tensor, scratch: torch.Tensor) -> bool:
    """Whether every target in [0, 1] is exactly 0 or 1: ``y - y**2`` is 0 for those and positive (also in
    float32) for any other; ``scratch``: a buffer of y's shape that is overwritten."""
    return not bool(torch.addcmul(y, y, y, value=-1.0, out=scratch).amax() > 0) if y.numel() else True


def _neg_softplus(x: torch.Tensor, extent: float) -> torch.Tensor:
    """``-softplus(x) = log sigmoid(-x)`` in a new buffer: a sigmoid and a log when ``|x| <= 80``."""
    if extent <= _FAST_EXTENT:
        return torch.neg(x).sigmoid_().log_()
    return F.softplus(x).neg_()


def _graph_is_kept() -> bool:
    """Whether the running backward keeps the graph (``retain_graph`` / ``create_graph``); True when this torch
    cannot tell (the query is the one torch's own AOT autograd uses to free saved tensors early)."""
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if query is None else bool(query())


class _PrecomputedGrad(torch.autograd.Function):
    """Value and gradient from one no-grad pass: ``compute(x) -> (loss, dloss/dx)``.

    ``loss`` has the shape of ``x`` or of ``x`` without its last dimension (one value per row). Backward
    scales the stored gradient by the upstream one: in place, handing that buffer on (no new [..., C] tensor),
    when the graph is freed after this backward; out of place when it is kept (``retain_graph=True``).
    Under ``create_graph=True`` (double backward, e.g. a gradient penalty) it differentiates
    ``reference(x)``, the same loss written in plain autograd operations, instead.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, compute: Any, reference: Any) -> torch.Tensor:
        loss, grad = compute(x)
        ctx.save_for_backward(x)
        ctx.grad, ctx.row, ctx.reference = grad, loss.dim() < x.dim(), reference
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if torch.is_grad_enabled():
            (x,) = ctx.saved_tensors
            (grad,) = torch.autograd.grad(ctx.reference(x), x, grad_output, create_graph=True)
            return grad, None, None
        scale = grad_output[..., None] if ctx.row else grad_output
        if _graph_is_kept():
            return ctx.grad * scale, None, None
        grad, ctx.grad = ctx.grad, None
        return grad.mul_(scale), None, None


# Plain autograd formulas of the hand-written losses, differentiated under create_graph=True.


def _plain_sigmoid_focal(
    x: torch.Tensor, y: torch.Tensor, gamma: float, alpha: float | torch.Tensor | None
) -> torch.Tensor:
    p = torch.sigmoid(x)
    loss = (p + y - 2 * p * y).clamp(min=_EPS) ** gamma * F.binary_cross_entropy_with_logits(
        x, y, reduction="none"
    )
    return loss if alpha is None else loss * (alpha * y + (1 - alpha) * (1 - y))


def _plain_sigmoid_soft_dice(x: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
    p = torch.sigmoid(x)
    return 1 - (2 * p * y + smooth) / (p + y + smooth)


def _plain_f1_weighted_bce(x: torch.Tensor, y: torch.Tensor, half_f1: torch.Tensor) -> torch.Tensor:
    return y * (1 - half_f1) * F.softplus(-x) + (1 - y) * half_f1 * F.softplus(x)


def _plain_multilabel_ce(s: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    keep = torch.ones_like(y, dtype=torch.bool) if valid is None else valid
    zeros = torch.zeros_like(s[..., :1])
    negatives = torch.cat([s.masked_fill(~keep | (y > 0), -math.inf), zeros], -1).logsumexp(-1)
    return negatives + torch.cat([(-s).masked_fill(~keep | (y == 0), -math.inf), zeros], -1).logsumexp(-1)


def _plain_softmax_dice(z: torch.Tensor, y: torch.Tensor, alpha: float, smooth: float) -> torch.Tensor:
    p = torch.softmax(z, -1)
    adjusted = p * (1 - p).clamp(min=_EPS) ** alpha if alpha else p
    adjusted_y = adjusted.gather(-1, y[:, None]).squeeze(-1)
    ratio = adjusted / (adjusted + smooth)
    return ratio.sum(-1) - adjusted_y / (adjusted_y + smooth) + (1 - adjusted_y) / (1 + smooth + adjusted_y)


def _plain_softmax_f1_ce(z: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z, -1)
    logp_y = logp.gather(-1, y[:, None]).squeeze(-1)
    log_q = torch.log((1 - logp.exp()).clamp(min=_EPS))
    with torch.no_grad():
        weight = valid.to(z.dtype)
        predicted = weight @ logp.exp()
        true_positive = z.new_zeros(z.shape[-1]).index_add_(0, y, logp_y.exp() * weight)
        positives = z.new_zeros(z.shape[-1]).index_add_(0, y, weight)
        half_f1 = true_positive / (positives + predicted).clamp(min=_EPS)
    a_y = half_f1[y]
    return a_y * log_q.gather(-1, y[:, None]).squeeze(-1) - log_q @ half_f1 - (1 - a_y) * logp_y


def _sigmoid_focal_hard(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float,
    alpha: float | torch.Tensor | None,
    buffer: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid focal loss for 0/1 targets and ``|x| <= 80``, in three buffers.

    With ``t = (2y - 1) x``, ``p_t = sigmoid(t)``, ``u = 1 - p_t``: loss ``alpha_t u**gamma (-log p_t)`` and
    derivative ``(1 - 2y) alpha_t u**gamma (u - gamma p_t log p_t)``; the ``u**(gamma - 1)`` of the general
    form cancels, so the gradient is finite for every ``gamma >= 0``. ``alpha``: None, a float or ``[C]``;
    ``buffer``: an optional scratch tensor of x's shape to work in.
    """
    u = torch.addcmul(x, x, y, value=-2.0, out=buffer).neg_().sigmoid_()  # p_t
    loss = torch.log(u)  # log p_t, made the loss in place below
    grad = torch.mul(u, loss).mul_(-gamma).add_(u.neg_().add_(1.0))  # u - gamma p_t log p_t
    if gamma:
        weight = u.mul_(u) if gamma == 2.0 else u if gamma == 1.0 else u.log_().mul_(gamma).exp_()  # u**gamma
        grad.mul_(weight)
        loss.mul_(weight)
    if alpha is None:  # (1 - 2y) alpha_t = 1 - 2y
        return loss.neg_(), grad.mul_(torch.mul(y, -2.0, out=u).add_(1.0))
    factor = torch.neg(y, out=u).add_(1.0 - alpha)  # (1 - 2y) alpha_t = (1 - alpha) - y for 0/1 targets
    grad.mul_(factor)
    return loss.mul_(factor.abs_().neg_()), grad  # alpha_t = |factor|; the minus sign of -log p_t


def _sigmoid_focal(
    x: torch.Tensor, y: torch.Tensor, gamma: float, alpha: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha_t (1 - p_t)**gamma BCE(x, y)`` and its derivative in x (closed form, soft y allowed).

    With ``u = 1 - p_t = p + y - 2 p y`` (floored at 1e-12): ``d/dx = alpha_t [(p - y) u**gamma
    + BCE gamma u**(gamma - 1) (1 - 2 y) p (1 - p)]``.
    """
    bce = F.softplus(x).addcmul_(x, y, value=-1.0)  # softplus(x) - x y, stable for any x
    p = torch.sigmoid(x)
    grad = torch.sub(p, y)
    u = torch.addcmul(p, p, y, value=-2.0)  # p (1 - 2y) = u - y
    du = p.neg_().add_(1.0).mul_(u)  # (1 - 2y) p (1 - p) = du/dx, in p's buffer
    u.add_(y).clamp_(min=_EPS)
    if gamma == 2.0:  # the default: u**(gamma - 1) = u
        du.mul_(u)
        w = u.mul_(u)
    else:
        w = u.pow(gamma)
        du.mul_(w).div_(u)
    grad.mul_(w).add_(du.mul_(bce), alpha=gamma)  # (p - y) u**gamma + gamma u**(gamma - 1) BCE du/dx
    loss = bce.mul_(w)
    if alpha is not None:
        alpha_t = torch.addcmul(1.0 - alpha, y, 2.0 * alpha - 1.0, out=du)  # alpha y + (1 - alpha)(1 - y)
        loss.mul_(alpha_t)
        grad.mul_(alpha_t)
    return loss, grad


def _sigmoid_soft_dice(x: torch.Tensor, y: torch.Tensor, smooth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft Dice ``1 - (2 p y + s) / (p + y + s) = (p + y - 2 p y) / (p + y + s)`` and its derivative
    ``(s - 2 y (y + s)) p (1 - p) / (p + y + s)**2``, in three buffers."""
    p = torch.sigmoid(x)
    r = torch.add(p, y).add_(smooth).reciprocal_()  # 1 / (p + y + s)
    loss = torch.addcmul(p, p, y, value=-2.0).add_(y).mul_(r)
    grad = p.addcmul_(p, p, value=-1.0).mul_(r.mul_(r))  # p (1 - p) / D**2
    return loss, grad.mul_(torch.add(y, smooth, out=r).mul_(y).mul_(-2.0).add_(smooth))


def _f1_weighted_bce(
    x: torch.Tensor,
    y: torch.Tensor,
    half_f1: torch.Tensor,
    p: torch.Tensor,
    extent: float,
    buffer: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y (1 - a) softplus(-x) + (1 - y) a softplus(x)`` with ``a = F1 / 2`` held constant, computed as
    ``w softplus(x) - x y (1 - a)`` with ``w = a + y (1 - 2a)``; derivative ``p w - y (1 - a)``.
    ``p = sigmoid(x)`` is reused as a buffer, and so is ``buffer`` (x's shape) if given; three in all."""
    w = torch.addcmul(half_f1, y, 1.0 - 2.0 * half_f1, out=buffer)
    loss = _neg_softplus(x, extent).mul_(w)  # -w softplus(x)
    grad = p.mul_(w)
    positive = torch.mul(y, 1.0 - half_f1, out=w)  # y (1 - a)
    return loss.addcmul_(x, positive).neg_(), grad.sub_(positive)


def _multilabel_ce(
    s: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None, ignore_index: int, extent: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``log(1 + sum_neg e^s) + log(1 + sum_pos e^-s)`` and its derivative (a softmax in each group).

    ``y``: targets in [0, 1] (0 where ignored; anything but 0 or 1 raises), ``valid``: None when nothing
    is ignored, ``extent``: ``max |s|``. When ``extent + log C <= 80`` no exponential or row sum can
    overflow and the sums are taken as they are; otherwise each group is shifted by its own max (floored
    at 0, the implicit 0 logit). Ignored entries get -inf and drop out of both groups. Float arithmetic on
    ``y`` in two [..., C] buffers instead of boolean masks (several times faster on CPU) on the common path.
    """
    buffer = torch.rsub(y, 1.0)
    if torch.dot(y.reshape(-1), buffer.reshape(-1)) > 0:  # some y strictly inside (0, 1)
        raise ValueError(
            f"multi-label targets must be 0, 1 or ignore_index={ignore_index}; got {y[buffer * y > 0][0]:g}"
        )
    t = torch.addcmul(s, s, y, value=-2.0)  # s for negatives, -s for positives
    if valid is not None:
        t.masked_fill_(~valid, -math.inf)
    if extent + math.log(max(s.shape[-1], 1)) <= _FAST_EXTENT:
        e_neg = buffer.mul_(t.exp_())  # exact: 1 - y is 0 or 1
        e_pos = t.sub_(e_neg)
        d_pos, d_neg = e_pos.sum(-1).add_(1.0), e_neg.sum(-1).add_(1.0)
        loss = d_pos.log() + d_neg.log()
    else:
        # group maxima through masks: an additive offset below every entry overflows float32 for huge |s|
        positive = y > 0  # exact: y is 0 or 1
        m_pos = torch.where(positive, t, -math.inf).amax(-1).clamp_(min=0.0)
        m_neg = torch.where(positive, -math.inf, t).amax(-1).clamp_(min=0.0)
        e = t.sub_(torch.lerp(m_neg[..., None], m_pos[..., None], y, out=buffer)).exp_()
        e_pos = torch.mul(e, y, out=buffer)
        e_neg = e.sub_(e_pos)  # exact: y is 0 or 1
        d_pos = e_pos.sum(-1).add_(torch.exp(-m_pos))
        d_neg = e_neg.sum(-1).add_(torch.exp(-m_neg))
        loss = m_pos + d_pos.log() + m_neg + d_neg.log()
    grad = e_neg.mul_(d_neg.reciprocal_()[..., None]).addcmul_(
        e_pos, d_pos.reciprocal_()[..., None], value=-1.0
    )
    return loss, grad


def _cross_entropy(
    a: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, scale: float, fresh: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_y (logsumexp(a) - a_y)`` per row and its derivative ``scale w_y (softmax(a) - onehot(y))`` in the
    logits z, for adjusted logits ``a = scale z + offsets`` ``[N, C]``. ``fresh``: ``a`` is a temporary that
    may be overwritten. One exp and a few in-place passes (PyTorch's fused kernel makes two exp passes);
    probabilities below e^-80 are floored there."""
    index = y[:, None]
    shifted = a.amax(-1, keepdim=True).neg_()
    e = a.add_(shifted) if fresh else torch.add(a, shifted)
    e_y = e.gather(-1, index)
    # exp(-80) is still a normal float: no denormals (slow on CPU) from strongly scaled logits, e.g. LDAM's
    # s = 30; the floor adds at most C e^-80 to the sum
    total = e.clamp_(min=-_FAST_EXTENT).exp_().sum(-1, keepdim=True)
    loss = total.log() - e_y
    step = torch.full_like(e_y, scale) if weight is None else weight[y][:, None] * scale
    if weight is not None:
        loss.mul_(weight[y][:, None])
    grad = e.mul_(step / total).scatter_add_(-1, index, step.neg_())
    return loss.squeeze(-1), grad


def _softmax_dice(
    z: torch.Tensor, y: torch.Tensor, alpha: float, smooth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row Dice ``sum_c 1 - (2 p~_c q_c + s) / (p~_c + q_c + s)``, ``q = onehot(y)``, ``p~ = p (1 - p)**alpha``,
    ``p = softmax(z)``, and its derivative.

    A non-target class adds ``p~ / (p~ + s)``, the target ``(1 - p~) / (1 + s + p~)``. With ``G = dloss/dp``
    (``s (dp~/dp) / (p~ + s)**2`` off target, ``-(2 + s) (dp~/dp) / (1 + s + p~)**2`` on it) and
    ``dp~/dp = (1 - p)**(alpha - 1) (1 - (1 + alpha) p)`` (``1 - p`` floored at 1e-12), the gradient is
    ``p G - p <p, G>``.
    """
    index = y[:, None]
    p = torch.softmax(z, -1)
    if not alpha:
        adjusted, slope = p, None
    else:
        q = torch.rsub(p, 1.0).clamp_(min=_EPS)
        if alpha == 1:
            adjusted, slope = q.mul_(p), None  # (1 - p)**(alpha - 1) = 1
        else:
            slope = q.log_().mul_(alpha - 1.0).exp_()  # (1 - p)**(alpha - 1)
            adjusted = torch.rsub(p, 1.0).mul_(slope).mul_(p)
    r = torch.add(adjusted, smooth).reciprocal_()  # 1 / (p~ + s)
    p_y, adjusted_y = p.gather(-1, index), adjusted.gather(-1, index)
    # every class as a non-target, then the target's own term in place of its non-target one
    ratio = adjusted.mul_(r) if adjusted is not p else torch.mul(p, r)
    loss = (
        ratio.sum(-1, keepdim=True) - ratio.gather(-1, index) + (1 - adjusted_y) / (1 + smooth + adjusted_y)
    )
    del ratio, adjusted
    grad = r.mul_(r).mul_(smooth)
    slope_y = 1.0
    if alpha:
        if slope is not None:
            grad.mul_(slope)
            slope_y = (1.0 - p_y).clamp_(min=_EPS).pow_(alpha - 1.0)
        grad.addcmul_(grad, p, value=-(1.0 + alpha))
        slope_y = slope_y * (1.0 - (1.0 + alpha) * p_y)
    grad.scatter_(-1, index, -(2.0 + smooth) * slope_y / (1.0 + smooth + adjusted_y) ** 2)
    grad.mul_(p)
    return loss.squeeze(-1), grad.addcmul_(p, grad.sum(-1, keepdim=True), value=-1.0)


def _softmax_f1_ce(
    z: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``-sum_c a_c log(1 - p_c) + a_y log(1 - p_y) - (1 - a_y) log p_y`` with ``a = F1 / 2`` of the
    batch (one-vs-rest smooth F1 over the valid rows, held constant) and its derivative ``h - p sum_c h_c``,
    ``h_c = a_c p_c / (1 - p_c)`` off target, ``h_y = -(1 - a_y)`` (``1 - p`` floored at 1e-12)."""
    index = y[:, None]
    logp = torch.log_softmax(z, -1)
    logp_y = logp.gather(-1, index).squeeze(-1)
    p = torch.exp(logp)
    weight = valid.to(z.dtype)
    predicted = weight @ p
    true_positive = z.new_zeros(z.shape[-1]).index_add_(0, y, logp_y.exp() * weight)
    positives = z.new_zeros(z.shape[-1]).index_add_(0, y, weight)
    half_f1 = true_positive / (positives + predicted).clamp(min=_EPS)
    q = torch.neg(p, out=logp).add_(1.0).clamp_(min=_EPS)  # 1 - p, in logp's buffer
    h = torch.div(p, q).mul_(half_f1)
    log_q = q.log_()
    a_y = half_f1[y]
    loss = a_y * log_q.gather(-1, index).squeeze(-1) - log_q @ half_f1 - (1 - a_y) * logp_y
    h.scatter_(-1, index, (a_y - 1.0)[:, None])
    return loss, h.addcmul_(p, h.sum(-1, keepdim=True), value=-1.0)


def _softmax_per_item(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    gamma: float,
    label_smoothing: float,
) -> torch.Tensor:
    """``sum_c w_c q_c (1 - p_c)**gamma (-log p_c)`` with ``q = (1 - eps) onehot(y) + eps / C``.

    ``weights``: None, a scalar or ``[C]``. Without focusing (gamma = 0) this is PyTorch's fused weighted,
    label-smoothed cross-entropy with ``reduction="none"``.
    """
    per_class = weights if weights is not None and weights.dim() else None
    scalar = weights if weights is not None and not weights.dim() else 1.0
    if not gamma:
        return scalar * F.cross_entropy(
            logits, labels, weight=per_class, reduction="none", label_smoothing=label_smoothing
        )
    logp = logits.log_softmax(-1)
    per = _modulated_nll(logp.gather(-1, labels[:, None]).squeeze(-1), gamma)
    if per_class is not None:
        per = per * per_class[labels]
    if label_smoothing:
        full = _modulated_nll(logp, gamma)
        smooth = (full @ per_class if per_class is not None else full.sum(-1)) / logp.shape[-1]
        per = (1.0 - label_smoothing) * per + label_smoothing * smooth
    return scalar * per


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
    """Shared checks and reduction. Subclasses implement ``per_item(logits, labels) -> (per_item, valid or None)``."""

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
        _check_num_items(num_items_in_batch)
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
    """Softmax cross-entropy on adjusted logits ``scale z + offsets``, with optional class weights and label
    smoothing. Without label smoothing the value and gradient come from one hand-written pass."""

    def __init__(self, *, label_smoothing: float = 0.0, ignore_index: int = -100, check_finite: bool = True):
        super().__init__(ignore_index=ignore_index, check_finite=check_finite)
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
            return _softmax_per_item(self.adjust_logits(z, y), y, weights, 0.0, self.label_smoothing), valid

        def compute(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a = self.adjust_logits(z, y)
            return _cross_entropy(a, y, weights, self.logit_scale, fresh=a is not z)

        def reference(z: torch.Tensor) -> torch.Tensor:
            return _softmax_per_item(self.adjust_logits(z, y), y, weights, 0.0, 0.0)

        return _PrecomputedGrad.apply(z, compute, reference), valid


class WeightedCrossEntropyLoss(_FromCounts, _SoftmaxLoss):
    """Cross-entropy with class weights: ``-w_y log softmax(z)_y`` (label smoothing: PyTorch's formula).

    Weights come from ``class_counts`` with ``weighting`` = ``"inverse"`` (default), ``"sqrt_inverse"`` or
    ``"effective_number"`` (``beta``, default 0.999), normalised to ``sum(w) = C``; or pass ``weights``
    directly (used as given). The reduction is ``sum_i w_{y_i} l_i / N`` (N = valid targets or
    ``num_items_in_batch``), not PyTorch's ``/ sum_i w_{y_i}``, so micro-batches add up exactly.
    """

    def __init__(
        self,
        class_counts: CountsLike | None = None,
        weighting: str = "inverse",
        *,
        beta: float = 0.999,
        weights: CountsLike | None = None,
        smoothing: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            label_smoothing=label_smoothing, ignore_index=ignore_index, check_finite=check_finite
        )
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


class FocalLoss(_FromCounts, _ImbalanceLoss):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)**gamma log p_t``.

    ``activation="softmax"`` (default): multi-class, ``p_t = softmax(z)_y``; ``alpha`` is None, a scalar or
    per-class weights ``[C]``; composes with ``label_smoothing``. ``activation="sigmoid"``: binary or
    multi-label with targets of the logits' shape, ``p_t = p`` for positives and ``1 - p`` for negatives,
    ``alpha_t = alpha`` / ``1 - alpha`` (scalar or ``[C]`` in [0, 1]) as in torchvision's
    ``sigmoid_focal_loss`` (whose default is alpha=0.25; here None means no alpha term).
    ``gamma >= 0`` (default 2); ``gamma = 0`` without alpha is cross-entropy. ``1 - p_t`` is floored at 1e-12
    so gradients stay finite for ``0 < gamma < 1``. ``from_dataset(ds, weighting=...)`` sets ``alpha`` to
    class weights (softmax only).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | CountsLike | None = None,
        *,
        activation: str = "softmax",
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        check_finite: bool = True,
    ) -> None:
        super().__init__(ignore_index=ignore_index, check_finite=check_finite)
        self.gamma = check_float("gamma", gamma, minimum=0.0, maximum=MAX_EXPONENT)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.label_smoothing = check_float(
            "label_smoothing", label_smoothing, minimum=0.0, maximum=1.0, max_open=True
        )
        if activation == "sigmoid" and label_smoothing:
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
            return _softmax_per_item(z, y, alpha, self.gamma, self.label_smoothing), valid
        x, y, valid = _sigmoid_inputs(logits, labels, self.ignore_index)
        alpha = (
            None if self.alpha is None else _per_class(self.alpha, x.shape[-1] if x.dim() else 1, "alpha", x)
        )
        buffer = torch.empty_like(x)
        if _extent(x, extent) <= _FAST_EXTENT and _is_hard(y, buffer):
            hard_alpha = float(alpha) if alpha is not None and not alpha.dim() else alpha
            return _PrecomputedGrad.apply(
                x,
                lambda x: _sigmoid_focal_hard(x, y, self.gamma, hard_alpha, buffer),
                lambda x: _plain_sigmoid_focal(x, y, self.gamma, hard_alpha),
            ), valid
        return _PrecomputedGrad.apply(
            x,
            lambda x: _sigmoid_focal(x, y, self.gamma, alpha),
            lambda x: _plain_sigmoid_focal(x, y, self.gamma, alpha),
        ), valid

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, activation={self.activation!r}, alpha={'None' if self.alpha is None else 'set'}"


class LogitAdjustedLoss(_FromCounts, _SoftmaxLoss):
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``-log softmax(z + tau log pi)_y``.

    ``priors``: class counts or probabilities (normalised here); ``tau >= 0`` (default 1; 0 is plain
    cross-entropy). Predict with the raw logits: the adjustment is for training only. A zero prior is an
    error unless ``smoothing > 0`` is added to every count.
    """

    def __init__(
        self,
        priors: CountsLike,
        tau: float = 1.0,
        *,
        smoothing: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            label_smoothing=label_smoothing, ignore_index=ignore_index, check_finite=check_finite
        )
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
        self,
        priors: CountsLike,
        *,
        smoothing: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            priors,
            tau=1.0,
            smoothing=smoothing,
            label_smoothing=label_smoothing,
            ignore_index=ignore_index,
            check_finite=check_finite,
        )


class LDAMLoss(_FromCounts, _SoftmaxLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019) with deferred re-weighting (DRW).

    ``-log softmax(s (z - m_y e_y))_y`` with margins ``m_c ∝ n_c**-1/4`` scaled so the largest is
    ``max_margin`` (0.5) and ``scale`` s = 30 (the paper's values, which assume cosine logits in [-1, 1];
    use a smaller scale for an ordinary linear head). While ``reweight`` is True the per-class weights
    ``(1 - beta) / (1 - beta**n_c)`` (``drw_beta`` = 0.9999, normalised to sum C) multiply the loss;
    :class:`~hfplug_imbalance.LDAMDRWCallback` switches it on late in training.
    """

    def __init__(
        self,
        class_counts: CountsLike,
        *,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_beta: float = 0.9999,
        smoothing: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            label_smoothing=label_smoothing, ignore_index=ignore_index, check_finite=check_finite
        )
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
    per batch, so it adds up exactly over micro-batches and ranks.
    """

    def __init__(
        self,
        alpha: float = 0.0,
        smooth: float = 1.0,
        *,
        activation: str = "softmax",
        ignore_index: int = -100,
        check_finite: bool = True,
    ) -> None:
        super().__init__(ignore_index=ignore_index, check_finite=check_finite)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=MAX_EXPONENT)
        # smooth > 0 keeps 0/0 away from classes with p = q = 0; at most 1e30 so p + q + smooth stays exact
        # enough in float32 and (p + q + smooth)**2 finite
        self.smooth = check_float("smooth", smooth, minimum=0.0, maximum=1e30, min_open=True)
        self.activation = check_choice("activation", activation, ACTIVATIONS)

    def _adjusted(self, p: torch.Tensor, one_minus_p: torch.Tensor) -> torch.Tensor:
        if not self.alpha:
            return p
        factor = one_minus_p.clamp(min=_EPS)
        return p * (factor if self.alpha == 1 else factor.pow(self.alpha))

    def _dice(self, p: torch.Tensor, q: torch.Tensor | float) -> torch.Tensor:
        return 1.0 - (2.0 * p * q + self.smooth) / (p + q + self.smooth)

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.activation == "softmax":
            z, y, valid = _softmax_inputs(logits, labels, self.ignore_index)
            return _PrecomputedGrad.apply(
                z,
                lambda z: _softmax_dice(z, y, self.alpha, self.smooth),
                lambda z: _plain_softmax_dice(z, y, self.alpha, self.smooth),
            ), valid
        x, y, valid = _sigmoid_inputs(logits, labels, self.ignore_index)
        if not self.alpha:
            return _PrecomputedGrad.apply(
                x,
                lambda x: _sigmoid_soft_dice(x, y, self.smooth),
                lambda x: _plain_sigmoid_soft_dice(x, y, self.smooth),
            ), valid
        return self._dice(self._adjusted(torch.sigmoid(x), torch.sigmoid(-x)), y), valid

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, smooth={self.smooth}, activation={self.activation!r}"


class F1WeightedCrossEntropyLoss(_ImbalanceLoss):
    """Cross-entropy re-weighted by the batch's smooth F1 (Su 2020, "smooth F1 -> weighted cross-entropy").

    Per class c (one-vs-rest): ``F1_c = 2 sum_P p / (|P| + sum p)`` over the valid targets of the batch,
    detached; loss ``(1 - F1_c/2) (-log p)`` for positives and ``(F1_c/2) (-log(1 - p))`` for negatives.
    ``activation="softmax"`` (default): labels ``[...]``, p = softmax, summed over classes per target;
    ``"sigmoid"``: targets of the logits' shape, one F1 per column of the last dimension (1-D logits are
    one binary class). F1 is recomputed on every call, so under gradient accumulation or DDP the weights
    come from the micro-batch on each rank (the normalisation is still exact).
    """

    def __init__(self, *, activation: str = "softmax", ignore_index: int = -100, check_finite: bool = True):
        super().__init__(ignore_index=ignore_index, check_finite=check_finite)
        self.activation = check_choice("activation", activation, ACTIVATIONS)

    def per_item(
        self, logits: torch.Tensor, labels: Any, extent: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.activation == "softmax":
            z, y, valid = _softmax_inputs(logits, labels, self.ignore_index)
            return _PrecomputedGrad.apply(
                z, lambda z: _softmax_f1_ce(z, y, valid), lambda z: _plain_softmax_f1_ce(z, y, valid)
            ), valid
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
            half_f1 = true_positive / (column_sums(y) + predicted).clamp(min=_EPS)
        extent = _extent(x, extent)
        return _PrecomputedGrad.apply(
            x,
            lambda x: _f1_weighted_bce(x, y, half_f1, p, extent, buffer),
            lambda x: _plain_f1_weighted_bce(x, y, half_f1),
        ), valid

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class MultiLabelCategoricalCrossEntropyLoss(_ImbalanceLoss):
    """Multi-label categorical cross-entropy (Su 2020; ZLPR): per row
    ``log(1 + sum_{neg} e^{s_i}) + log(1 + sum_{pos} e^{-s_j})``; predict label j when ``s_j > 0``.

    Logits ``[..., C]`` and multi-hot targets of the same shape; ``ignore_index`` entries belong to neither
    sum and all-ignored rows are skipped. The Trainer counts label entries, so ``num_items_in_batch`` is
    divided by C to count rows (exact when whole rows are ignored, as for padding tokens).
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
        extent = _extent(s, extent)
        per_row = _PrecomputedGrad.apply(
            s,
            lambda s: _multilabel_ce(s, y, valid, self.ignore_index, extent),
            lambda s: _plain_multilabel_ce(s, y, valid),
        )
        return per_row, None if valid is None else valid.any(-1)

    def _items(self, num_items_in_batch: Any, logits: torch.Tensor) -> Any:
        return None if num_items_in_batch is None else num_items_in_batch / logits.shape[-1]
