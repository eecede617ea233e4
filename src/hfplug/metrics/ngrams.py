"""Repetition and termination statistics of generated token sequences (lists of ids, arrays or tensors).

- ``rep_n``: 1 - sum_i unique_n(y_i) / sum_i total_n(y_i): n-grams repeated inside their own sequence,
  pooled over sequences (0 = no repeat; Welleck et al., 2019).
- ``seq_rep_n``: the same ratio per sequence, averaged over sequences (seq-rep-n).
- ``distinct_n``: unique n-grams / all n-grams over the whole set (Li et al., 2016).
- ``non_termination_ratio``: share of sequences at least ``max_length`` long with no eos in their first
  ``max_length`` tokens (Welleck et al., 2020, r_L).

Pass generated tokens only (strip the prompt). No statistic is defined on zero n-grams: they return nan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..validation import check_int_list

Tokens = Sequence[int] | Any  # also numpy arrays and tensors (anything with ``tolist``)


def as_id_list(sequence: Tokens) -> list[int]:
    """A sequence of token ids as a flat Python list."""
    if hasattr(sequence, "tolist"):
        sequence = sequence.tolist()
    ids = list(sequence)
    if any(isinstance(token, list) for token in ids):
        raise ValueError("each sequence must be a flat list of token ids, got a nested list")
    return ids


def eos_set(eos_token_id: int | Iterable[int]) -> set[int]:
    """One or several eos ids (an int, an iterable or a tensor of ints) as a set of non-negative ints; a
    TypeError for anything else, a ValueError for none or a negative one (:mod:`hfplug.validation`)."""
    if hasattr(eos_token_id, "tolist"):
        eos_token_id = eos_token_id.tolist()
    return set(check_int_list("eos_token_id", eos_token_id, minimum=0, allow_empty=False))


def truncate_at_eos(
    sequences: Iterable[Tokens], eos_token_id: int | Iterable[int], pad_token_id: int | None = None
) -> list[list[int]]:
    """Each sequence up to (not including) its first eos, without trailing ``pad_token_id`` tokens."""
    eos = eos_set(eos_token_id)
    out = []
    for sequence in sequences:
        tokens = as_id_list(sequence)
        tokens = tokens[: next((i for i, token in enumerate(tokens) if token in eos), len(tokens))]
        while pad_token_id is not None and tokens and tokens[-1] == pad_token_id:
            tokens.pop()
        out.append(tokens)
    return out


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    """All contiguous n-grams of ``tokens``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def rep_n(sequences: Iterable[Tokens], n: int = 4) -> float:
    """Pooled share of n-grams that repeat an earlier n-gram of the same sequence (nan if none)."""
    unique = total = 0
    for sequence in sequences:
        grams = ngrams(as_id_list(sequence), n)
        unique += len(set(grams))
        total += len(grams)
    return 1.0 - unique / total if total else float("nan")


def seq_rep_n(sequences: Iterable[Tokens], n: int = 4) -> float:
    """Mean over sequences of 1 - unique n-grams / n-grams (sequences shorter than n are skipped)."""
    ratios = []
    for sequence in sequences:
        grams = ngrams(as_id_list(sequence), n)
        if grams:
            ratios.append(1.0 - len(set(grams)) / len(grams))
    return sum(ratios) / len(ratios) if ratios else float("nan")


def distinct_n(sequences: Iterable[Tokens], n: int = 2) -> float:
    """Distinct n-grams over all sequences divided by all n-grams (nan if none)."""
    grams = [gram for sequence in sequences for gram in ngrams(as_id_list(sequence), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def non_termination_ratio(
    sequences: Iterable[Tokens],
    eos_token_id: int | Iterable[int],
    max_length: int,
    pad_token_id: int | None = None,
) -> float:
    """Share of sequences that reach ``max_length`` generated tokens without an eos among them.

    Trailing ``pad_token_id`` tokens (rows that a stopping criterion ended early) are not counted.
    """
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
    eos = eos_set(eos_token_id)
    flags = []
    for sequence in sequences:
        tokens = as_id_list(sequence)
        while pad_token_id is not None and tokens and tokens[-1] == pad_token_id:
            tokens.pop()
        tokens = tokens[:max_length]
        flags.append(len(tokens) >= max_length and not eos.intersection(tokens))
    if not flags:
        raise ValueError("sequences is empty")
    return sum(flags) / len(flags)
