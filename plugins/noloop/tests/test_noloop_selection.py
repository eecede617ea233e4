"""The order statistics and the masking behind the consistent warpers, against plain Python / torch.where,
on the NumPy (CPU) path and on the torch path other devices take."""

import math

import pytest
import torch
from hfplug_noloop import (
    ConsistentMinPLogitsWarper,
    ConsistentTopKLogitsWarper,
    ConsistentTopPLogitsWarper,
    _selection,
)
from hfplug_noloop._selection import keep_at_least, keep_top_k, kth_largest, sorted_values
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

INF = math.inf


@pytest.fixture(params=["numpy", "torch"])
def path(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setattr(_selection, "_as_numpy", lambda scores: None)
    return request.param


def _scores_with_repeats(dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(-6, 7, (5, 300), generator=generator).to(dtype) / 2  # many exact ties
    scores[1, :40] = -INF
    scores[2] = -INF
    scores[2, 17] = 1.0
    return scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_order_statistics_match_python_sorting(path, dtype):
    scores = _scores_with_repeats(dtype)
    rows = [sorted(row) for row in scores.float().tolist()]
    assert sorted_values(scores).float().tolist() == rows
    for k in (1, 2, 7, 150, 300):
        expected = [[row[-k]] for row in rows]
        assert kth_largest(scores, k).float().tolist() == expected


@pytest.mark.parametrize("filter_value", [-INF, -1e4])
def test_keep_at_least_matches_where(filter_value):
    scores = _scores_with_repeats()
    scores[0, :3] = torch.tensor([INF, -INF, 3.0])
    for threshold in ([[0.5]] * 5, [[-INF], [3.0], [1.0], [-0.5], [2.0]], [[-INF]] * 5):
        threshold = torch.tensor(threshold)
        expected = torch.where(scores >= threshold, scores, filter_value)
        got = keep_at_least(scores, threshold, filter_value)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert got.data_ptr() != scores.data_ptr()


def test_ties_at_the_boundary_are_all_kept(path):
    """Every token scoring at least the k-th largest / the last nucleus token is kept, eos too."""
    scores = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.0, -1.0, -5.0]])
    ids = torch.zeros(1, 2, dtype=torch.long)
    top_k = ConsistentTopKLogitsWarper(2, eos_token_id=7)(ids, scores.clone())
    assert torch.isfinite(top_k).tolist() == [[True, True, True, True, False, False, False, True]]
    # sorted mass: 0.43, then three of 0.16 each: a nucleus of 0.5 needs one of the tied three
    top_p = ConsistentTopPLogitsWarper(0.5, eos_token_id=7)(ids, scores.clone())
    assert torch.isfinite(top_p).tolist() == [[True, True, True, True, False, False, False, True]]


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 8.0])
def test_large_vocabulary_matches_transformers(path, scale):
    """Vocabulary of the benchmark (21,128): same kept sets as transformers' TopK / TopP / MinP."""
    scores = torch.randn(8, 21128, generator=torch.Generator().manual_seed(int(scale * 10))) * scale
    ids = torch.zeros(8, 2, dtype=torch.long)
    others = torch.arange(21128) != 5
    cases = [
        (ConsistentTopKLogitsWarper, TopKLogitsWarper, (1, 50, 1000)),
        (ConsistentTopPLogitsWarper, TopPLogitsWarper, (0.1, 0.9, 1.0)),
        (ConsistentMinPLogitsWarper, MinPLogitsWarper, (0.0, 0.05, 0.5)),
    ]
    for ours, reference, values in cases:
        for value in values:
            expected = reference(value, min_tokens_to_keep=2)(ids, scores.clone())
            got = ours(value, eos_token_id=5, min_tokens_to_keep=2)(ids, scores.clone())
            torch.testing.assert_close(got[:, others], expected[:, others], rtol=0, atol=0)
            torch.testing.assert_close(got[:, 5], scores[:, 5], rtol=0, atol=0)


@pytest.mark.parametrize("warper", ["top_k", "min_p"])
def test_bfloat16_scores(path, warper):
    scores = torch.randn(4, 500, generator=torch.Generator().manual_seed(1)).mul(3).bfloat16()
    ids = torch.zeros(4, 2, dtype=torch.long)
    if warper == "top_k":
        ours, reference = ConsistentTopKLogitsWarper(20, eos_token_id=3), TopKLogitsWarper(20)
    else:
        ours, reference = ConsistentMinPLogitsWarper(0.1, eos_token_id=3), MinPLogitsWarper(0.1)
    got, expected = ours(ids, scores.clone()), reference(ids, scores.clone())
    assert got.dtype == torch.bfloat16
    others = torch.arange(500) != 3
    torch.testing.assert_close(got[:, others], expected[:, others], rtol=0, atol=0)


@st.composite
def rows_with_ties(draw):
    """(scores, k): 1..8 rows of 1..400 values drawn from a few levels (ties everywhere), some -inf."""
    rows, width = draw(st.integers(1, 8)), draw(st.integers(1, 400))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    levels = draw(st.integers(2, 40))
    scores = torch.randint(0, levels, (rows, width), generator=generator).float() / 4
    scores[scores == 0] = -INF
    if draw(st.booleans()):  # and a few distinct values on top
        scores += torch.rand(rows, width, generator=generator) * draw(st.sampled_from([0.0, 1e-3, 1.0]))
    return scores, draw(st.integers(1, width))


@settings(max_examples=400, deadline=None)
@given(case=rows_with_ties(), size=st.sampled_from([4, 8, 32]))
def test_kth_largest_and_keep_top_k_match_a_full_topk(case, size):
    """The strided-set preselection against the plain definition (a full torch.topk / torch.where)."""
    scores, k = case
    kth = torch.topk(scores, k, dim=-1).values[:, -1:]
    assert torch.equal(kth_largest(scores, k, size), kth)
    assert torch.equal(keep_top_k(scores, k), torch.where(scores >= kth, scores, -INF))
