"""Small helpers shared by the processors and stopping criteria: token-id arguments and the prompt clock."""

from __future__ import annotations

from collections.abc import Iterable

import torch

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
    ``decoder_start`` token), and a stopping criterion once per new token after it was appended
    (``offset=1``). A call continues the previous one when its rows are one token wider and start with
    the rows seen last (in any order: beam search reorders them); anything else starts a new generation,
    whatever its width. So a new ``generate`` call is a new generation (a chat turn too: the previous
    output plus new text is more than one token wider), and a call fed exactly the previous call's
    output continues the count; :meth:`reset` makes the next call start afresh.

    Cost per step: one comparison of the rows with the previous rows. Those are kept by reference, not
    copied (``generate`` builds new rows every step); rows changed in place since (their version
    counter moved) are not trusted, and the call counts as new.
    """

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self._weights: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.prompt_length: int | None = None
        self._rows: torch.Tensor | None = None
        self._version = 0

    def step(self, input_ids: torch.Tensor) -> tuple[int, bool]:
        """Return (generated tokens present in ``input_ids``, whether a new generation started here)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, length), got shape {tuple(input_ids.shape)}")
        new = not self._continues(input_ids)
        if new:
            self.prompt_length = max(input_ids.shape[1] - self.offset, 0)
        self._rows, self._version = input_ids, input_ids._version
        return input_ids.shape[1] - self.prompt_length, new

    def _continues(self, input_ids: torch.Tensor) -> bool:
        last = self._rows
        if (
            last is None
            or last._version != self._version
            or last.shape[0] != input_ids.shape[0]
            or last.shape[1] + 1 != input_ids.shape[1]
            or last.device != input_ids.device
        ):
            return False
        head = input_ids[:, : last.shape[1]]
        return torch.equal(head, last) or self._reordered(head, last)

    def _reordered(self, head: torch.Tensor, last: torch.Tensor) -> bool:
        """Whether every row of ``head`` equals some row of ``last`` (beam search reorders rows).

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
