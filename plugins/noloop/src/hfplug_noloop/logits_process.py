"""Logits processors that keep generation finite: consistent truncation (Welleck et al., 2020), a
decode-time self-terminating eos floor, a DRY repeat penalty and a loop-triggered eos.

All are plain ``transformers.LogitsProcessor`` objects for ``generate(logits_processor=[...])``; none
subclasses a built-in processor type, so ``generate`` never confuses them with the ones it builds itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from transformers import LogitsProcessor

from hfplug.validation import check_float, check_int

from ._selection import keep_at_least, keep_top_k, kth_largest, nucleus_threshold, sorted_values
from ._utils import Clocked, ClockTracker, PromptClock, as_token_ids, check_vocabulary
from .stopping_criteria import LoopDetector

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_SCALAR_ROWS = 32  # batches up to this many rows decide per row on Python floats
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_TIE_MARGIN = 2.0**-20  # relative: eos beats other tokens by more than float32 rounding (greedy_bound)


def _check_finite(row_max: torch.Tensor | list[float], where: str) -> None:
    """``row_max`` = max of each row (a tensor of shape (R,) or (R, 1), or Python floats): NaN or +inf there
    means a NaN or +inf score in the row. One reduction when every row of a tensor is clean."""
    if isinstance(row_max, list):
        rows = [row for row, value in enumerate(row_max) if not value < math.inf]  # NaN or +inf
    else:
        total = float(
            row_max.sum()
        )  # NaN or +inf when some maximum is (or, rarely, when finite ones overflow)
        if total == total and total != math.inf:
            return
        bad = (torch.isnan(row_max) | (row_max == float("inf"))).reshape(-1)
        rows = torch.nonzero(bad).flatten().tolist()
    if rows:
        raise ValueError(f"{where}: scores hold NaN or +inf in rows {rows}; the model output is not finite")


def _row_max(scores: torch.Tensor, where: str) -> torch.Tensor:
    """Maximum of each row, shape (R, 1); a ValueError naming ``where`` when a row holds NaN or +inf."""
    row_max = scores.amax(dim=-1, keepdim=True)
    _check_finite(row_max, where)
    return row_max


def _check_eos_in_vocabulary(component, scores: torch.Tensor) -> None:
    """The first call with scores of a new width checks that ``component.eos_token_id`` are columns."""
    if scores.shape[-1] != component._vocab_size:
        component._vocab_size = check_vocabulary(component.eos_token_id, "eos_token_id", scores.shape[-1])


class _ConsistentWarper(LogitsProcessor):
    """Truncation warper that never removes eos: V'_t = V_t ∪ {eos}, eos keeps its own logit.

    A subclass gives, per row, the smallest score it keeps (:meth:`_threshold`); every token scoring at
    least that much is kept, so tokens tied at the boundary are all kept (transformers keeps some of them,
    in its sort's order). A row holding NaN or +inf raises ValueError (no distribution to truncate);
    -inf scores are banned tokens and stay banned.
    """

    def __init__(self, eos_token_id: int | list[int], filter_value: float, min_tokens_to_keep: int) -> None:
        self.eos_token_id = as_token_ids(eos_token_id, "eos_token_id")
        # -inf (default) or a float32 number; NaN or +inf would make dropped tokens undefined or the likeliest
        self.filter_value = check_float("filter_value", filter_value, maximum=_FLOAT32_MAX, allow_inf=True)
        if self.filter_value != -math.inf:
            check_float("filter_value", filter_value, minimum=-_FLOAT32_MAX, maximum=_FLOAT32_MAX)
        self.min_tokens_to_keep = check_int("min_tokens_to_keep", min_tokens_to_keep, minimum=1)
        self._vocab_size: int | None = None

    def _threshold(self, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._process(input_ids, scores)

    def _process(
        self, input_ids: torch.Tensor, scores: torch.Tensor, row_max: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The truncated scores; ``row_max``: the rows' maxima when already known (and checked finite)."""
        _check_eos_in_vocabulary(self, scores)
        if row_max is None:
            row_max = _row_max(scores, type(self).__name__)
        out = self._keep(scores, row_max)
        eos = self.eos_token_id
        if len(eos) == 1:  # plain indexing: no index tensor built
            out[:, eos[0]] = scores[:, eos[0]]
        else:
            out[:, eos] = scores[:, eos]
        return out

    def _keep(self, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
        """``scores`` where >= the threshold, else ``filter_value`` (a new tensor)."""
        return keep_at_least(scores, self._threshold(scores, row_max), self.filter_value)


class ConsistentTopKLogitsWarper(_ConsistentWarper):
    """Top-k that always keeps eos: q(v) ∝ p(v) for v in top-k ∪ {eos}, else 0.

    The top-k set is ranked over the whole vocabulary (eos included), as in transformers' top-k.
    """

    def __init__(
        self,
        top_k: int,
        eos_token_id: int | list[int],
        filter_value: float = -float("inf"),
        min_tokens_to_keep: int = 1,
    ) -> None:
        super().__init__(eos_token_id, filter_value, min_tokens_to_keep)
        self.top_k = max(check_int("top_k", top_k, minimum=1), self.min_tokens_to_keep)

    def _threshold(self, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        return row_max if k == 1 else kth_largest(scores, k)

    def _keep(self, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        if k == 1 or self.filter_value != -math.inf:
            return super()._keep(scores, row_max)
        return keep_top_k(scores, k)


class ConsistentTopPLogitsWarper(_ConsistentWarper):
    """Nucleus sampling that always keeps eos: the smallest set of most likely tokens whose mass exceeds
    ``top_p``, plus eos (default ``min_tokens_to_keep=1``).

    The set is transformers' own: scores sorted ascending, softmax, cumulative sum; the tokens whose
    cumulative mass is <= 1 - top_p are dropped (a prefix of the ascending order), the last
    ``min_tokens_to_keep`` never. bfloat16 / float16 scores go through the rule as their float32 values.
    """

    def __init__(
        self,
        top_p: float,
        eos_token_id: int | list[int],
        filter_value: float = -float("inf"),
        min_tokens_to_keep: int = 1,
    ) -> None:
        super().__init__(eos_token_id, filter_value, min_tokens_to_keep)
        self.top_p = check_float("top_p", top_p, minimum=0.0, maximum=1.0, min_open=True)

    def _threshold(self, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
        return nucleus_threshold(scores, row_max, self.top_p, self.min_tokens_to_keep, self._sorted_threshold)

    def _sorted_threshold(self, scores: torch.Tensor) -> torch.Tensor:
        """The rule on the fully sorted rows (the reference :func:`nucleus_threshold` falls back to); half
        precision scores are ranked and summed as their exact float32 values, on every device."""
        ascending = sorted_values(scores.float() if scores.dtype in _HALF_DTYPES else scores)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)  # non-decreasing: a binary search finds
        bound = torch.full(
            (scores.shape[0], 1), 1.0 - self.top_p, dtype=cumulative.dtype, device=cumulative.device
        )
        dropped = torch.searchsorted(cumulative, bound, right=True)
        dropped.clamp_(max=scores.shape[-1] - min(self.min_tokens_to_keep, scores.shape[-1]))
        return ascending.gather(-1, dropped)


class ConsistentMinPLogitsWarper(_ConsistentWarper):
    """Min-p that always keeps eos: keep v if p(v) >= min_p * max_u p(u), plus eos.

    Tested in logit space, s(v) >= max_u s(u) + ln(min_p), which is the same set without a softmax.
    """

    def __init__(
        self,
        min_p: float,
        eos_token_id: int | list[int],
        filter_value: float = -float("inf"),
        min_tokens_to_keep: int = 1,
    ) -> None:
        super().__init__(eos_token_id, filter_value, min_tokens_to_keep)
        self.min_p = check_float("min_p", min_p, minimum=0.0, maximum=1.0)

    def _threshold(self, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
        log_min_p = math.log(self.min_p) if self.min_p > 0.0 else -math.inf
        threshold = row_max.float().add(log_min_p)
        if self.min_tokens_to_keep == 1:  # the most likely token is never below min_p x itself
            return threshold
        keep = kth_largest(scores, min(self.min_tokens_to_keep, scores.shape[-1])).float()
        return torch.minimum(threshold, keep)


class SelfTerminatingLogitsProcessor(Clocked, LogitsProcessor):
    """Decode-time self-terminating floor: p(eos) >= 1 - (1 - epsilon)^(t - start).

    ``t`` is the 1-based index of the token being generated (prompt tokens never count) and the floor
    is active for ``t > start``. When the eos mass p_eos of a row is below the floor f, the row is
    renormalised: eos probabilities are scaled by f / p_eos and all other probabilities by
    (1 - f) / (1 - p_eos); otherwise the row is left untouched. A row whose eos ids are all banned
    (-inf, e.g. by ``min_new_tokens``) is left alone, so the ban holds and the bound counts from its end.
    Put it last, after any truncation warper (a later top-k/top-p could drop eos again).

    Guarantees: greedy search emits eos within :meth:`greedy_bound` generated tokens (for one eos id
    ``start + floor(ln 0.5 / ln(1 - epsilon)) + 1``, one more when float32 rounding could tie), and sampling
    and beam search end with probability 1. ``self.raised`` holds, per generated token, the rows whose eos
    mass was raised.
    """

    def __init__(self, epsilon: float, eos_token_id: int | list[int], start: int = 0) -> None:
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, maximum=1.0, min_open=True, max_open=True)
        self.eos_token_id = as_token_ids(eos_token_id, "eos_token_id")
        self.start = check_int("start", start, minimum=0)
        self._clock = PromptClock()
        self._vocab_size: int | None = None
        self.raised: list[torch.Tensor] = []
        self._no_rows: tuple = (None, None)  # (batch shape, its all-False record)

    def floor(self, token_index: int) -> float:
        """Eos floor for the ``token_index``-th generated token (1-based): 1 - (1 - eps)^(t - start), or 0."""
        k = token_index - self.start
        return 0.0 if k <= 0 else -math.expm1(k * math.log1p(-self.epsilon))

    def greedy_bound(self) -> int:
        """Largest number of generated tokens greedy search can produce before eos.

        With m eos ids sharing the floor f, the likeliest eos id holds at least f / m and any other token at
        most 1 - f, so eos wins greedily once f / m > (1 - f)(1 + δ), i.e. (1 - eps)^k < 1 / (1 + m (1 + δ)).
        δ = 2^-20 covers the float32 rounding of the scores (a few units in the last place): without it an
        exact tie (f = 1/2 for one id) or a margin below rounding would go to a lower-numbered token.
        """
        m = len(self.eos_token_id)
        k = math.floor(math.log(1.0 / (1 + m * (1 + _TIE_MARGIN))) / math.log1p(-self.epsilon)) + 1
        return self.start + k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._process(input_ids, scores)

    def _process(
        self,
        input_ids: torch.Tensor,
        scores: torch.Tensor,
        row_max: torch.Tensor | None = None,
        counted: dict[int, int] | None = None,
    ) -> torch.Tensor:
        """The floored scores; ``row_max``: the rows' maxima (R, 1) when already known; ``counted``: see
        :meth:`~hfplug_noloop._utils.Clocked._count`.

        Up to ``_SCALAR_ROWS`` rows, the per-row decisions run on Python floats read in one transfer
        (fewer tensor operations: each costs microseconds however small); larger batches stay in tensors.
        """
        _check_eos_in_vocabulary(self, scores)
        generated = self._count(input_ids, counted)
        del self.raised[generated:]  # a new generation, or a rewind (assisted decoding) drops later tokens
        floor = self.floor(generated + 1)
        if floor <= 0.0:
            return self._untouched(scores)
        eos = self.eos_token_id
        scalar = scores.shape[0] <= _SCALAR_ROWS
        # cheap test first: log p_eos >= max_eos - max - log(vocab); when every row is that far above the
        # floor (margin 1e-2 + 1e-4 |max| for float rounding), the rows are left as they are without the
        # full log-softmax. NaN / +inf scores make the test fail and are reported below.
        top = scores.amax(dim=-1) if row_max is None else row_max[:, 0]
        eos_top = scores[:, eos[0]] if len(eos) == 1 else scores[:, eos].amax(dim=-1)
        margin = math.log(floor) + math.log(scores.shape[-1]) + 1e-2
        if scalar:
            top, eos_top = torch.stack([top, eos_top]).tolist()
            if all(e - t - 1e-4 * abs(t) >= margin for t, e in zip(top, eos_top, strict=True)):
                return self._untouched(scores)
        elif bool(
            (torch.sub(eos_top.float(), top.float()).sub_(top.float().abs(), alpha=1e-4) >= margin).all()
        ):
            return self._untouched(scores)
        _check_finite(top, "SelfTerminatingLogitsProcessor")
        log_p = torch.log_softmax(scores.float(), dim=-1)  # one fused kernel: log p_v = s_v - logsumexp(s)
        log_p_eos_ids = log_p[:, eos[0] : eos[0] + 1] if len(eos) == 1 else log_p[:, eos]
        # rows whose eos ids are all banned (-inf, e.g. by min_new_tokens) are left alone; the new
        # log-probabilities: log p_v + log((1 - f) / (1 - p_eos)), log p_e + log(f / p_eos)
        log_floor = math.log(floor)
        log_other = math.log1p(-floor) if floor < 1.0 else -math.inf  # floor rounds to 1 for large t
        if scalar:
            flags, shifts = [], []
            for ids in log_p_eos_ids.tolist():
                top_id = max(ids)
                log_p_eos = top_id if len(ids) == 1 or top_id == -math.inf else _logsumexp(ids, top_id)
                flags.append(-math.inf < log_p_eos < log_floor)
                shifts.append(log_other - math.log1p(-math.exp(log_p_eos)) if flags[-1] else 0.0)
            raise_rows = torch.tensor(flags, device=scores.device)
            self.raised.append(raise_rows)
            if not any(flags):
                return scores
            every_row = all(flags)
            shift_other = torch.tensor(shifts, dtype=torch.float32, device=scores.device)[:, None]
        else:
            log_p_eos = (
                log_p_eos_ids[:, 0] if len(eos) == 1 else torch.logsumexp(log_p_eos_ids, dim=-1)
            ).double()
            raise_rows = (log_p_eos < log_floor) & torch.isfinite(log_p_eos)
            self.raised.append(raise_rows)
            if not bool(raise_rows.any()):
                return scores
            every_row = bool(raise_rows.all())
            shift_other = (log_other - torch.log1p(-log_p_eos.exp())).float()[:, None]
        # the raised rows' eos ids: log f + log(p_e / p_eos), the share from their own scores (a log_softmax
        # over the eos columns in float64): log p_e + (log f - log p_eos) would cancel in float32 when
        # log p_eos is far below zero; a single eos id is set to log f
        eos_scores = None if len(eos) == 1 else _eos_shares(scores, eos).add_(log_floor).float()
        if every_row:
            out = log_p.add_(shift_other)
            if eos_scores is None:
                out[:, eos[0]] = log_floor
            else:
                out[:, eos] = eos_scores
            return out if out.dtype == scores.dtype else out.to(scores.dtype)
        rows = torch.nonzero(raise_rows).flatten()
        out = scores.float().clone()  # one copy; only the raised rows change
        out[rows] = log_p[rows] + shift_other[rows]
        if eos_scores is None:
            out[rows, eos[0]] = log_floor
        else:
            out[rows[:, None], eos] = eos_scores[rows]
        return out.to(scores.dtype)

    def _untouched(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` as they are, recorded as a step that raised no row."""
        key = (scores.shape[0], scores.device)
        if self._no_rows[0] != key:  # one all-False record per batch shape, shared by the steps
            self._no_rows = (key, torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device))
        self.raised.append(self._no_rows[1])
        return scores


def _eos_shares(scores: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """log(p_e / p_eos) for each eos id e of each row, in float64 (-inf for a banned id)."""
    return torch.log_softmax(scores[:, eos].double(), dim=-1)


def _logsumexp(values: list[float], top: float) -> float:
    """log(sum(exp(values))) of Python floats whose maximum ``top`` is finite."""
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


class DRYLogitsProcessor(LogitsProcessor):
    """DRY ("don't repeat yourself"): penalise the token that would extend a verbatim repeat.

    For the last ``window`` tokens x, a candidate position i whose suffix x[..i] matches the sequence's
    suffix over L tokens (L >= ``allowed_length``, the match never crossing a sequence breaker) penalises
    its next token x[i+1] by ``multiplier * base ** min(L - allowed_length, max_exponent)``; each token
    takes its longest match. Breakers and ``protected_token_ids`` (eos, special and chat-template ids)
    are never penalised. Defaults (llama.cpp / text-generation-webui): multiplier 0.8, base 1.75,
    allowed_length 2; window 1024; ``max_exponent`` defaults to the exponent at which ``base ** e``
    reaches 1e4 (17 for base 1.75): longer matches get the same, already prohibitive, penalty.

    Vectorised over rows and candidates: one comparison over the window finds the earlier copies of
    the last ``allowed_length`` tokens (when there are none, the scores are returned as they are), then
    their match lengths grow in blocks of offsets (32, 64, 128, ...) until none still matches; cost
    O(window x allowed_length + candidates x longest match) per step, never O(context).
    """

    def __init__(
        self,
        multiplier: float = 0.8,
        base: float = 1.75,
        allowed_length: int = 2,
        window: int = 1024,
        sequence_breaker_ids: Iterable[int] = (),
        protected_token_ids: Iterable[int] = (),
        max_exponent: int | None = None,
    ) -> None:
        self.multiplier = check_float("multiplier", multiplier, minimum=0.0, min_open=True)
        self.base = check_float("base", base, minimum=1.0)  # the penalty grows with the match length
        self.allowed_length = check_int("allowed_length", allowed_length, minimum=1)
        self.window = check_int("window", window, minimum=2)
        self.sequence_breaker_ids = as_token_ids(sequence_breaker_ids, "sequence_breaker_ids", True)
        self.protected_token_ids = as_token_ids(protected_token_ids, "protected_token_ids", True)
        if max_exponent is None:  # base ** e reaches 1e4: the penalty is a ban in practice, and finite
            max_exponent = math.ceil(math.log(1e4) / math.log(self.base)) if self.base > 1.0 else 0
        self.max_exponent = check_int("max_exponent", max_exponent, minimum=0)
        self._penalties: dict[tuple, torch.Tensor] = {}
        self._orders: dict[torch.device, torch.Tensor] = {}
        self._protected: dict[torch.device, torch.Tensor] = {}

    def penalties(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Penalty by match length L (0 .. allowed_length + max_exponent, the longest length measured):
        ``multiplier * base ** min(L - allowed_length, max_exponent)`` for L >= allowed_length, else 0."""
        key = (dtype, device)
        if key not in self._penalties:  # a match is at most window - 1 tokens long: no longer table
            longest = min(self.allowed_length + self.max_exponent, self.window - 1)
            length = torch.arange(longest + 1, device=device)
            exponent = (length - self.allowed_length).clamp(min=0, max=self.max_exponent).to(dtype)
            penalty = torch.where(length >= self.allowed_length, self.multiplier * self.base**exponent, 0.0)
            self._penalties[key] = penalty.to(dtype)
        return self._penalties[key]

    def match_lengths(self, input_ids: torch.LongTensor) -> tuple[torch.Tensor, ...]:
        """The candidates (row, position i) of the window whose suffix matches the sequence's suffix over
        at least ``allowed_length`` tokens (the only ones penalised), with their match length and next
        token x[i+1]; lengths are exact up to allowed_length + max_exponent."""
        x = input_ids[:, -self.window :]
        width = x.shape[1]
        cap = min(self.allowed_length + self.max_exponent, width - 1)
        if cap < self.allowed_length:  # too short for any match of allowed_length tokens
            empty = x.new_empty(0)
            return empty, empty, empty
        if self.sequence_breaker_ids:
            is_breaker = torch.isin(
                x, torch.tensor(self.sequence_breaker_ids, dtype=x.dtype, device=x.device)
            )
            target = x.masked_fill(is_breaker, -2)  # a breaker matches nothing (ids >= 0, padding -1)
        else:
            target = x
        # candidates i in [allowed - 1, width - 2] with x[i - k] == target[width - 1 - k] for k < allowed
        start = self.allowed_length
        first = x[:, start - 1 : width - 1] == target[:, width - 1 :]
        for k in range(1, start):
            first &= x[:, start - 1 - k : width - 1 - k] == target[:, width - 1 - k : width - k]
        if self.sequence_breaker_ids:
            first &= ~is_breaker[:, start:]  # the next token x[i + 1] is not a breaker
        rows, positions = torch.nonzero(first, as_tuple=True)
        if not rows.numel():
            return rows, positions, positions
        nexts = positions + start  # i + 1
        # longer offsets only on the candidates, along m = cap - 1 - k for k in [start, cap):
        # windows[r * (width + cap) + i + 1, m] = x[r, i - k] (-1 left of the window), a strided view
        # of the padded rows laid end to end; suffix[r, m] = target[r, width - 1 - k]
        padded = torch.constant_pad_nd(x, (cap, 0), -1)
        windows = (
            padded.view(-1)
            .unfold(0, cap - start, 1)
            .index_select(0, torch.add(nexts, rows, alpha=width + cap))
        )
        suffix = target[:, width - cap : width - start].index_select(0, rows)
        lengths, alive, size = None, None, 32  # alive None: every candidate still matches
        while start < cap and (alive is None or bool(alive.any())):
            end = min(cap, start + size)  # offsets k in [start, end): m in [cap - end, cap - start)
            mismatch = windows[:, cap - end : cap - start] != suffix[:, cap - end : cap - start]
            # the run of matches from k = start up: the last mismatch in m order (0 = none)
            last = (mismatch * self._order(end - start, x.device)).amax(dim=1)
            run = torch.sub(end - start, last) if alive is None else torch.where(alive, end - start - last, 0)
            alive = run == end - start
            lengths = run.add_(start) if lengths is None else lengths.add_(run)
            start, size = end, size * 2
        if lengths is None:
            lengths = torch.full_like(positions, start)
        return rows, lengths, x[rows, nexts]

    def _order(self, size: int, device: torch.device) -> torch.Tensor:
        """1, 2, ..., size on ``device`` (cached)."""
        order = self._orders.get(device)
        if order is None or order.numel() < size:
            order = self._orders[device] = torch.arange(1, max(size, 32) + 1, device=device)
        return order[:size]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < 2:
            return scores
        rows, lengths, next_tokens = self.match_lengths(input_ids)
        if not rows.numel():  # no repeat of allowed_length tokens: nothing to penalise
            return scores
        candidate = self.penalties(scores.dtype, scores.device)[lengths]
        if self.protected_token_ids:  # never penalised: penalty 0 leaves the score as it is
            protected = self._protected.get(scores.device)
            if protected is None:
                protected = torch.tensor(self.protected_token_ids, device=scores.device)
                self._protected[scores.device] = protected
            candidate.masked_fill_(torch.isin(next_tokens, protected), 0.0)
        # the penalty grows with the length, so the largest candidate penalty is the longest match's:
        # out_v = min(scores_v, min over candidates c with next token v of scores_v - penalty_c)
        flat = torch.add(next_tokens, rows, alpha=scores.shape[1])
        penalised = scores.take(flat).sub_(candidate)
        out = scores.clone(memory_format=torch.contiguous_format)  # one copy of the scores, not two
        out.view(-1).scatter_reduce_(0, flat, penalised, reduce="amin", include_self=True)
        return out


class LoopEOSLogitsProcessor(Clocked, LogitsProcessor):
    """Force eos as the next token of every row whose generated tail is a loop (same rule and defaults as
    :class:`LoopStoppingCriteria`), so the row ends with eos ("forced_eos") instead of being cut.

    ``self.forced`` holds, per generated token, the rows that were forced.
    """

    def __init__(
        self,
        eos_token_id: int | list[int],
        min_pattern_size: int = 1,
        max_pattern_size: int = 64,
        min_count: int = 4,
        window: int = 512,
        min_loop_tokens: int = 16,
    ) -> None:
        self.eos_token_id = as_token_ids(eos_token_id, "eos_token_id")
        self.detector = LoopDetector(min_pattern_size, max_pattern_size, min_count, window, min_loop_tokens)
        self._clock = PromptClock()
        self._vocab_size: int | None = None
        self.forced: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._process(input_ids, scores)

    def _process(
        self, input_ids: torch.Tensor, scores: torch.Tensor, counted: dict[int, int] | None = None
    ) -> torch.Tensor:
        """The scores with the looping rows forced to eos; ``counted``: see
        :meth:`~hfplug_noloop._utils.Clocked._count`."""
        _check_eos_in_vocabulary(self, scores)
        generated = self._count(input_ids, counted)
        del self.forced[generated:]  # a new generation, or a rewind (assisted decoding) drops later tokens
        forced = self.detector(input_ids, generated) > 0
        self.forced.append(forced)
        count = int(forced.sum())
        if not count:
            return scores
        eos = self.eos_token_id
        columns = slice(eos[0], eos[0] + 1) if len(eos) == 1 else eos  # a slice builds no index tensor
        # eos keeps its score; a banned (-inf) or non-finite one becomes 0, so that eos can be drawn
        eos_scores = scores[:, columns].nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        if count == scores.shape[0]:  # every row forced: nothing to copy
            out = torch.full_like(scores, -math.inf)
            out[:, columns] = eos_scores
            return out
        out = scores.masked_fill(forced[:, None], -math.inf)  # one copy; only the forced rows change
        out[:, columns] = torch.where(forced[:, None], eos_scores, scores[:, columns])
        return out


class NoLoopLogitsProcessor(LogitsProcessor):
    """The processors of one :class:`~hfplug_noloop.NoLoopConfig` as one processor (what ``build`` returns).

    ``processors`` run in their order and the output equals running them one after the other, bit for bit.
    What is shared: the rows' maximum is computed (and checked for NaN / +inf) once and handed to every
    consistent warper and to the floor for as long as the scores keep it (a processor that returns its
    input unchanged, or a warper dropping to -inf, keeps it); a prompt clock shared by several components (as
    ``build`` shares one) steps once per call; and ``generate`` inspects one processor's signature per step
    instead of one per component. ``NoLoopConfig.build(..., fused=False)`` gives the
    separate processors.
    """

    def __init__(self, processors: Iterable[LogitsProcessor]) -> None:
        self.processors = tuple(processors)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        row_max = None  # the maxima of the current scores' rows, once known
        counted: dict[int, int] = {}  # generated tokens, by clock, once a clock stepped in this call
        for processor in self.processors:
            if isinstance(processor, _ConsistentWarper):
                if row_max is None:
                    _check_eos_in_vocabulary(processor, scores)  # the separate warper's order of checks
                    row_max = _row_max(scores, type(processor).__name__)
                out = processor._process(input_ids, scores, row_max)
                if processor.filter_value != -math.inf:  # a dropped token may now be the largest
                    row_max = None
            elif isinstance(processor, SelfTerminatingLogitsProcessor):
                out = processor._process(input_ids, scores, row_max, counted)
            elif isinstance(processor, LoopEOSLogitsProcessor):
                out = processor._process(input_ids, scores, counted)
            elif isinstance(processor, ClockTracker):
                processor._count(input_ids, counted)
                out = scores
            else:
                out = processor(input_ids, scores)
                if out is not scores:
                    row_max = None
            scores = out
        return scores
