"""Metrics against values counted by hand."""

import pytest
import torch
from hfplug_noloop import LoopDetector, metrics


def test_rep_and_distinct_by_hand():
    a = [1, 2, 3, 1, 2, 3, 1]  # bigrams: 12 23 31 12 23 31 -> 3 unique of 6
    b = [4, 5, 6]  # bigrams: 45 56 -> 2 unique of 2
    assert metrics.rep_n([a, b], 2) == pytest.approx(1 - 5 / 8)
    assert metrics.seq_rep_n([a, b], 2) == pytest.approx((0.5 + 0.0) / 2)
    assert metrics.distinct_n([a, b], 2) == pytest.approx(5 / 8)
    assert metrics.distinct_n([a, a], 1) == pytest.approx(3 / 14)
    assert metrics.rep_n([torch.tensor(a)], 4) == pytest.approx(1 - 3 / 4)  # 1231 2312 3123 1231


def test_non_termination_and_truncation():
    eos, pad = 2, 0
    rows = [[5, 6, 7, 8], [5, 2, 0, 0], [9, 9, 0, 0], [5, 6, 7, 2]]
    assert metrics.non_termination_ratio(rows, eos, max_length=4) == pytest.approx(2 / 4)
    assert metrics.non_termination_ratio(rows, eos, max_length=4, pad_token_id=pad) == pytest.approx(1 / 4)
    assert metrics.non_termination_ratio(rows, eos, max_length=3) == pytest.approx(3 / 4)
    assert metrics.truncate_at_eos(rows, eos) == [[5, 6, 7, 8], [5], [9, 9, 0, 0], [5, 6, 7]]


def test_loop_rate():
    detector = LoopDetector(1, 4, min_count=3, window=32, min_loop_tokens=0)
    looped = [9, 8, 7, 1, 2, 1, 2, 1, 2, 5, 6]  # period 2 x 3 in the middle
    clean = [1, 2, 3, 4, 5, 6, 7, 8]
    after_eos = [1, 2, 2, 3, 3, 3, 3, 3]
    assert metrics.loop_rate([looped, clean], detector=detector) == pytest.approx(0.5)
    assert metrics.loop_rate([after_eos], eos_token_id=3, detector=detector) == 0.0
    assert metrics.loop_rate([after_eos], detector=detector) == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        metrics.rep_n([[1, 2]], 0)
    with pytest.raises(TypeError, match="eos_token_id"):  # a wrong type (hfplug.validation)
        metrics.non_termination_ratio([[1]], None, 4)
    with pytest.raises(ValueError, match="empty"):
        metrics.non_termination_ratio([], 2, 4)
