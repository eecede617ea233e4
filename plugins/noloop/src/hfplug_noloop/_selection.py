"""Order statistics and masking for the truncation warpers, fast on CPU.

``kth_largest`` / ``keep_top_k`` cut the rows into strided sets and run ``torch.topk`` only on the few sets
that can hold the answer; ``sorted_values`` sorts with NumPy's value-only ``sort`` on CPU (cheaper there than ``torch.sort``);
:func:`keep_at_least` masks with four float passes instead of a boolean ``torch.where`` / ``masked_fill``
(``plugins/noloop/bench`` measures the warpers against transformers' own).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

_NUMPY_DTYPES = (torch.float32, torch.float64)
_SMALLEST_SUBNORMAL = -1.401298464324817e-45  # -2^-149: d > this  <=>  d >= 0 for a float32 d
_SET_SIZE = 32  # values per set in kth_largest


def _as_numpy(scores: torch.Tensor) -> np.ndarray | None:
    """The scores as a NumPy array (no copy) when they live on the CPU, else None."""
    if scores.device.type != "cpu":
        return None
    if scores.dtype not in _NUMPY_DTYPES:
        scores = scores.float()  # half / bfloat16 values are exact in float32
    return scores.detach().numpy()


def sorted_values(scores: torch.Tensor) -> torch.Tensor:
    """Each row of ``scores`` sorted ascending (values only)."""
    array = _as_numpy(scores)
    if array is None:
        return torch.sort(scores, dim=-1).values
    return torch.from_numpy(np.sort(array, axis=-1))


class _Picked(NamedTuple):
    """The sets of a row that can hold its k largest values (see :func:`kth_largest`)."""

    index: torch.Tensor  # (R, size, k): the k sets with the largest maxima, as a gather index
    values: torch.Tensor  # (R, size * k + remainder): their values, then the remainder's
    maxima: torch.Tensor  # (R, n // size): every set's maximum
    split: int  # columns in sets; the remainder follows


def _pick(scores: torch.Tensor, k: int, size: int) -> _Picked | None:
    """The ``k`` of ``n // size`` strided sets (set j: columns j, j + n // size, ...) with the largest
    maxima, or None when that would not pay."""
    rows, width = scores.shape
    size = min(size, width // k)
    if size < 4:  # k is a large part of the row: no saving
        return None
    count = width // size
    sets = scores[:, : count * size].reshape(rows, size, count)  # a view; the maxima reduce over dim 1
    maxima = sets.amax(dim=1)
    top = torch.topk(maxima, k, dim=-1, sorted=False)
    index = top.indices[:, None, :].expand(rows, size, k)
    values = sets.gather(2, index).reshape(rows, size * k)
    if count * size < width:
        values = torch.cat([values, scores[:, count * size :]], dim=1)
    return _Picked(index, values, maxima, count * size)


def _kth(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(values, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)


def kth_largest(scores: torch.Tensor, k: int, size: int = _SET_SIZE) -> torch.Tensor:
    """The ``k``-th largest value of each row, repeats counted (``torch.topk(scores, k).values[:, -1:]``).

    The first ``n - n mod size`` values of a row form ``n // size`` disjoint strided sets of ``size``
    values; only the ``k`` sets with the largest maxima, plus the remainder, go to ``torch.topk``. Exact,
    ties included: those ``k`` maxima are ``k`` distinct values >= the k-th largest set maximum m, so
    the answer v is >= m; a value above v lies in a set whose maximum exceeds m (a picked one), and each
    picked set holds a value >= v when v = m. One pass over the row plus a top-k over ``k * size`` values.
    """
    picked = _pick(scores, k, size)
    return _kth(scores if picked is None else picked.values, k)


def keep_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``keep_at_least(scores, kth_largest(scores, k), -inf)``, writing only the picked sets when every value
    >= the k-th largest lies in them: when at most k sets have a maximum >= it (else a tie may sit outside)."""
    picked = _pick(scores, k, _SET_SIZE) if scores.dtype == torch.float32 else None
    if picked is None:
        return keep_at_least(scores, kth_largest(scores, k), -math.inf)
    kth = _kth(picked.values, k)
    if not bool(((picked.maxima >= kth).sum(dim=-1) <= k).all()):  # a tie may sit in an unpicked set
        return keep_at_least(scores, kth, -math.inf)
    rows, size = scores.shape[0], picked.index.shape[1]
    kept = keep_at_least(picked.values, kth, -math.inf)
    out = torch.full_like(scores, -math.inf)
    sets = out[:, : picked.split].view(rows, size, -1)
    sets.scatter_(2, picked.index, kept[:, : size * k].view(rows, size, k))
    out[:, picked.split :] = kept[:, size * k :]
    return out


def keep_at_least(scores: torch.Tensor, threshold: torch.Tensor, filter_value: float) -> torch.Tensor:
    """``scores`` where ``scores >= threshold`` (one threshold per row), else ``filter_value``; a new tensor.
    -inf scores (banned tokens) stay -inf whatever ``filter_value``.

    For the default ``filter_value = -inf`` this runs as four float passes: ``d = scores - threshold``,
    ``min(d, 0)``, ``-inf`` where ``d < 0`` and ``+ scores`` (exact: a kept score gets ``+ 0``). A threshold
    of -inf becomes the lowest float, so that ``-inf - threshold`` is -inf, not NaN. A finite
    ``filter_value`` is clamped to the range of the scores' dtype.
    """
    if filter_value != -math.inf or scores.dtype != torch.float32 or threshold.dtype != torch.float32:
        if math.isfinite(filter_value):  # into the dtype's range (a float32 value may not fit in half)
            largest = torch.finfo(scores.dtype).max
            filter_value = min(max(filter_value, -largest), largest)
        out = torch.where(scores >= threshold, scores, filter_value)  # compared in the wider dtype
        return out if filter_value == -math.inf else out.masked_fill_(scores == -math.inf, -math.inf)
    threshold = threshold.clamp(min=torch.finfo(torch.float32).min)
    offset = torch.sub(scores, threshold).clamp_(max=0.0)
    return F.threshold_(offset, _SMALLEST_SUBNORMAL, -math.inf).add_(scores)


_U32 = 2.0**-24  # float32 unit roundoff
_NUCLEUS_STAGES = (64, 1024)  # candidate sets tried before the full sort
_FLAT_TOTAL = 256.0  # rows with sum(exp(s - max)) above this are sorted without trying the candidate sets


def _descending(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest values of each row, descending, repeats counted (the picked sets hold them all:
    every value above the k-th largest and at least k values >= it, see :func:`kth_largest`)."""
    picked = _pick(scores, k, _SET_SIZE)
    return torch.topk(scores if picked is None else picked.values, k, dim=-1).values


def nucleus_threshold(
    scores: torch.Tensor, row_max: torch.Tensor, top_p: float, min_keep: int, reference
) -> torch.Tensor:
    """The smallest kept score of transformers' top-p rule, per row (shape (R, 1)), without sorting the rows
    whose nucleus a candidate set decides; ``reference(scores)`` (the full sort) gives the others.

    The rule on the ascending row a: C_i = cumsum(softmax(a))_i in float32, b = float32(1 - top_p); the
    positions with C_i <= b are dropped (at most n - min_keep), the rest kept. By rank m (the m-th largest),
    C = 1 - (mass of the m - 1 largest) in exact arithmetic, and the float32 C lies within a relative
    (2n + 16) u of it whatever order softmax and cumsum sum in (u = 2^-24, n terms each). On the k largest
    values (k = 64, then 1,024) the masses exp(s - max) / sum(exp(s - max)) are summed in float64; a rank
    is surely kept (surely dropped) when C exceeds b (stays <= b) across that error and the float64 sums'
    own. A row is decided when rank k + 1 is surely dropped (so are all later ranks) and the kept counts
    still possible, raised to min_keep, all give the same score (ties). Its threshold is that score: the
    reference's, bit for bit. Flat rows (largest probability < 1 / 256) go to ``reference`` at once.
    """
    rows, n = scores.shape
    if scores.dtype != torch.float32 or n < 8 * _NUCLEUS_STAGES[0] or not bool(torch.isfinite(row_max).all()):
        return reference(scores)
    bound = float(torch.tensor(1.0 - top_p, dtype=torch.float32))  # the reference's b
    error = (2 * n + 16) * _U32  # relative, of the reference's C
    slack = 8 * _U32  # absolute, of our float64 prefix masses from float32 exponentials
    total = torch.sub(scores, row_max).exp_().sum(dim=-1, keepdim=True, dtype=torch.float64)
    # a flat row (the largest probability 1 / total below 1 / _FLAT_TOTAL: a nucleus of hundreds of tokens
    # or more) goes to the reference at once, as does a row whose largest candidate set cannot hold mass
    # 1 - b (each token's mass is <= 1 / total)
    reach = 1.0 - min(_NUCLEUS_STAGES[-1], n - 1) / total[:, 0]
    hopeless = ((reach + slack) * (1 + error) > bound) | (total[:, 0] > _FLAT_TOTAL)
    if bool(hopeless.all()):
        return reference(scores)
    out = torch.empty(rows, 1, dtype=scores.dtype, device=scores.device)
    todo = None  # rows still undecided (None: all of them)
    if bool(hopeless.any()):
        out[hopeless] = reference(scores[hopeless]).to(out.dtype)
        todo = torch.nonzero(~hopeless).flatten()
    for stage, k in enumerate(_NUCLEUS_STAGES):
        k = min(k, n - 1)
        if todo is None:
            part, part_max, part_total = scores, row_max, total
        else:
            part, part_max, part_total = scores[todo], row_max[todo], total[todo]
        top = _descending(part, k)  # (r, k)
        mass = torch.sub(top, part_max).exp_().double().div_(part_total)
        prefix = torch.cat([mass.new_ones(len(part), 1), mass.cumsum(dim=-1).neg_().add_(1.0)], dim=1)
        surely_kept = (prefix - slack) * (1 - error) > bound  # (r, k + 1): ranks 1 .. k + 1
        surely_dropped = (prefix + slack) * (1 + error) <= bound
        low = surely_kept.sum(dim=-1).clamp_(min=min_keep)
        high = (k + 1 - surely_dropped.sum(dim=-1)).clamp_(min=min_keep)
        decided = high <= k  # rank k + 1 surely dropped (the surely dropped ranks are a suffix)
        threshold = top.gather(1, high.clamp(max=k).sub_(1)[:, None])
        decided &= top.gather(1, low.clamp(max=k).sub_(1)[:, None])[:, 0] == threshold[:, 0]
        if todo is None:
            if bool(decided.all()):
                return threshold
            todo = torch.arange(rows, device=scores.device)
        out[todo[decided]] = threshold[decided]
        undecided = ~decided
        todo = todo[undecided]
        if not todo.numel():
            return out
        if stage + 1 < len(_NUCLEUS_STAGES):  # rows a larger set cannot decide go to the reference now
            reach = prefix[undecided, k] - mass[undecided, -1] * (_NUCLEUS_STAGES[stage + 1] - k)
            hopeless = (reach + slack) * (1 + error) > bound
            if bool(hopeless.all()):
                break
            if bool(hopeless.any()):
                out[todo[hopeless]] = reference(scores[todo[hopeless]]).to(out.dtype)
                todo = todo[~hopeless]
    if len(todo) == rows:
        return reference(scores)
    out[todo] = reference(scores[todo]).to(out.dtype)
    return out
