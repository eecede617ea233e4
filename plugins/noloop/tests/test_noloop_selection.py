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
        dropped = torch.where(scores == -INF, -INF, filter_value)  # banned tokens stay -inf
        expected = torch.where(scores >= threshold, scores, dropped)
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (ConsistentTopPLogitsWarper(0.5, eos_token_id=3), TopPLogitsWarper(0.5)),
        (ConsistentTopPLogitsWarper(0.9, eos_token_id=3), TopPLogitsWarper(0.9)),
        (ConsistentMinPLogitsWarper(0.05, eos_token_id=3), MinPLogitsWarper(0.05)),
    ],
    ids=["top_p_0.5", "top_p_0.9", "min_p_0.05"],
)
def test_half_precision_scores_follow_the_rule_on_their_float32_values(path, dtype, ours, reference):
    """bfloat16 / float16 scores: the kept set is transformers' rule on the same scores in float32 (transformers
    itself sums the softmax in the half dtype, which moves its boundary), ties at the boundary all kept."""
    scores = torch.randn(8, 21128, generator=torch.Generator().manual_seed(5)).mul(3).to(dtype)
    ids = torch.zeros(8, 2, dtype=torch.long)
    got = ours(ids, scores.clone())
    assert got.dtype == dtype
    expected = reference(ids, scores.float()) > -math.inf
    expected |= scores.float() >= torch.where(expected, scores.float(), math.inf).amin(-1, keepdim=True)
    expected[:, 3] = True  # eos
    assert torch.equal(got > -math.inf, expected)
    assert torch.equal(got[expected], scores[expected])


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


@st.composite
def peaked_rows(draw):
    """(scores, top_p, min_keep): 1..6 rows of 512..3,000 scores, peaked enough for the candidate sets to
    decide many rows; values from a few levels (ties at the boundary), or distinct; some -inf."""
    rows, width = draw(st.integers(1, 6)), draw(st.integers(512, 3000))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([0.5, 2.0, 5.0, 10.0, 30.0]))
    if draw(st.booleans()):
        levels = draw(st.integers(2, 60))
        scores = torch.randint(0, levels, (rows, width), generator=generator).float() * (scale / levels)
    else:
        scores = torch.randn(rows, width, generator=generator) * scale
    if draw(st.booleans()):
        scores[torch.rand(rows, width, generator=generator) < 0.2] = -INF
        scores[:, 0] = 0.0  # every row keeps a finite score
    top_p = draw(st.sampled_from([0.05, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]))
    return scores, top_p, draw(st.sampled_from([1, 2, 70]))


@settings(max_examples=300, deadline=None)
@given(case=peaked_rows())
def test_top_p_candidate_sets_match_the_full_sort(case):
    """The top-p threshold from the candidate sets (64, then 1,024 largest) against the full sort of every
    row (bit for bit), and the kept set against transformers' TopPLogitsWarper (the same, plus the tokens
    tied with its smallest kept score)."""
    scores, top_p, min_keep = case
    warper = ConsistentTopPLogitsWarper(top_p, eos_token_id=0, min_tokens_to_keep=min_keep)
    row_max = scores.amax(dim=-1, keepdim=True)
    assert torch.equal(warper._threshold(scores, row_max), warper._sorted_threshold(scores))
    ids = torch.zeros(scores.shape[0], 2, dtype=torch.long)
    expected = TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep)(ids, scores.clone())
    got = warper(ids, scores.clone())
    ours, theirs = torch.isfinite(got[:, 1:]), torch.isfinite(expected[:, 1:])
    assert torch.equal(got[:, 1:][ours], scores[:, 1:][ours])
    assert not (theirs & ~ours).any()  # transformers keeps a subset: some of the tokens tied at the boundary
    smallest = torch.where(theirs, scores[:, 1:], INF).amin(dim=-1, keepdim=True)
    assert torch.equal(scores[:, 1:][ours & ~theirs], smallest.expand_as(ours)[ours & ~theirs])


def test_top_p_candidate_sets_decide_peaked_rows_without_sorting(monkeypatch):
    """Peaked rows (a nucleus of a few tokens) never reach the full sort; flat rows all do."""
    sorted_rows = []
    warper = ConsistentTopPLogitsWarper(0.9, eos_token_id=0)
    full = warper._sorted_threshold
    monkeypatch.setattr(warper, "_sorted_threshold", lambda s: sorted_rows.append(len(s)) or full(s))
    scores = torch.randn(8, 21128, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(8, 2, dtype=torch.long)
    expected = TopPLogitsWarper(0.9)(ids, scores.mul(10))
    assert torch.equal(warper(ids, scores.mul(10))[:, 1:], expected[:, 1:]) and sorted_rows == []
    expected = TopPLogitsWarper(0.9)(ids, scores.mul(0.5))
    assert torch.equal(warper(ids, scores.mul(0.5))[:, 1:], expected[:, 1:]) and sorted_rows == [8]


def test_top_p_on_the_boundary_of_a_cumulative_mass():
    """top_p equal to the mass of the m largest tokens (computed in float64): the float32 rounding of the
    reference decides; the candidate sets must leave such rows to it (or agree with it)."""
    generator = torch.Generator().manual_seed(5)
    for trial in range(40):
        scores = torch.randn(4, 4000, generator=generator) * 8
        mass = torch.softmax(scores.double(), dim=-1).sort(dim=-1, descending=True).values.cumsum(dim=-1)
        for m in (1, 2, 3, 5, 8, 13):
            top_p = float(mass[trial % 4, m - 1])
            if not 0.0 < top_p <= 1.0:
                continue
            warper = ConsistentTopPLogitsWarper(top_p, eos_token_id=0)
            got = warper._threshold(scores, scores.amax(dim=-1, keepdim=True))
            assert torch.equal(got, warper._sorted_threshold(scores)), (trial, m)
