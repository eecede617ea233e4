"""Order statistics and masking for the truncation warpers, fast on CPU.

``kth_largest`` looks at the rows in blocks and runs ``torch.topk`` only on the few blocks that can hold the
answer; ``sorted_values`` sorts with NumPy's value-only ``sort`` on CPU (cheaper there than ``torch.sort``);
:func:`keep_at_least` masks with four float passes instead of a boolean ``torch.where`` / ``masked_fill``
(``plugins/noloop/bench`` measures the warpers against transformers' own).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_NUMPY_DTYPES = (torch.float32, torch.float64)
_SMALLEST_SUBNORMAL = -1.401298464324817e-45  # -2^-149: d > this  <=>  d >= 0 for a float32 d
_BLOCK = 32  # values per block in kth_largest


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


def kth_largest(scores: torch.Tensor, k: int, block: int = _BLOCK) -> torch.Tensor:
    """The ``k``-th largest value of each row, repeats counted (``torch.topk(scores, k).values[:, -1:]``).

    The row is cut into blocks of ``block`` values (the last ``n mod block`` stay apart) and only the
    ``k`` blocks with the largest maxima, plus that remainder, go to ``torch.topk``: the ``k`` maxima are
    ``k`` distinct values >= the k-th largest block maximum, so every value above the answer, and enough
    values equal to it, lie in those blocks (ties included). One pass over the row plus a top-k over
    ``k * block`` values instead of ``n``.
    """
    rows, width = scores.shape
    block = min(block, width // k)
    if block < 4:  # k is a large part of the row: no saving
        return torch.topk(scores, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    count = width // block
    blocks = scores[:, : count * block].reshape(rows, count, block)
    best = torch.topk(blocks.amax(dim=-1), k, dim=-1, sorted=False).indices
    picked = blocks.gather(1, best[:, :, None].expand(rows, k, block)).reshape(rows, k * block)
    if count * block < width:
        picked = torch.cat([picked, scores[:, count * block :]], dim=1)
    return torch.topk(picked, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)


def keep_at_least(scores: torch.Tensor, threshold: torch.Tensor, filter_value: float) -> torch.Tensor:
    """``scores`` where ``scores >= threshold`` (one threshold per row), else ``filter_value``; a new tensor.

    For the default ``filter_value = -inf`` this runs as four float passes: ``d = scores - threshold``,
    ``min(d, 0)``, ``-inf`` where ``d < 0`` and ``+ scores`` (exact: a kept score gets ``+ 0``). A threshold
    of -inf becomes the lowest float, so that ``-inf - threshold`` is -inf, not NaN. A finite
    ``filter_value`` is clamped to the range of the scores' dtype.
    """
    if filter_value != -math.inf or scores.dtype != torch.float32 or threshold.dtype != torch.float32:
        if math.isfinite(filter_value):  # into the dtype's range (a float32 value may not fit in half)
            largest = torch.finfo(scores.dtype).max
            filter_value = min(max(filter_value, -largest), largest)
        return torch.where(scores >= threshold, scores, filter_value)  # compared in the wider dtype
    threshold = threshold.clamp(min=torch.finfo(torch.float32).min)
    offset = torch.sub(scores, threshold).clamp_(max=0.0)
    return F.threshold_(offset, _SMALLEST_SUBNORMAL, -math.inf).add_(scores)
