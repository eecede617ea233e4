"""Small helpers shared by the processors and stopping criteria: token-id arguments and the prompt clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from transformers import LogitsProcessor

from hfplug.validation import check_int_list

_MAX_ID = 2**63 - 1  # token ids live in int64 tensors


def as_token_ids(
    value: int | Iterable[int] | torch.Tensor | None, name: str, allow_empty: bool = False
) -> list[int]:
    """``value`` (an int, an iterable of ints or an integer tensor) as a sorted list of distinct token ids >= 0."""
    if value is None:
        value = []
    elif isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got a {value.dtype} tensor")
        value = value.reshape(-1).tolist()
    ids = check_int_list(name, value, minimum=0)
    if ids and max(ids) > _MAX_ID:
        raise ValueError(f"{name} must hold token ids < 2**63 (int64), got {max(ids)!r}")
    if not ids and not allow_empty:
        raise ValueError(
            f"{name} is required: pass the eos id(s), e.g. {name}=model.generation_config.eos_token_id "
            "(no eos id is available, so the sequence could never end)"
        )
    return sorted(set(ids))


def check_vocabulary(ids: list[int], name: str, vocab_size: int) -> int:
    """``vocab_size`` if every id in ``ids`` is a column of scores ``vocab_size`` wide, else a ValueError."""
    outside = [token for token in ids if token >= vocab_size]
    if outside:
        raise ValueError(
            f"{name} {outside} is outside the vocabulary: the scores have {vocab_size} tokens "
            f"(ids 0..{vocab_size - 1})"
        )
    return vocab_size


class PromptClock:
    """Counts generated tokens per ``generate`` call from the rows a processor or criterion sees.

    ``generate`` calls a logits processor once per new token with ``input_ids`` of width
    ``prompt + generated`` (left padding included; for encoder-decoder models the prompt is the
    ``decoder_start`` token), and a stopping criterion after the token was appended (``offset=1``).
    Assisted and prompt-lookup decoding also call the processors on draft tokens and then go back:
    widths w, w + 1, ..., w + k, then w + n + 1 (n <= k drafts accepted, the last token corrected).

    A call continues the generation when its rows, minus their last token, are prefixes of rows seen
    last (in any row order and number: beam search reorders rows, and shows its stopping criteria more
    candidate rows than its processors) and it is at least ``prompt + offset``
    wide: one token wider (the next step), or narrower or equal (a rewind; the count is then
    ``width - prompt``, and the records of the abandoned tokens are the caller's to drop, see
    :attr:`branch`). Rows that start with the rows seen last and are ``k >= 2`` tokens wider continue
    only if the caller's ``jump(k)`` says so. Anything else starts a new generation, whatever its width:
    an unrelated prompt, a chat turn (the previous output plus new text is at least two tokens wider
    than the rows a processor saw last); the same prompt again rewinds to 0 generated tokens, which is
    the same count as a fresh start. :meth:`reset` makes the next call start afresh.

    Cost per step: one comparison of the rows with the previous rows (two on a rewind that changed
    the last token). Those are kept by reference, not copied (``generate`` builds new rows every step);
    rows changed in place since (their version counter moved) are not trusted, and the call counts as new.
    Inference tensors (``torch.inference_mode()``) have no version counter: their rows are copied instead.
    """

    def __init__(self) -> None:
        self._weights: torch.Tensor | None = None
        self.generation = 0  # number of generations started; never reset, so readers can tell them apart
        self.reset()

    def reset(self) -> None:
        self.prompt_length: int | None = None
        self.branch = 0  # generated tokens unchanged since a reader last set it: see step()
        self._rows: torch.Tensor | None = None
        self._version: int | None = 0

    def step(
        self, input_ids: torch.Tensor, offset: int = 0, jump: Callable[[int], bool] | None = None
    ) -> tuple[int, bool]:
        """Return (generated tokens present in ``input_ids``, whether a new generation started here).

        ``offset``: tokens already generated when a new generation is first seen (1 for a stopping
        criterion). ``jump(k)`` decides whether rows ``k >= 2`` tokens wider than the rows seen last,
        starting with them, continue the generation (default: no). :attr:`branch` drops to the number
        of generated tokens the rows share with the rows seen last (0 for a new generation).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, length), got shape {tuple(input_ids.shape)}")
        kept = self._kept(input_ids, offset, jump)
        if kept is None:
            self.prompt_length = max(input_ids.shape[1] - offset, 0)
            self.generation += 1
            self.branch = 0
        else:
            self.branch = min(self.branch, kept - self.prompt_length)
        if input_ids.is_inference():  # generate() under torch.inference_mode(): no version counter to watch
            self._rows, self._version = input_ids.clone(), None
        else:
            self._rows, self._version = input_ids, input_ids._version
        return input_ids.shape[1] - self.prompt_length, kept is None

    def _kept(self, input_ids: torch.Tensor, offset: int, jump: Callable[[int], bool] | None) -> int | None:
        """Leading columns of ``input_ids`` equal to the rows seen last when the call continues the
        generation, else None."""
        last = self._rows
        if (
            last is None
            or (self._version is not None and last._version != self._version)
            or last.device != input_ids.device
            or input_ids.shape[1] - offset < self.prompt_length
        ):
            return None
        width, seen = input_ids.shape[1], last.shape[1]
        same = min(width, seen)
        if self._same(input_ids[:, :same], last[:, :same]):
            if width > seen + 1 and (jump is None or not jump(width - seen)):
                return None
            return same
        if width <= seen and self._same(input_ids[:, : width - 1], last[:, : width - 1]):
            return width - 1
        return None

    def _same(self, head: torch.Tensor, last: torch.Tensor) -> bool:
        return torch.equal(head, last) or self._reordered(head, last)

    def _reordered(self, head: torch.Tensor, last: torch.Tensor) -> bool:
        """Whether every row of ``head`` equals some row of ``last`` (beam search reorders rows and keeps
        some of them).

        Candidate rows are paired by a 64-bit key (a random linear form, wrapping int64 sums: equal rows
        have equal keys), then the pairing is checked exactly; O(rows x width).
        """
        width = last.shape[1]
        if self._weights is None or self._weights.numel() < width or self._weights.device != last.device:
            generator = torch.Generator().manual_seed(0)
            size = max(width, 2 * (0 if self._weights is None else self._weights.numel()), 64)
            self._weights = torch.randint(-(2**62), 2**62, (size,), generator=generator).to(last.device)
        weights = self._weights[:width]
        match = (head.long() * weights).sum(-1)[:, None] == (last.long() * weights).sum(-1)[None, :]
        if not bool(match.any(-1).all()):
            return False
        source = match.to(torch.uint8).argmax(-1)
        return torch.equal(last.index_select(0, source), head)


class Clocked:
    """Mixin for components that count generated tokens with a :class:`PromptClock` in ``self._clock``."""

    _clock: PromptClock

    def reset(self) -> None:
        """Forget the previous ``generate`` call, so the next call starts a new count even when it is fed
        the previous output (by default such a call continues the count)."""
        self._clock.reset()

    @property
    def prompt_length(self) -> int | None:
        """(Decoder) prompt width of the current or last ``generate`` call, None before the first call."""
        return self._clock.prompt_length

    def _count(self, input_ids: torch.Tensor, counted: dict[int, int] | None = None) -> int:
        """Generated tokens in ``input_ids``, from one step of the clock. ``counted``: the counts the clocks of
        a fused processor took earlier in the same call (by clock), so that a clock shared by several of its
        components compares the rows once per step (the second step would find the same rows and count
        the same)."""
        if counted is not None and id(self._clock) in counted:
            return counted[id(self._clock)]
        generated, _ = self._clock.step(input_ids)
        if counted is not None:
            counted[id(self._clock)] = generated
        return generated


class ClockTracker(Clocked, LogitsProcessor):
    """Logits processor that returns the scores unchanged and shows every decoding step to a clock.

    A stopping criterion only sees the rows after each step's tokens were appended; under assisted and
    prompt-lookup decoding that is several tokens at once, which looks like a chat turn (the previous
    output plus new tokens). The processors see every step, so this one, put in ``logits_processor``,
    lets the criterion owning ``clock`` tell the two apart. Cost: one comparison of the rows per call.
    """

    def __init__(self, clock: PromptClock) -> None:
        self._clock = clock

    @property
    def clock(self) -> PromptClock:
        return self._clock

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._count(input_ids)
        return scores
