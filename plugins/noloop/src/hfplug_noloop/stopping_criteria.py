"""Loop stop: end a row whose generated tail is the same block of tokens repeated several times."""

from __future__ import annotations

import math

import torch
from transformers import StoppingCriteria

from ._utils import Clocked, PromptClock, as_token_ids, check_int


class LoopDetector:
    """Finds, per row, the smallest period ``p`` in ``[min_pattern_size, max_pattern_size]`` such that the
    last ``p * c(p)`` generated tokens are ``c(p)`` copies of one block, with
    ``c(p) = max(min_count, ceil(min_loop_tokens / p))`` and ``p * c(p) <= window``.

    Only generated tokens count (the prompt never does). The check is vectorised over rows and periods:
    one ``(rows, periods, p_max * (c - 1))`` comparison, O(window) per step whatever the context length.
    """

    def __init__(
        self,
        min_pattern_size: int = 1,
        max_pattern_size: int = 64,
        min_count: int = 4,
        window: int = 512,
        min_loop_tokens: int = 16,
    ) -> None:
        check_int(min_pattern_size, "min_pattern_size", 1)
        check_int(max_pattern_size, "max_pattern_size", 1)
        check_int(min_count, "min_count", 2)
        check_int(window, "window", 2)
        check_int(min_loop_tokens, "min_loop_tokens", 0)
        if min_pattern_size > max_pattern_size:
            raise ValueError(
                f"min_pattern_size ({min_pattern_size}) must be <= max_pattern_size ({max_pattern_size})"
            )
        periods = torch.arange(min_pattern_size, max_pattern_size + 1)
        counts = torch.clamp(torch.ceil(min_loop_tokens / periods.double()).long(), min=min_count)
        spans = periods * counts
        if int(spans.max()) > window:
            longest = int(periods[spans.argmax()])
            raise ValueError(
                f"window ({window}) must hold the longest loop to detect: period {longest} x "
                f"{int(counts[spans.argmax()])} copies = {int(spans.max())} tokens; raise window or lower "
                "max_pattern_size / min_count / min_loop_tokens"
            )
        self.min_pattern_size, self.max_pattern_size = min_pattern_size, max_pattern_size
        self.min_count, self.window, self.min_loop_tokens = min_count, window, min_loop_tokens
        self.periods, self.spans = periods, spans
        self.tail = int(spans.max())
        checks = int((spans - periods).max())  # comparisons x[T - j] == x[T - j - p], j < p * (c - 1)
        self._head = min(4, int((spans - periods).min()))  # checks every period makes
        self._checks = -(-checks // 8) * 8  # a multiple of 8: the (P, J) bool rows are read as int64 words
        self._width = max(self.tail, max_pattern_size + self._checks)  # reversed tail, padded for the views
        relevant = torch.arange(self._checks)[None, :] < (spans - periods)[:, None]  # (P, J)
        self._relevant = relevant.to(torch.uint8).view(torch.int64)  # (P, J / 8), bytes 0 / 1

    def __call__(self, input_ids: torch.LongTensor, num_generated: int | torch.Tensor) -> torch.LongTensor:
        """Period of the loop ending each row (0 = no loop); ``num_generated`` (an int or one per row) is
        how many of the last tokens were generated."""
        rows = input_ids.shape[0]
        device = input_ids.device
        if isinstance(num_generated, int) and num_generated < int(self.spans.min()):
            return torch.zeros(rows, dtype=torch.long, device=device)
        if self._relevant.device != device:
            self.periods, self.spans, self._relevant = (
                t.to(device) for t in (self.periods, self.spans, self._relevant)
            )
        # reversed tail: rev[:, j] = x[T - j], padded with -1 (padding is never "generated")
        rev = input_ids[:, -self.tail :].flip(1)
        rev = torch.nn.functional.pad(rev, (0, self._width - rev.shape[1]), value=-1)
        # shifted[:, p - p_min, j] = rev[:, j + p] = x[T - j - p]: a strided view, no gather
        shifted = rev.unfold(1, self._checks, 1)[:, self.min_pattern_size : self.max_pattern_size + 1]
        # necessary condition first: the first few checks of some (row, period) all hold
        head = self._head
        if not bool((shifted[:, :, :head] == rev[:, None, :head]).all(-1).any()):
            return torch.zeros(rows, dtype=torch.long, device=device)
        mismatch = torch.empty(shifted.shape, dtype=torch.bool, device=device)  # contiguous
        torch.ne(shifted, rev[:, None, : self._checks], out=mismatch)
        # any relevant mismatch, eight bytes (0 / 1, so every word is >= 0) at a time
        found = (mismatch.view(torch.int64) & self._relevant).amax(-1) == 0  # (R, P)
        if isinstance(num_generated, int):
            if num_generated < self.tail:
                found &= self.spans <= num_generated
        else:
            found &= self.spans[None, :] <= torch.as_tensor(num_generated, device=device).reshape(-1, 1)
        first = torch.where(found, self.periods, self.max_pattern_size + 1).amin(-1)
        return torch.where(first <= self.max_pattern_size, first, 0)

    def first_loop_end(self, tokens: torch.Tensor | list[int]) -> int | None:
        """Smallest t such that the generated tokens ``tokens[:t]`` end with a loop, or None."""
        seq = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        if seq.numel() < int(self.spans.min()):
            return None
        windows = torch.nn.functional.pad(seq, (self.tail - 1, 0), value=-1).unfold(0, self.tail, 1)
        hits = torch.nonzero(self(windows, torch.arange(1, seq.numel() + 1)) > 0).flatten()
        return int(hits[0]) + 1 if hits.numel() else None

    def describe(self) -> str:
        return (
            f"period in [{self.min_pattern_size}, {self.max_pattern_size}], >= {self.min_count} copies and "
            f">= {self.min_loop_tokens} tokens, within the last {self.window} generated tokens"
        )

    def copies(self, period: int) -> int:
        """Copies of a block of ``period`` tokens that make a loop."""
        return max(self.min_count, math.ceil(self.min_loop_tokens / period))


class LoopStoppingCriteria(Clocked, StoppingCriteria):
    """Stop a row once its generated tail is a loop (see :class:`LoopDetector` for the rule).

    Returns a ``BoolTensor`` per row, as transformers' stopping criteria do. After ``generate``,
    :meth:`report` lists the rows that stopped, the period found and the generated length at the stop.
    Rows that already emitted ``eos_token_id`` (optional) are not reported again while they are padded.

    Defaults: periods 1..64, at least 4 copies covering at least 16 tokens, within 512 tokens.
    """

    def __init__(
        self,
        min_pattern_size: int = 1,
        max_pattern_size: int = 64,
        min_count: int = 4,
        window: int = 512,
        min_loop_tokens: int = 16,
        eos_token_id: int | list[int] | None = None,
    ) -> None:
        self.detector = LoopDetector(min_pattern_size, max_pattern_size, min_count, window, min_loop_tokens)
        self.eos_token_id = as_token_ids(eos_token_id, "eos_token_id", allow_empty=True)
        self._eos = torch.tensor(self.eos_token_id, dtype=torch.long)
        self._clock = PromptClock(offset=1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        num_generated, new = self._clock.step(input_ids)
        rows = input_ids.shape[0]
        if new:
            self.loop_period = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
            self.stopped_at = torch.full((rows,), -1, dtype=torch.long, device=input_ids.device)
            self._ended = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        period = self.detector(input_ids, num_generated)
        fired = period > 0
        if bool(fired.any()):
            fresh = fired & (self.stopped_at < 0) & ~self._ended
            self.loop_period = torch.where(fresh, period, self.loop_period)
            self.stopped_at = torch.where(fresh, num_generated, self.stopped_at)
        if self.eos_token_id:
            if self._eos.device != input_ids.device:
                self._eos = self._eos.to(input_ids.device)
            self._ended |= torch.isin(input_ids[:, -1], self._eos)
        return fired

    def report(self) -> list[dict]:
        """Rows stopped by a loop in the last ``generate`` call: ``{"row", "period", "generated_tokens",
        "reason"}``. Rows are the rows ``generate`` passed (batch x num_return_sequences for greedy and
        sampling; candidate beams for beam search)."""
        if self._clock.prompt_length is None:
            return []
        out = []
        for row in torch.nonzero(self.stopped_at >= 0).flatten().tolist():
            period = int(self.loop_period[row])
            reason = f"loop: a block of {period} token(s) repeated {self.detector.copies(period)} times"
            out.append(
                {
                    "row": row,
                    "period": period,
                    "generated_tokens": int(self.stopped_at[row]),
                    "reason": reason,
                }
            )
        return out
