"""Small helpers shared by the processors and stopping criteria: eos ids and the prompt clock."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def as_token_ids(
    value: int | Iterable[int] | torch.Tensor | None, name: str, allow_empty: bool = False
) -> list[int]:
    """``value`` (an int, an iterable of ints or a 1-D tensor) as a list of non-negative token ids."""
    if value is None:
        ids: list = []
    elif isinstance(value, torch.Tensor):
        ids = value.reshape(-1).tolist()
    elif isinstance(value, int) and not isinstance(value, bool):
        ids = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        ids = list(value)
    else:
        raise TypeError(f"{name} must be an int, a list of ints or a tensor of ints, got {value!r}")
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ValueError(f"{name} must hold non-negative integer token ids, got {token!r} in {value!r}")
    if not ids and not allow_empty:
        raise ValueError(
            f"{name} is required: pass the eos id(s), e.g. {name}=model.generation_config.eos_token_id "
            "(no eos id is available, so the sequence could never end)"
        )
    return sorted(set(ids))


def check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value == float("inf")
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class PromptClock:
    """Counts generated tokens per ``generate`` call from the shapes a processor or criterion sees.

    ``generate`` calls a logits processor once per new token with ``input_ids`` of width
    ``prompt + generated`` (left padding included; for encoder-decoder models the prompt is the
    ``decoder_start`` token), and a stopping criterion once per new token after it was appended
    (``offset=1``). A call whose width is not the previous width + 1, or whose row count changed,
    starts a new generation. Call :meth:`reset` between two ``generate`` calls when the second one
    continues the first one's output with the same batch size.
    """

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.reset()

    def reset(self) -> None:
        self.prompt_length: int | None = None
        self._last: tuple[int, int] | None = None

    def step(self, input_ids: torch.Tensor) -> tuple[int, bool]:
        """Return (generated tokens present in ``input_ids``, whether a new generation started here)."""
        rows, width = input_ids.shape
        new = self._last is None or self._last != (rows, width - 1)
        if new:
            self.prompt_length = width - self.offset
        self._last = (rows, width)
        return width - self.prompt_length, new


class Clocked:
    """Mixin for components that count generated tokens with a :class:`PromptClock` in ``self._clock``."""

    _clock: PromptClock

    def reset(self) -> None:
        """Forget the previous ``generate`` call (needed only to continue an output with the same batch)."""
        self._clock.reset()

    @property
    def prompt_length(self) -> int | None:
        """(Decoder) prompt width of the current or last ``generate`` call, None before the first call."""
        return self._clock.prompt_length
