"""Repetition and termination metrics for generated token sequences (lists of ids or 1-D tensors).

- ``rep_n``: 1 - sum_i unique_n(y_i) / sum_i total_n(y_i), n-grams repeated within their own sequence,
  pooled over sequences (0 = no repeat).
- ``seq_rep_n``: the same ratio per sequence, averaged (Welleck et al., 2019, seq-rep-n).
- ``distinct_n``: unique n-grams / total n-grams over the whole set (Li et al., 2016).
- ``non_termination_ratio``: fraction of sequences holding no eos in their first ``max_length`` tokens
  and at least ``max_length`` long (Welleck et al., 2020, r_L).
- ``loop_rate``: fraction of sequences whose text before eos contains a loop (:class:`LoopDetector` rule).

Pass generated tokens only (strip the prompt). ``truncate_at_eos`` cuts each sequence at its first eos.
All but ``loop_rate`` are the core's ``hfplug.metrics.ngrams`` functions, which the ``repetition`` evaluate
module (``evaluate.load(hfplug.metrics.path("repetition"))``) also uses.
"""

from __future__ import annotations

from collections.abc import Iterable

from hfplug.metrics.ngrams import (
    Tokens,
    as_id_list,
    distinct_n,
    non_termination_ratio,
    rep_n,
    seq_rep_n,
    truncate_at_eos,
)

from ._utils import as_token_ids
from .stopping_criteria import LoopDetector

__all__ = ["distinct_n", "loop_rate", "non_termination_ratio", "rep_n", "seq_rep_n", "truncate_at_eos"]


def loop_rate(
    sequences: Iterable[Tokens],
    eos_token_id: int | list[int] | None = None,
    detector: LoopDetector | None = None,
) -> float:
    """Fraction of sequences (cut at eos when ``eos_token_id`` is given) that contain a loop anywhere;
    ``detector`` defaults to ``LoopDetector()`` (periods 1..64, >= 4 copies, >= 16 tokens, window 512)."""
    if detector is None:
        detector = LoopDetector()
    elif not isinstance(detector, LoopDetector):
        raise TypeError(f"detector must be a LoopDetector or None, got {type(detector).__name__}")
    sequences = list(sequences)
    if not sequences:
        raise ValueError("sequences is empty")
    if eos_token_id is not None:
        sequences = truncate_at_eos(sequences, as_token_ids(eos_token_id, "eos_token_id"))
    looped = [detector.first_loop_end(as_id_list(sequence)) is not None for sequence in sequences]
    return sum(looped) / len(looped)
