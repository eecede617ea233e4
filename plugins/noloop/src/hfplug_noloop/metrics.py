"""Repetition and termination metrics for generated token sequences (lists of ids or 1-D tensors).

- ``rep_n``: 1 - sum_i unique_n(y_i) / sum_i total_n(y_i), n-grams repeated within their own sequence,
  pooled over sequences (0 = no repeat).
- ``seq_rep_n``: the same ratio per sequence, averaged (Welleck et al., 2019, seq-rep-n).
- ``distinct_n``: unique n-grams / total n-grams over the whole set (Li et al., 2016).
- ``non_termination_ratio``: fraction of sequences holding no eos in their first ``max_length`` tokens
  and at least ``max_length`` long (Welleck et al., 2020, r_L).
- ``loop_rate``: fraction of sequences whose text before eos contains a loop (:class:`LoopDetector` rule).

Pass generated tokens only (strip the prompt). ``truncate_at_eos`` cuts each sequence at its first eos.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ._utils import as_token_ids
from .stopping_criteria import LoopDetector

Tokens = Sequence[int] | torch.Tensor


def _as_list(sequence: Tokens) -> list[int]:
    return sequence.reshape(-1).tolist() if isinstance(sequence, torch.Tensor) else list(sequence)


def truncate_at_eos(sequences: Iterable[Tokens], eos_token_id: int | list[int]) -> list[list[int]]:
    """Each sequence up to (not including) its first eos."""
    eos = set(as_token_ids(eos_token_id, "eos_token_id"))
    out = []
    for sequence in sequences:
        tokens = _as_list(sequence)
        end = next((i for i, token in enumerate(tokens) if token in eos), len(tokens))
        out.append(tokens[:end])
    return out


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def rep_n(sequences: Iterable[Tokens], n: int = 4) -> float:
    """Pooled share of n-grams that repeat an earlier n-gram of the same sequence (nan if none)."""
    unique = total = 0
    for sequence in sequences:
        grams = _ngrams(_as_list(sequence), n)
        unique += len(set(grams))
        total += len(grams)
    return 1.0 - unique / total if total else float("nan")


def seq_rep_n(sequences: Iterable[Tokens], n: int = 4) -> float:
    """Mean over sequences of 1 - unique n-grams / n-grams (sequences shorter than n are skipped)."""
    ratios = []
    for sequence in sequences:
        grams = _ngrams(_as_list(sequence), n)
        if grams:
            ratios.append(1.0 - len(set(grams)) / len(grams))
    return sum(ratios) / len(ratios) if ratios else float("nan")


def distinct_n(sequences: Iterable[Tokens], n: int = 2) -> float:
    """Distinct n-grams over all sequences divided by all n-grams (nan if none)."""
    grams = [gram for sequence in sequences for gram in _ngrams(_as_list(sequence), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def non_termination_ratio(
    sequences: Iterable[Tokens],
    eos_token_id: int | list[int],
    max_length: int,
    pad_token_id: int | None = None,
) -> float:
    """Fraction of sequences that reach ``max_length`` generated tokens without an eos among them.

    Trailing ``pad_token_id`` tokens (rows that a stopping criterion ended early) are not counted.
    """
    eos = set(as_token_ids(eos_token_id, "eos_token_id"))
    flags = []
    for sequence in sequences:
        tokens = _as_list(sequence)
        while pad_token_id is not None and tokens and tokens[-1] == pad_token_id:
            tokens.pop()
        tokens = tokens[:max_length]
        flags.append(len(tokens) >= max_length and not eos.intersection(tokens))
    if not flags:
        raise ValueError("sequences is empty")
    return sum(flags) / len(flags)


def loop_rate(
    sequences: Iterable[Tokens],
    eos_token_id: int | list[int] | None = None,
    detector: LoopDetector | None = None,
) -> float:
    """Fraction of sequences (cut at eos when ``eos_token_id`` is given) that contain a loop anywhere."""
    detector = detector or LoopDetector()
    sequences = list(sequences)
    if not sequences:
        raise ValueError("sequences is empty")
    if eos_token_id is not None:
        sequences = truncate_at_eos(sequences, eos_token_id)
    looped = [detector.first_loop_end(_as_list(sequence)) is not None for sequence in sequences]
    return sum(looped) / len(looped)
