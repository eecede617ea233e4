"""Bad arguments found in issue 16: each gives a clean error naming the argument at the earliest point
(construction, or the first call when only the scores tell the vocabulary size), and the loop rule never
allocates more than its input needs."""

import math

import pytest
import torch
from hfplug_noloop import (
    ConsistentMinPLogitsWarper,
    ConsistentTopKLogitsWarper,
    ConsistentTopPLogitsWarper,
    DRYLogitsProcessor,
    LoopDetector,
    LoopEOSLogitsProcessor,
    LoopStoppingCriteria,
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
)

from hfplug.testing import tiny_model

from .test_noloop_loop_stop import planted, reference_period

WARPERS = [
    (ConsistentTopKLogitsWarper, 5),
    (ConsistentTopPLogitsWarper, 0.5),
    (ConsistentMinPLogitsWarper, 0.1),
]


def held_bytes(component) -> int:
    """Bytes of every tensor reachable from ``component``'s attributes (dicts, lists, tuples, objects)."""
    seen, total, stack = set(), 0, [component]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            total += item.untyped_storage().nbytes()
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())
    return total


@pytest.mark.parametrize(("cls", "value"), WARPERS)
@pytest.mark.parametrize("filter_value", [math.nan, math.inf])
def test_filter_value_nan_or_plus_inf(cls, value, filter_value):
    with pytest.raises(ValueError, match=r"filter_value must be a number <= 3.40282e\+38, got (nan|inf)"):
        cls(value, 2, filter_value=filter_value)
    with pytest.raises(TypeError, match="filter_value"):
        cls(value, 2, filter_value="-inf")
    assert cls(value, 2, filter_value=-1e4).filter_value == -1e4  # finite and -inf stay accepted


def _eos_components(eos):
    return [
        *(cls(value, eos) for cls, value in WARPERS),
        SelfTerminatingLogitsProcessor(0.5, eos),
        LoopEOSLogitsProcessor(eos, 1, 2, min_count=2, window=8, min_loop_tokens=0),
    ]


@pytest.mark.parametrize("index", range(5))
def test_eos_outside_the_vocabulary_is_named_at_the_first_call(index):
    component = _eos_components([2, 1000])[index]
    ids = torch.tensor([[5, 5, 5, 5]])
    with pytest.raises(
        ValueError, match=r"eos_token_id \[1000\] is outside the vocabulary: the scores have 1000"
    ):
        component(ids, torch.zeros(1, 1000))
    component = _eos_components([2, 999])[index]  # the last id of the vocabulary is fine
    out = component(ids, torch.zeros(1, 1000))
    assert out.shape == (1, 1000) and not out.isnan().any()


def test_eos_outside_the_vocabulary_in_generate():
    model = tiny_model("gpt2", "causal-lm").eval()  # vocabulary 1,000
    ids = torch.randint(3, 1000, (2, 5), generator=torch.Generator().manual_seed(0))
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=3, pad_token_id=0)
    for component in _eos_components(5000):
        with pytest.raises(ValueError, match=r"eos_token_id \[5000\] is outside the vocabulary"):
            model.generate(ids, logits_processor=[component], **kwargs)
    stop = LoopStoppingCriteria(eos_token_id=5000)  # the scores reach a criterion with output_scores only
    with pytest.raises(ValueError, match=r"eos_token_id \[5000\] is outside the vocabulary"):
        model.generate(
            ids, stopping_criteria=[stop], output_scores=True, return_dict_in_generate=True, **kwargs
        )


def test_huge_loop_arguments_are_refused_without_allocating():
    """The issue's case asked for a (10^5, 3 x 10^5)-byte table (~30 GB) at construction."""
    with pytest.raises(ValueError, match=r"max_pattern_size must be an integer in \[1, 8192\], got 100000"):
        LoopStoppingCriteria(max_pattern_size=10**5, window=10**6)
    with pytest.raises(ValueError, match=r"window must be an integer in \[2, 8192\], got 1000000"):
        LoopStoppingCriteria(max_pattern_size=64, window=10**6)
    with pytest.raises(ValueError, match="min_count"):
        LoopDetector(1, 8, min_count=10**18, window=64)  # p x min_count would overflow int64


def test_loop_tables_follow_the_input():
    """Largest settings allowed: construction holds only the per-period spans; a call holds tables for
    the loops its generated tokens can hold, not for the whole window."""
    stop = LoopStoppingCriteria(1, 2048, min_count=4, window=8192, min_loop_tokens=16)
    assert held_bytes(stop) < 64 * 1024  # the periods and spans, 2 x 2,048 int64 (the old table: 12 MB)
    ids = torch.randint(3, 1000, (4, 40), generator=torch.Generator().manual_seed(0))
    for _ in range(20):  # a prompt of 40, then 20 generated tokens
        ids = torch.cat([ids, torch.full((4, 1), 7)], dim=1)
        stop(ids, None)
    assert stop.report() and held_bytes(stop) < 128 * 1024


def test_lazy_tables_agree_with_brute_force_as_they_grow():
    """Loops of long periods are found once enough tokens were generated (tables rebuilt for larger
    limits on the way), at the first step they are complete."""
    settings = (1, 300, 2, 1200, 0)
    detector = LoopDetector(*settings)
    for period in (3, 70, 130, 299):
        tokens = planted(period, 2, prefix=20)
        row = torch.tensor(tokens)[None]
        got = [int(detector(row[:, : 20 + g], g)) for g in range(1, len(tokens) - 19)]
        expected = [reference_period(tokens[: 20 + g], g, *settings) for g in range(1, len(tokens) - 19)]
        assert got == expected and got[-1] == period


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"dry_multiplier": math.nan}, ValueError, "dry_multiplier"),
        ({"dry_base": 0.5}, ValueError, "dry_base"),
        ({"dry_allowed_length": True}, TypeError, "dry_allowed_length"),
        ({"dry_window": 1}, ValueError, "dry_window"),
        ({"top_k": 2.0}, TypeError, "top_k"),
        ({"min_p": math.nan}, ValueError, "min_p"),
        ({"epsilon": "0.1"}, TypeError, "epsilon"),
        ({"start": -1}, ValueError, "start"),
        ({"loop_window": 10**6}, ValueError, "loop_window"),
        ({"loop_window": 8}, ValueError, "loop_window"),  # too short for the default loops
        ({"loop_action": True}, ValueError, "loop_action"),
        ({"sequence_breakers": "\n"}, TypeError, "sequence_breakers"),
        ({"sequence_breakers": (1.5,)}, TypeError, "sequence_breakers"),
        ({"protected_token_ids": (-1,)}, ValueError, "protected_token_ids"),
    ],
)
def test_config_names_its_own_fields(kwargs, error, name):
    with pytest.raises(error, match=name):
        NoLoopConfig(**kwargs)


def test_dry_penalty_table_bounded_by_the_window():
    dry = DRYLogitsProcessor(base=1.0000001, window=64)  # default max_exponent ~ 9.2e7
    assert dry.max_exponent > 10**7
    assert dry.penalties(torch.float32, torch.device("cpu")).numel() == 64  # match lengths 0..63


@pytest.mark.parametrize(("cls", "value"), WARPERS)
def test_finite_filter_value_fits_the_scores_dtype(cls, value):
    """A finite filter value beyond float16's range stays finite on half-precision scores: float16's lowest
    value (it overflowed to -inf); beyond float32's range it is refused at construction (1e300 raised
    "RuntimeError: value cannot be converted to type float without overflow" at the first call)."""
    scores = torch.randn(2, 50, generator=torch.Generator().manual_seed(0)).half()
    out = cls(value, 2, filter_value=-1e30)(torch.zeros(2, 3, dtype=torch.long), scores)
    dropped = out != scores
    assert dropped.any() and (out[dropped] == torch.finfo(torch.float16).min).all()
    with pytest.raises(ValueError, match="filter_value"):
        cls(value, 2, filter_value=1e300)


@pytest.mark.parametrize(("cls", "value"), WARPERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_filter_value_keeps_banned_tokens_banned(cls, value, dtype):
    """A dropped token gets the finite filter value, a banned (-inf) one stays -inf: transformers' warpers
    give both the filter value, which makes banned tokens drawable again."""
    scores = torch.randn(3, 40, generator=torch.Generator().manual_seed(1)).to(dtype)
    scores[:, [5, 17]] = -math.inf
    scores[:, 0] = scores.amax(dim=-1) + 5.0  # token 0 always kept
    out = cls(value, 2, filter_value=-50.0)(torch.zeros(3, 3, dtype=torch.long), scores.clone())
    banned = scores == -math.inf
    assert (out[banned] == -math.inf).all()
    dropped = ~banned & (out != scores)
    assert dropped.any() and (out[dropped] == -50.0).all()


def test_first_loop_end_in_blocks_agrees_with_brute_force():
    """first_loop_end scans long sequences in blocks of prefixes (bounded temporaries): the first loop
    end equals the brute-force one, in the first block and far beyond it."""
    settings = (1, 600, 2, 1200, 0)
    detector = LoopDetector(*settings)  # 2^24 / (8 x 1,200) = 1,747 prefixes per block
    for length in (40, 3000):
        tokens = torch.randperm(4000, generator=torch.Generator().manual_seed(length))[:length].tolist()
        period = min(500, length)
        tokens += tokens[-period:]  # a loop of that period completes at length + period
        expected = next(t for t in range(1, len(tokens) + 1) if reference_period(tokens[:t], t, *settings))
        assert detector.first_loop_end(tokens) == expected == length + period
    assert detector.first_loop_end(torch.randperm(4000)[:3000]) is None
