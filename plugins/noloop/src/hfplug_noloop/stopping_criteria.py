"""Loop stop: end a row whose generated tail is the same block of tokens repeated several times."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from transformers import StoppingCriteria

from hfplug.validation import check_int

from ._utils import Clocked, ClockTracker, PromptClock, as_token_ids, check_vocabulary

MAX_WINDOW = 8192  # longest loop span checked; the comparison tables grow as window ** 2 / min_count
_CHUNK_ELEMENTS = 2**24  # comparisons per chunk of periods (one bool each): bounds the temporary memory


class _Tables(NamedTuple):
    """What :meth:`LoopDetector.__call__` needs for the periods whose loops fit in ``limit`` tokens."""

    periods: torch.Tensor  # (P,) min_pattern_size .. the longest period fitting the limit
    spans: torch.Tensor  # (P,) tokens a loop of each period covers
    relevant: torch.Tensor  # (P, J / 8) int64 words of bytes 0 / 1: check j counts for the period
    tail: int  # input columns read
    checks: int  # J, a multiple of 8
    width: int  # reversed tail, padded for the strided views


class LoopDetector:
    """Finds, per row, the smallest period ``p`` in ``[min_pattern_size, max_pattern_size]`` such that the
    last ``p * c(p)`` generated tokens are ``c(p)`` copies of one block, with
    ``c(p) = max(min_count, ceil(min_loop_tokens / p))`` and ``p * c(p) <= window``.

    Only generated tokens count (the prompt never does). The check is vectorised over rows and periods:
    one ``(rows, periods, p_max * (c - 1))`` comparison (in chunks of at most 2^24 elements), O(window)
    per step whatever the context length. Its tables are built on first use, for the periods that fit
    in the tokens generated so far (rounded up to a power of two), so memory follows the input, not the
    arguments. Every argument is an integer <= ``MAX_WINDOW`` (8,192).
    """

    def __init__(
        self,
        min_pattern_size: int = 1,
        max_pattern_size: int = 64,
        min_count: int = 4,
        window: int = 512,
        min_loop_tokens: int = 16,
    ) -> None:
        min_pattern_size = check_int("min_pattern_size", min_pattern_size, minimum=1, maximum=MAX_WINDOW)
        max_pattern_size = check_int("max_pattern_size", max_pattern_size, minimum=1, maximum=MAX_WINDOW)
        min_count = check_int("min_count", min_count, minimum=2, maximum=MAX_WINDOW)
        window = check_int("window", window, minimum=2, maximum=MAX_WINDOW)
        min_loop_tokens = check_int("min_loop_tokens", min_loop_tokens, minimum=0, maximum=MAX_WINDOW)
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
        self._shortest = int(spans.min())  # fewer generated tokens than this: no loop yet
        self._head = min(4, int((spans - periods).min()))  # checks every period makes
        self._tables: dict[tuple[int, torch.device], _Tables] = {}

    def _tables_for(self, limit: int, device: torch.device) -> _Tables | None:
        """Tables for the periods whose span is <= ``limit`` (a power of two or ``self.tail``)."""
        key = (limit, device)
        if key not in self._tables:
            fits = torch.nonzero(self.spans <= limit).flatten()
            if not fits.numel():
                return None
            count = int(fits[-1]) + 1  # periods min .. the longest fitting one (longer spans masked later)
            periods, spans = self.periods[:count], self.spans[:count]
            tail = int(spans[spans <= limit].max())
            checks = -(-int((spans - periods).max()) // 8) * 8  # x[T - j] == x[T - j - p], j < p (c - 1)
            relevant = torch.arange(checks)[None, :] < (spans - periods)[:, None]  # (P, J)
            self._tables[key] = _Tables(
                periods.to(device),
                spans.to(device),
                relevant.to(torch.uint8).view(torch.int64).to(device),
                tail,
                checks,
                max(tail, int(periods[-1]) + checks),
            )
        return self._tables[key]

    def __call__(self, input_ids: torch.LongTensor, num_generated: int | torch.Tensor) -> torch.LongTensor:
        """Period of the loop ending each row (0 = no loop); ``num_generated`` (an int or one per row) is
        how many of the last tokens were generated."""
        rows = input_ids.shape[0]
        device = input_ids.device
        if rows == 0:
            return torch.zeros(0, dtype=torch.long, device=device)
        most = num_generated if isinstance(num_generated, int) else int(torch.as_tensor(num_generated).max())
        most = min(most, input_ids.shape[1])  # a loop longer than the input cannot be found
        if most < self._shortest:
            return torch.zeros(rows, dtype=torch.long, device=device)
        limit = min(self.tail, 1 << (most - 1).bit_length())
        tables = self._tables_for(limit, device)
        # reversed tail: rev[:, j] = x[T - j], padded with -1 (padding is never "generated")
        rev = input_ids[:, -tables.tail :].flip(1)
        rev = torch.nn.functional.pad(rev, (0, tables.width - rev.shape[1]), value=-1)
        # shifted[:, p - p_min, j] = rev[:, j + p] = x[T - j - p]: a strided view, no gather
        last_period = int(tables.periods[-1])
        shifted = rev.unfold(1, tables.checks, 1)[:, self.min_pattern_size : last_period + 1]
        # necessary condition first: the first few checks of some (row, period) all hold
        head = self._head
        if not bool((shifted[:, :, :head] == rev[:, None, :head]).all(-1).any()):
            return torch.zeros(rows, dtype=torch.long, device=device)
        chunk = max(1, _CHUNK_ELEMENTS // (rows * tables.checks))
        found = []
        for lo in range(0, shifted.shape[1], chunk):
            part = shifted[:, lo : lo + chunk]
            mismatch = torch.empty(part.shape, dtype=torch.bool, device=device)  # contiguous
            torch.ne(part, rev[:, None, : tables.checks], out=mismatch)
            # any relevant mismatch, eight bytes (0 / 1, so every word is >= 0) at a time
            relevant = tables.relevant[lo : lo + chunk]
            found.append((mismatch.view(torch.int64) & relevant).amax(-1) == 0)  # (R, chunk)
        found = torch.cat(found, dim=1) if len(found) > 1 else found[0]
        if isinstance(num_generated, int):
            if num_generated < tables.tail:  # else every span fits
                found &= tables.spans <= num_generated
        else:
            found &= tables.spans[None, :] <= torch.as_tensor(num_generated, device=device).reshape(-1, 1)
        first = torch.where(found, tables.periods, self.max_pattern_size + 1).amin(-1)
        return torch.where(first <= self.max_pattern_size, first, 0)

    def first_loop_end(self, tokens: torch.Tensor | list[int]) -> int | None:
        """Smallest t such that the generated tokens ``tokens[:t]`` end with a loop, or None."""
        seq = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        if seq.numel() < self._shortest:
            return None
        windows = torch.nn.functional.pad(seq, (self.tail - 1, 0), value=-1).unfold(0, self.tail, 1)
        block = max(1, _CHUNK_ELEMENTS // (8 * self.tail))  # prefixes per call: bounded temporaries
        for lo in range(0, seq.numel(), block):
            ends = torch.arange(lo + 1, min(seq.numel(), lo + block) + 1)
            hits = torch.nonzero(self(windows[lo : lo + block], ends) > 0).flatten()
            if hits.numel():
                return lo + int(hits[0]) + 1
        return None

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

    Assisted and prompt-lookup decoding append several tokens per step; every one of them is checked,
    and a row stops at the first step holding a loop's end (generate keeps the rest of that step's
    tokens: a warning says how many). The criterion must know the prompt width for that: put
    :attr:`tracker` in ``logits_processor`` (``NoLoopConfig.build`` does), or let ``generate`` pass
    the scores (``output_scores=True, return_dict_in_generate=True``).

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
        self._clock = PromptClock()
        self.tracker = ClockTracker(self._clock)
        self._vocab_size: int | None = None
        self._generation = 0  # the clock's generation the records below belong to
        self._num_scores = 0  # len(scores) at the last call, when generate passed them
        self._finished = False  # the last call ended its only row (eos or a loop): the next is a new call
        self._recorded = 0  # records (stopped_at, _ended_at) hold generated-token counts up to this one
        self.stopped_at = torch.empty(0, dtype=torch.long)  # per row: generated tokens at the loop stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        # generate passes the scores only with output_scores=True (a tuple, one tensor per generated
        # token of this call): only then is the vocabulary known to check eos_token_id against
        num_scores = len(scores) if isinstance(scores, (tuple, list)) else None
        if num_scores:
            scores = scores[0]
        if isinstance(scores, torch.Tensor) and scores.dim() and scores.shape[-1] != self._vocab_size:
            self._vocab_size = check_vocabulary(self.eos_token_id, "eos_token_id", scores.shape[-1])
        num_generated, _ = self._clock.step(
            input_ids, offset=num_scores or 1, jump=lambda k: self._jump_continues(input_ids, k, num_scores)
        )
        rows, device = input_ids.shape[0], input_ids.device
        if self._generation != self._clock.generation or self.stopped_at.shape[0] != rows:
            self._generation = self._clock.generation
            self.loop_period = torch.zeros(rows, dtype=torch.long, device=device)
            self.stopped_at = torch.full((rows,), -1, dtype=torch.long, device=device)
            self._ended_at = torch.full((rows,), -1, dtype=torch.long, device=device)
            self._recorded = 0
        # tokens generated since the rows last checked (one per step; several under assisted decoding)
        checked = max(min(self._clock.branch, num_generated - 1), 0)
        self._clock.branch = num_generated
        if self._recorded > checked:  # records of abandoned tokens (a rewind)
            self.stopped_at.masked_fill_(self.stopped_at > checked, -1)
            self._ended_at.masked_fill_(self._ended_at > checked, -1)
        self._recorded = num_generated
        fired = None
        first_end = None
        prompt = input_ids.shape[1] - num_generated
        for count in range(checked + 1, num_generated + 1):
            prefix = input_ids[:, : prompt + count]
            period = self.detector(prefix, count)
            hit = period > 0
            if bool(hit.any()):
                fresh = hit & (self.stopped_at < 0) & (self._ended_at < 0)
                self.loop_period = torch.where(fresh, period, self.loop_period)
                self.stopped_at = torch.where(fresh, count, self.stopped_at)
                first_end = count if first_end is None else first_end
                fired = hit if fired is None else fired | hit
            if self.eos_token_id:
                ended = self._is_eos(prefix[:, -1]) & (self._ended_at < 0)
                self._ended_at.masked_fill_(ended, count)
        if fired is None:
            fired = torch.zeros(rows, dtype=torch.bool, device=device)
        self._num_scores = num_scores or 0
        self._finished = rows == 1 and bool(fired.all() or self._ended_at[0] == num_generated)
        if first_end is not None and first_end < num_generated:
            warnings.warn(
                f"LoopStoppingCriteria: a loop ended at generated token {first_end}, and this step of "
                f"assisted or prompt-lookup decoding appended {num_generated - first_end} more; generate "
                "keeps them (it cuts a step only at eos and max_length). report() gives where each row "
                "stopped; LoopEOSLogitsProcessor (NoLoopConfig(loop_action='eos')) ends the row exactly.",
                stacklevel=2,
            )
        return fired

    def _is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        if len(self.eos_token_id) == 1:
            return tokens == self.eos_token_id[0]
        if self._eos.device != tokens.device:
            self._eos = self._eos.to(tokens.device)
        return torch.isin(tokens, self._eos)

    def _jump_continues(self, input_ids: torch.Tensor, jump: int, num_scores: int | None) -> bool:
        """Whether rows ``jump`` >= 2 tokens wider than the rows seen last, starting with them, continue
        the generation (assisted decoding appended them) rather than start a new call (a chat turn)."""
        if num_scores is not None:  # the same call appended them, or a new call fed exactly the last rows
            return jump in (num_scores - self._num_scores, num_scores)
        if input_ids.shape[0] > 1 or self._finished:  # assisted decoding runs one row, until it ends
            return False
        raise ValueError(
            f"LoopStoppingCriteria got rows {jump} tokens wider than at its last call, starting with them: "
            "assisted or prompt-lookup decoding appending several tokens in one step, or a new generate "
            "call on the previous output plus new tokens (a chat turn); it cannot tell which. For assisted "
            "or prompt-lookup decoding put criterion.tracker in logits_processor (NoLoopConfig.build does) "
            "or pass output_scores=True, return_dict_in_generate=True; before a new call, call "
            "criterion.reset()"
        )

    def report(self) -> list[dict]:
        """Rows stopped by a loop since the count started (the last ``generate`` call, or the first of a
        chain of calls fed each other's output): ``{"row", "period", "generated_tokens",
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
