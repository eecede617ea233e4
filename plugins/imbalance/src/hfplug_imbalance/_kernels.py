"""Per-item loss formulas and the hand-written value-and-gradient kernels that speed up the common cases.

Each loss is defined once, as a differentiable *formula* in plain torch operations. Where autograd through
that formula is slow (several fresh ``[N, C]`` buffers and passes), a :class:`Kernel` adds a hand-written
pass that returns the value and the closed-form gradient together, with no graph, working in place on its
own buffers (never on the logits). The formula stays the definition and is what a double backward
(``create_graph=True``, e.g. hfplug-adversarial's ``GradientPenalty`` through the loss) differentiates, since
the kernel's gradient is not itself differentiable.

Everything here takes float32 (or float64) tensors already flattened and checked by ``losses.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Floor for 1 - p before a fractional power or a log: keeps gradients finite for gamma < 1 at p -> 1.
EPS = 1e-12
# Logits with |x| <= 80 keep sigmoid(+-x) and exp(+-x) normal float32 numbers, so their logs are finite: the
# element-wise losses then take a path with fewer passes (one sigmoid and one log instead of softplus).
FAST_EXTENT = 80.0


class _Fused(torch.autograd.Function):
    """Autograd node of a :class:`Kernel`: value and gradient from one no-grad pass.

    Backward scales the stored gradient by the upstream one in place and hands that buffer on (no new
    ``[..., C]`` tensor). A later backward through a kept graph (``retain_graph=True``) finds the buffer gone
    and recomputes it with the kernel; under ``create_graph=True`` (grad mode on inside backward, which is
    how autograd runs a backward that must itself be differentiable) it differentiates the formula instead.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: Kernel) -> torch.Tensor:
        loss, grad = kernel.value_and_grad(x)
        ctx.save_for_backward(x)
        ctx.kernel, ctx.grad, ctx.row = kernel, grad, loss.dim() < x.dim()
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            (grad,) = torch.autograd.grad(ctx.kernel.formula(x), x, grad_output, create_graph=True)
            return grad, None
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # an earlier backward through this kept graph handed the buffer on
            grad = ctx.kernel.value_and_grad(x)[1]
        return grad.mul_(grad_output[..., None] if ctx.row else grad_output), None


class Kernel:
    """A per-item loss of ``x`` with a hand-written pass; calling it applies the pass as an autograd node.

    ``formula(x)``: the loss in differentiable operations. ``value_and_grad(x) -> (loss, dloss/dx)``: the
    same values and their gradient without a graph; it may be called again on the same ``x`` (after a
    ``retain_graph`` backward). ``loss`` has the shape of ``x`` or of ``x`` without its last dimension.
    """

    def formula(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Fused.apply(x, self)


# ---------------------------------------------------------------------------------------------- helpers


def one_minus_p(logp: torch.Tensor) -> torch.Tensor:
    """``1 - exp(logp)`` without cancellation, floored at 1e-12."""
    return (-torch.expm1(logp)).clamp(min=EPS)


def softmax_complement(
    p: torch.Tensor, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``1 - p`` of softmax probabilities ``p`` over the last dimension, floored at 1e-12; the index of each
    row's likeliest class m and its ``1 - p_m``, the sum of the other probabilities: exact where ``p_m``
    rounds to 1 (``1 - p`` and ``expm1(log_softmax)`` give 0 there). Outside autograd, ``p`` is briefly
    written (m's entry zeroed for the sum) and restored; ``out``: a buffer of ``p``'s shape for ``1 - p``."""
    top, likeliest = p.max(-1, keepdim=True)
    if p.requires_grad:
        others = p.scatter(-1, likeliest, 0.0).sum(-1, keepdim=True)
    else:
        others = p.scatter_(-1, likeliest, 0.0).sum(-1, keepdim=True)
        p.scatter_(-1, likeliest, top)
    q_m = others.clamp(min=EPS)
    q = torch.neg(p, out=out).add_(1.0) if out is not None else torch.rsub(p, 1.0)
    return q.scatter_(-1, likeliest, q_m).clamp_(min=EPS), likeliest, q_m


def softmax_backward(
    h: torch.Tensor, p: torch.Tensor, q_m: torch.Tensor, likeliest: torch.Tensor
) -> torch.Tensor:
    """``h - p sum_c h_c``, the gradient through the softmax ``p`` of a loss with ``h_c = p_c dloss/dp_c``
    (``h`` is overwritten). At the likeliest class m, where ``h_m`` can be huge (a ``1 / (1 - p_m)`` factor)
    and ``h_m - p_m sum h`` would cancel, it is ``h_m (1 - p_m) - p_m sum_{c != m} h_c`` with ``q_m = 1 - p_m``
    from :func:`softmax_complement` and the sum taken without ``h_m``."""
    h_m, p_m = h.gather(-1, likeliest), p.gather(-1, likeliest)
    rest = h.scatter_(-1, likeliest, 0.0).sum(-1, keepdim=True)  # h_m is overwritten below anyway
    return h.addcmul_(p, rest + h_m, value=-1.0).scatter_(-1, likeliest, h_m * q_m - p_m * rest)


def extent(x: torch.Tensor, known: float | None = None) -> float:
    """``max |x|`` (``known`` when the finiteness check already computed it)."""
    if known is not None or not x.numel():
        return known or 0.0
    low, high = torch.aminmax(x.detach())  # a float, not a graph node: no autograd involvement
    return max(-float(low), float(high))


def is_hard(y: torch.Tensor, scratch: torch.Tensor) -> bool:
    """Whether every target in [0, 1] is exactly 0 or 1: ``y - y**2`` is 0 for those and positive (also in
    float32) for any other; ``scratch``: a buffer of y's shape that is overwritten."""
    return not bool(torch.addcmul(y, y, y, value=-1.0, out=scratch).amax() > 0) if y.numel() else True


def _neg_softplus(x: torch.Tensor, extent: float) -> torch.Tensor:
    """``-softplus(x) = log sigmoid(-x)`` in a new buffer: a sigmoid and a log when ``|x| <= 80``."""
    if extent <= FAST_EXTENT:
        return torch.neg(x).sigmoid_().log_()
    return F.softplus(x).neg_()


# --------------------------------------------------------------------------------------------- formulas


def softmax_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    gamma: float,
    label_smoothing: float,
) -> torch.Tensor:
    """``sum_c w_c q_c (1 - p_c)**gamma (-log p_c)`` per row, ``q = (1 - eps) onehot(y) + eps / C``.

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


def _modulated_nll(logp: torch.Tensor, gamma: float) -> torch.Tensor:
    """``-(1 - p)**gamma * log p`` (plain negative log-likelihood when gamma = 0)."""
    nll = -logp
    return nll * one_minus_p(logp).pow(gamma) if gamma else nll


def dice(
    p: torch.Tensor, one_minus_p: torch.Tensor, q: torch.Tensor, alpha: float, smooth: float
) -> torch.Tensor:
    """``1 - (2 p~ q + smooth) / (p~ + q + smooth)`` with ``p~ = p (1 - p)**alpha`` (``1 - p`` given, floored
    at 1e-12), element-wise."""
    if alpha:
        factor = one_minus_p.clamp(min=EPS)
        p = p * (factor if alpha == 1 else factor.pow(alpha))
    return 1.0 - (2.0 * p * q + smooth) / (p + q + smooth)


def f1_weighted_ce(
    log_p: torch.Tensor, log_q: torch.Tensor, y: torch.Tensor, half_f1: torch.Tensor
) -> torch.Tensor:
    """``-(y (1 - a) log p + (1 - y) a log(1 - p))`` element-wise, ``a = F1 / 2`` per class (constant),
    ``log_q = log(1 - p)``."""
    return -(y * (1 - half_f1) * log_p + (1 - y) * half_f1 * log_q)


def softmax_half_f1(
    p: torch.Tensor, p_y: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Half the one-vs-rest smooth F1 per class, ``sum_{rows of c} p_c / (n_c + sum_rows p_c)`` over the rows
    with ``weight`` 1 (valid) of probabilities ``p`` ``[N, C]`` with ``p_y`` the labels' ones."""
    predicted = weight @ p
    true_positive = p.new_zeros(p.shape[-1]).index_add_(0, y, p_y * weight)
    positives = p.new_zeros(p.shape[-1]).index_add_(0, y, weight)
    return true_positive / (positives + predicted).clamp(min=EPS)


# ---------------------------------------------------------------------------------------------- kernels


@dataclass(eq=False)
class SoftmaxCrossEntropy(Kernel):
    """``w_y (logsumexp(a) - a_y)`` per row of the adjusted logits ``a = adjust(z, y) = scale z + offsets``.

    ``adjust`` returns ``z`` itself or a new tensor; ``weight``: None or ``[C]``. One exp and a few in-place
    passes (PyTorch's fused kernel makes two exp passes); probabilities below e^-80 are floored there.
    """

    y: torch.Tensor
    weight: torch.Tensor | None
    scale: float
    adjust: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def formula(self, z: torch.Tensor) -> torch.Tensor:
        return softmax_cross_entropy(self.adjust(z, self.y), self.y, self.weight, 0.0, 0.0)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Derivative ``scale w_y (softmax(a) - onehot(y))`` in z."""
        a, y, weight, scale = self.adjust(z, self.y), self.y, self.weight, self.scale
        index = y[:, None]
        shifted = a.amax(-1, keepdim=True).neg_()
        e = a.add_(shifted) if a is not z else torch.add(a, shifted)
        e_y = e.gather(-1, index)
        # exp(-80) is still a normal float: no denormals (slow on CPU) from strongly scaled logits, e.g.
        # LDAM's s = 30; the floor adds at most C e^-80 to the sum
        total = e.clamp_(min=-FAST_EXTENT).exp_().sum(-1, keepdim=True)
        loss = total.log() - e_y
        step = torch.full_like(e_y, scale) if weight is None else weight[y][:, None] * scale
        if weight is not None:
            loss.mul_(weight[y][:, None])
        grad = e.mul_(step / total).scatter_add_(-1, index, step.neg_())
        return loss.squeeze(-1), grad


@dataclass(eq=False)
class SigmoidFocal(Kernel):
    """``alpha_t (1 - p_t)**gamma BCE(x, y)`` per entry (``1 - p_t`` floored at 1e-12).

    ``alpha``: None, a scalar or ``[C]`` (a tensor; a Python float is taken for hard targets only).
    ``scratch``: a buffer of x's shape, given when the targets are 0/1 and ``|x| <= 80``, which selects the
    three-buffer pass for hard targets.
    """

    y: torch.Tensor
    gamma: float
    alpha: float | torch.Tensor | None
    scratch: torch.Tensor | None = None

    def formula(self, x: torch.Tensor) -> torch.Tensor:
        y, alpha = self.y, self.alpha
        p = torch.sigmoid(x)
        loss = (p + y - 2 * p * y).clamp(min=EPS) ** self.gamma * F.binary_cross_entropy_with_logits(
            x, y, reduction="none"
        )
        return loss if alpha is None else loss * (alpha * y + (1 - alpha) * (1 - y))

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scratch is not None:
            return self._hard(x)
        return self._soft(x)

    def _hard(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """0/1 targets: with ``t = (2y - 1) x``, ``p_t = sigmoid(t)``, ``u = 1 - p_t``, derivative
        ``(1 - 2y) alpha_t u**gamma (u - gamma p_t log p_t)``; the ``u**(gamma - 1)`` of the general form
        cancels, so the gradient is finite for every ``gamma >= 0``."""
        y, gamma, alpha = self.y, self.gamma, self.alpha
        if isinstance(alpha, torch.Tensor) and not alpha.dim():
            alpha = float(alpha)  # in-place arithmetic with a Python scalar
        u = torch.addcmul(x, x, y, value=-2.0, out=self.scratch).neg_().sigmoid_()  # p_t
        loss = torch.log(u)  # log p_t, made the loss in place below
        grad = torch.mul(u, loss).mul_(-gamma).add_(u.neg_().add_(1.0))  # u - gamma p_t log p_t
        if gamma:
            weight = u.mul_(u) if gamma == 2.0 else u if gamma == 1.0 else u.log_().mul_(gamma).exp_()
            grad.mul_(weight)
            loss.mul_(weight)
        if alpha is None:  # (1 - 2y) alpha_t = 1 - 2y
            return loss.neg_(), grad.mul_(torch.mul(y, -2.0, out=u).add_(1.0))
        factor = torch.neg(y, out=u).add_(1.0 - alpha)  # (1 - 2y) alpha_t = (1 - alpha) - y for 0/1 targets
        grad.mul_(factor)
        return loss.mul_(factor.abs_().neg_()), grad  # alpha_t = |factor|; the minus sign of -log p_t

    def _soft(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Any targets in [0, 1]: with ``u = 1 - p_t = p + y - 2 p y``, derivative
        ``alpha_t [(p - y) u**gamma + BCE gamma u**(gamma - 1) (1 - 2 y) p (1 - p)]``."""
        y, gamma, alpha = self.y, self.gamma, self.alpha
        bce = F.softplus(x).addcmul_(x, y, value=-1.0)  # softplus(x) - x y, stable for any x
        p = torch.sigmoid(x)
        grad = torch.sub(p, y)
        u = torch.addcmul(p, p, y, value=-2.0)  # p (1 - 2y) = u - y
        du = p.neg_().add_(1.0).mul_(u)  # (1 - 2y) p (1 - p) = du/dx, in p's buffer
        u.add_(y).clamp_(min=EPS)
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


@dataclass(eq=False)
class SigmoidSoftDice(Kernel):
    """Soft Dice per entry ``1 - (2 p y + s) / (p + y + s)``, ``p = sigmoid(x)`` (Dice with alpha = 0)."""

    y: torch.Tensor
    smooth: float

    def formula(self, x: torch.Tensor) -> torch.Tensor:
        return dice(torch.sigmoid(x), torch.sigmoid(-x), self.y, 0.0, self.smooth)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p + y - 2 p y) / (p + y + s)`` and ``(s - 2 y (y + s)) p (1 - p) / (p + y + s)**2``, three buffers."""
        y, smooth = self.y, self.smooth
        p = torch.sigmoid(x)
        r = torch.add(p, y).add_(smooth).reciprocal_()  # 1 / (p + y + s)
        loss = torch.addcmul(p, p, y, value=-2.0).add_(y).mul_(r)
        grad = p.addcmul_(p, p, value=-1.0).mul_(r.mul_(r))  # p (1 - p) / D**2
        return loss, grad.mul_(torch.add(y, smooth, out=r).mul_(y).mul_(-2.0).add_(smooth))


@dataclass(eq=False)
class SigmoidF1CrossEntropy(Kernel):
    """:func:`f1_weighted_ce` with ``p = sigmoid(x)``: ``y (1 - a) softplus(-x) + (1 - y) a softplus(x)``.

    ``extent``: ``max |x|``. ``p``: ``sigmoid(x)`` if already computed (for the F1 weights), taken over as
    the gradient buffer by the first pass; ``scratch``: an optional buffer of x's shape.
    """

    y: torch.Tensor
    half_f1: torch.Tensor
    extent: float
    p: torch.Tensor | None = None
    scratch: torch.Tensor | None = None

    def formula(self, x: torch.Tensor) -> torch.Tensor:
        return f1_weighted_ce(F.logsigmoid(x), F.logsigmoid(-x), self.y, self.half_f1)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``w softplus(x) - x y (1 - a)`` with ``w = a + y (1 - 2a)``; derivative ``p w - y (1 - a)``."""
        y, half_f1 = self.y, self.half_f1
        p, self.p = (torch.sigmoid(x) if self.p is None else self.p), None
        w = torch.addcmul(half_f1, y, 1.0 - 2.0 * half_f1, out=self.scratch)
        loss = _neg_softplus(x, self.extent).mul_(w)  # -w softplus(x)
        grad = p.mul_(w)
        positive = torch.mul(y, 1.0 - half_f1, out=w)  # y (1 - a)
        return loss.addcmul_(x, positive).neg_(), grad.sub_(positive)


@dataclass(eq=False)
class MultiLabelCrossEntropy(Kernel):
    """Per row ``log(1 + sum_neg e^s) + log(1 + sum_pos e^-s)``.

    ``y``: targets in [0, 1] (0 where ignored; anything but 0 or 1 raises), ``valid``: None when nothing
    is ignored, ``extent``: ``max |s|``.
    """

    y: torch.Tensor
    valid: torch.Tensor | None
    ignore_index: int
    extent: float

    def formula(self, s: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(self.y, dtype=torch.bool) if self.valid is None else self.valid
        zeros = torch.zeros_like(s[..., :1])
        negatives = torch.cat([s.masked_fill(~keep | (self.y > 0), -math.inf), zeros], -1).logsumexp(-1)
        positives = torch.cat([(-s).masked_fill(~keep | (self.y == 0), -math.inf), zeros], -1).logsumexp(-1)
        return negatives + positives

    def value_and_grad(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value and derivative (a softmax in each group). When ``extent + log C <= 80`` no exponential or
        row sum can overflow and the sums are taken as they are; otherwise each group is shifted by its own
        max (floored at 0, the implicit 0 logit). Ignored entries get -inf and drop out of both groups.
        Float arithmetic on ``y`` in two [..., C] buffers instead of boolean masks (several times faster on
        CPU) on the common path."""
        y, valid = self.y, self.valid
        buffer = torch.rsub(y, 1.0)
        if torch.dot(y.reshape(-1), buffer.reshape(-1)) > 0:  # some y strictly inside (0, 1)
            raise ValueError(
                f"multi-label targets must be 0, 1 or ignore_index={self.ignore_index}; "
                f"got {y[buffer * y > 0][0]:g}"
            )
        t = torch.addcmul(s, s, y, value=-2.0)  # s for negatives, -s for positives
        if valid is not None:
            t.masked_fill_(~valid, -math.inf)
        if self.extent + math.log(max(s.shape[-1], 1)) <= FAST_EXTENT:
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


@dataclass(eq=False)
class SoftmaxDice(Kernel):
    """Per row ``sum_c`` :func:`dice` ``(p_c, onehot(y)_c)`` with ``p = softmax(z)``."""

    y: torch.Tensor
    alpha: float
    smooth: float

    def formula(self, z: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(z, -1)
        one_hot = F.one_hot(self.y, z.shape[-1]).to(z.dtype)
        return dice(p, softmax_complement(p)[0], one_hot, self.alpha, self.smooth).sum(-1)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A non-target class adds ``p~ / (p~ + s)``, the target ``(1 - p~) / (1 + s + p~)``. With
        ``G = dloss/dp`` (``s (dp~/dp) / (p~ + s)**2`` off target, ``-(2 + s) (dp~/dp) / (1 + s + p~)**2``
        on it) and ``dp~/dp = (1 - p)**(alpha - 1) (1 - (1 + alpha) p)``, the gradient is
        ``p G - p <p, G>`` (:func:`softmax_backward`)."""
        y, alpha, smooth = self.y, self.alpha, self.smooth
        index = y[:, None]
        p = torch.softmax(z, -1)
        q, likeliest, q_m = softmax_complement(p)  # 1 - p, exact where p rounds to 1
        slope = None  # (1 - p)**(alpha - 1), where alpha is not 0 or 1
        if not alpha:
            adjusted = p
        elif alpha == 1:
            adjusted = q.mul_(p)
        else:
            slope = q.log().mul_(alpha - 1.0).exp_()
            adjusted = q.mul_(slope).mul_(p)
        r = torch.add(adjusted, smooth).reciprocal_()  # 1 / (p~ + s)
        p_y, adjusted_y = p.gather(-1, index), adjusted.gather(-1, index)
        # every class as a non-target, then the target's own term in place of its non-target one
        ratio = adjusted.mul_(r) if adjusted is not p else torch.mul(p, r)
        loss = (
            ratio.sum(-1, keepdim=True)
            - ratio.gather(-1, index)
            + (1 - adjusted_y) / (1 + smooth + adjusted_y)
        )
        del ratio, adjusted
        r_m = r.gather(-1, likeliest)
        grad = r.mul_(math.sqrt(smooth)).square_()  # s / (p~ + s)**2 <= 1 / s: r * r alone can overflow
        deriv_y = 1.0  # dp~/dp = (1 - p)**(alpha - 1) (1 - (1 + alpha) p) at the target
        if alpha:
            if slope is not None:
                grad.mul_(slope)
                deriv_y = slope.gather(-1, index)
            grad.addcmul_(grad, p, value=-(1.0 + alpha))
            deriv_y = deriv_y * (1.0 - (1.0 + alpha) * p_y)
            floored = q_m <= EPS  # only the likeliest class can floor: there p~ = p 1e-12**alpha
            if bool(floored.any()):
                constant = r_m.square_().mul_(smooth * EPS**alpha)
                grad.scatter_(-1, likeliest, torch.where(floored, constant, grad.gather(-1, likeliest)))
                deriv_y = torch.where(floored & (likeliest == index), EPS**alpha, deriv_y)
        grad.scatter_(-1, index, -(2.0 + smooth) * deriv_y / (1.0 + smooth + adjusted_y) ** 2)
        return loss.squeeze(-1), softmax_backward(grad.mul_(p), p, q_m, likeliest)


@dataclass(eq=False)
class SoftmaxF1CrossEntropy(Kernel):
    """Per row ``sum_c`` :func:`f1_weighted_ce` with ``p = softmax(z)``, ``onehot(y)`` and
    :func:`softmax_half_f1` of the ``valid`` rows (recomputed from ``z``, held constant)."""

    y: torch.Tensor
    valid: torch.Tensor

    def formula(self, z: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(z, -1)
        with torch.no_grad():
            p = logp.exp()
            half_f1 = softmax_half_f1(
                p, p.gather(-1, self.y[:, None]).squeeze(-1), self.y, self.valid.to(z.dtype)
            )
        log_q = torch.log(softmax_complement(logp.exp())[0])
        return f1_weighted_ce(logp, log_q, F.one_hot(self.y, z.shape[-1]).to(z.dtype), half_f1).sum(-1)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``-sum_{c != y} a_c log(1 - p_c) - (1 - a_y) log p_y``; derivative ``h - p sum_c h_c``
        (:func:`softmax_backward`), ``h_c = a_c p_c / (1 - p_c)`` off target (0 where ``1 - p_c`` is floored:
        the floored term is constant), ``h_y = -(1 - a_y)``; ``1 - p`` from :func:`softmax_complement`."""
        y = self.y
        index = y[:, None]
        logp = torch.log_softmax(z, -1)
        logp_y = logp.gather(-1, index).squeeze(-1)
        p = torch.exp(logp)
        half_f1 = softmax_half_f1(p, logp_y.exp(), y, self.valid.to(z.dtype))
        q, likeliest, q_m = softmax_complement(p, out=logp)  # logp is no longer needed
        h = torch.div(p, q).mul_(half_f1)
        h.scatter_(-1, likeliest, h.gather(-1, likeliest).masked_fill_(q_m <= EPS, 0.0))  # only m can floor
        a_y = half_f1[y]
        h.scatter_(-1, index, (a_y - 1.0)[:, None])
        log_q = q.log_().scatter_(-1, index, 0.0)  # the target's own log(1 - p_y) is not in the loss
        loss = -(log_q @ half_f1) - (1 - a_y) * logp_y
        return loss, softmax_backward(h, p, q_m, likeliest)
