"""Helpers shared by the no-loop integration tests: a word-level tokenizer over the tiny models' ids and the
loop rule written out from its definition (independent of :class:`hfplug_noloop.LoopDetector`)."""

from __future__ import annotations

import math

from hfplug import testing

EOS = 2


def word_tokenizer():
    """A word-level tokenizer over the tiny models' 1,000 ids: <pad> <unk> <eos>, then "t3" .. "t999"."""
    return testing.word_tokenizer(prefix="t")


def reference_loop_period(generated: list[int], loop: dict) -> int:
    """Smallest period p whose c(p) = max(min_count, ceil(min_loop_tokens / p)) copies end the tokens, with
    p * c(p) <= window (0: no loop). ``loop`` holds the LoopDetector arguments by name."""
    for p in range(loop["min_pattern_size"], loop["max_pattern_size"] + 1):
        copies = max(loop["min_count"], math.ceil(loop["min_loop_tokens"] / p))
        span = p * copies
        if span <= min(loop["window"], len(generated)):
            tail = generated[len(generated) - span :]
            if tail == tail[:p] * copies:
                return p
    return 0


def first_loop_end(tokens: list[int], loop: dict) -> int | None:
    """Smallest t such that ``tokens[:t]`` ends with a loop, or None."""
    return next((t for t in range(1, len(tokens) + 1) if reference_loop_period(tokens[:t], loop)), None)
