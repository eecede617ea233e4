"""Property tests: random bad arguments at every public constructor and function, random non-finite
scores at every processor, and random call sequences at every stateful component.

Each bad argument gives a clean TypeError / ValueError naming it, or a working object whose call on a
small input finishes, holds little memory and returns no NaN for finite scores. Non-finite scores give
a clean ValueError naming the rows, or an output where every row that was free of NaN / +inf stays so.
"""

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
    metrics,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hfplug.testing import assert_names_argument, junk_values

from .test_noloop_arguments import held_bytes

VOCAB = 50
ROWS = 3
WIDTH = 40
HELD_LIMIT = 1 << 20  # bytes a component may hold after one call on (3, 40) ids and (3, 50) scores

# public constructor -> valid keyword arguments (each argument is replaced by junk in turn)
CONSTRUCTORS = {
    ConsistentTopKLogitsWarper: {
        "top_k": 5,
        "eos_token_id": 2,
        "filter_value": -math.inf,
        "min_tokens_to_keep": 1,
    },
    ConsistentTopPLogitsWarper: {
        "top_p": 0.5,
        "eos_token_id": 2,
        "filter_value": -math.inf,
        "min_tokens_to_keep": 1,
    },
    ConsistentMinPLogitsWarper: {
        "min_p": 0.1,
        "eos_token_id": 2,
        "filter_value": -math.inf,
        "min_tokens_to_keep": 1,
    },
    SelfTerminatingLogitsProcessor: {"epsilon": 0.3, "eos_token_id": 2, "start": 0},
    DRYLogitsProcessor: {
        "multiplier": 0.8,
        "base": 1.75,
        "allowed_length": 2,
        "window": 64,
        "sequence_breaker_ids": [3],
        "protected_token_ids": [2],
        "max_exponent": 4,
    },
    LoopEOSLogitsProcessor: {
        "eos_token_id": 2,
        "min_pattern_size": 1,
        "max_pattern_size": 4,
        "min_count": 3,
        "window": 32,
        "min_loop_tokens": 4,
    },
    LoopStoppingCriteria: {
        "min_pattern_size": 1,
        "max_pattern_size": 4,
        "min_count": 3,
        "window": 32,
        "min_loop_tokens": 4,
        "eos_token_id": 2,
    },
    LoopDetector: {
        "min_pattern_size": 1,
        "max_pattern_size": 4,
        "min_count": 3,
        "window": 32,
        "min_loop_tokens": 4,
    },
}
CASES = [(cls, name) for cls, kwargs in CONSTRUCTORS.items() for name in kwargs]
CONFIG_FIELDS = [
    "top_k",
    "top_p",
    "min_p",
    "epsilon",
    "start",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_window",
    "sequence_breakers",
    "protected_token_ids",
    "loop_action",
    "min_pattern_size",
    "max_pattern_size",
    "min_count",
    "loop_window",
    "min_loop_tokens",
]


def _ids(seed: int = 0) -> torch.Tensor:
    """(3, 40) ids over a vocabulary of 50; the last row ends in a loop of period 2."""
    ids = torch.randint(0, VOCAB, (ROWS, WIDTH), generator=torch.Generator().manual_seed(seed))
    ids[-1, -12:] = torch.tensor([7, 8] * 6)
    return ids


def _run(component, ids: torch.Tensor, scores: torch.Tensor):
    """One call of a processor or criterion (a detector gets the width as the generated count)."""
    if isinstance(component, LoopDetector):
        return component(ids, ids.shape[1])
    if isinstance(component, LoopStoppingCriteria):
        return component(ids, scores)
    return component(ids, scores)


def _assert_works(component, name: str, scores: torch.Tensor) -> None:
    """Call a constructed component on a finite input: a clean error naming ``name`` (e.g. an eos id
    outside the vocabulary, known only from the scores) or a finite output and bounded memory."""
    try:
        out = _run(component, _ids(), scores.clone())
    except (TypeError, ValueError) as error:
        assert_names_argument(error, name)
        return
    if out.is_floating_point():
        assert not out.isnan().any() and not (out == math.inf).any()
        assert (out > -math.inf).any(dim=-1).all()  # every row keeps a token to choose
    assert held_bytes(component) < HELD_LIMIT


@pytest.mark.parametrize(("cls", "name"), CASES, ids=lambda v: getattr(v, "__name__", v))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=junk_values())
def test_constructor_junk(cls, name, value):
    kwargs = {**CONSTRUCTORS[cls], name: value}
    try:
        component = cls(**kwargs)
    except Exception as error:  # the assertion checks the kind of error
        assert_names_argument(error, name)
        return
    scores = torch.randn(ROWS, VOCAB, generator=torch.Generator().manual_seed(1))
    _assert_works(component, name, scores)


@pytest.mark.parametrize("field", CONFIG_FIELDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=junk_values())
def test_config_junk(field, value):
    try:
        config = NoLoopConfig(**{field: value})
    except Exception as error:  # the assertion checks the kind of error
        assert_names_argument(error, field)
        return
    procs, stops = config.build(2)
    ids = _ids()
    scores = torch.randn(ROWS, VOCAB, generator=torch.Generator().manual_seed(2))
    for step in range(3):  # a few steps of one generation
        step_ids = ids[:, : WIDTH - 3 + step]
        scores = procs(step_ids, scores)
        assert not scores.isnan().any() and (scores > -math.inf).any(dim=-1).all()
        stops(ids[:, : WIDTH - 2 + step], scores)


@settings(max_examples=80, deadline=None)
@given(
    eos=junk_values(),
    breakers=st.one_of(junk_values(), st.lists(junk_values(), max_size=3)),
    prompt_length=junk_values(),
    detector=st.one_of(junk_values(), st.just(LoopDetector(1, 4, 3, 32, 4))),
)
def test_functions_junk(eos, breakers, prompt_length, detector):
    """NoLoopConfig.build, NoLoopComponents.stop_reasons and metrics.loop_rate."""
    config = NoLoopConfig(epsilon=0.2, max_pattern_size=4, min_loop_tokens=4, loop_window=32)
    for name, call in (
        ("eos_token_id", lambda: config.build(eos)),
        ("sequence_breakers", lambda: config.build(2, sequence_breakers=breakers)),
        ("prompt_length", lambda: config.build(2).stop_reasons(_ids(), prompt_length=prompt_length)),
        ("eos_token_id", lambda: metrics.loop_rate(_ids().tolist(), eos_token_id=eos)),
        ("detector", lambda: metrics.loop_rate(_ids().tolist(), detector=detector)),
    ):
        try:
            result = call()
        except Exception as error:  # the assertion checks the kind of error
            assert_names_argument(error, name)
            continue
        if isinstance(result, float):
            assert 0.0 <= result <= 1.0
        elif isinstance(result, list):
            assert len(result) == ROWS and set(result) <= {"eos", "forced_eos", "loop", "max_length"}


PROCESSORS = {
    "top_k": lambda: ConsistentTopKLogitsWarper(5, [2, 9]),
    "top_p": lambda: ConsistentTopPLogitsWarper(0.5, [2, 9]),
    "min_p": lambda: ConsistentMinPLogitsWarper(0.1, [2, 9]),
    "floor": lambda: SelfTerminatingLogitsProcessor(0.3, [2, 9], start=0),
    "dry": lambda: DRYLogitsProcessor(allowed_length=1, window=64, protected_token_ids=[2]),
    "loop_eos": lambda: LoopEOSLogitsProcessor([2, 9], 1, 4, min_count=3, window=32, min_loop_tokens=4),
}

special_scores = st.sampled_from([math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 0.0])


@st.composite
def scores_with_non_finite(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 1e4]))
    seed = draw(st.integers(0, 2**16))
    scores = torch.randn(ROWS, VOCAB, generator=torch.Generator().manual_seed(seed)) * scale
    entries = draw(
        st.lists(st.tuples(st.integers(0, ROWS - 1), st.integers(0, VOCAB - 1), special_scores), max_size=8)
    )
    for row, column, value in entries:
        scores[row, column] = value
    whole_rows = draw(st.lists(st.tuples(st.integers(0, ROWS - 1), special_scores), max_size=2))
    for row, value in whole_rows:  # a whole row of NaN, -inf, ...
        scores[row] = value
    return scores.to(dtype)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
@settings(max_examples=150, deadline=None)
@given(scores=scores_with_non_finite(), steps=st.integers(1, 4))
def test_non_finite_scores(name, scores, steps):
    processor = PROCESSORS[name]()
    ids = _ids()
    bad_rows = (scores.isnan() | (scores == math.inf)).any(dim=-1)
    for step in range(steps):  # later steps: the floor rises
        try:
            out = processor(ids[:, : WIDTH - steps + step + 1], scores.clone())
        except ValueError as error:
            assert bad_rows.any(), f"raised on rows free of NaN / +inf: {error}"
            assert "NaN or +inf" in str(error) and str(torch.nonzero(bad_rows).flatten().tolist()) in str(
                error
            )
            return
        assert out.shape == scores.shape and out.dtype == scores.dtype
        clean = ~bad_rows
        assert not out[clean].isnan().any(), "NaN out of a row without NaN"
        assert not (out[clean] == math.inf).any()
        live = (scores > -math.inf).any(dim=-1) & clean
        assert (out[live] > -math.inf).any(dim=-1).all(), "a row lost every token"


@st.composite
def call_sequences(draw):
    """A chain of generate-like calls: each is a new prompt (width drawn to collide with the last
    width seen: one wider, equal, one narrower, or any), a chat turn (the previous output and 1-12 new
    tokens: a new call) or a continuation fed exactly the previous output."""
    calls = []
    for _ in range(draw(st.integers(2, 5))):
        kind = draw(st.sampled_from(["wider", "equal", "narrower", "any", "continue", "chat"]))
        calls.append((kind, draw(st.integers(1, 12)), draw(st.integers(2, 12)), draw(st.integers(0, 2**16))))
    return calls, draw(st.booleans())


STATEFUL = {
    "floor": (0, lambda: SelfTerminatingLogitsProcessor(0.3, 2, start=2)),
    "loop_eos": (0, lambda: LoopEOSLogitsProcessor(2, 1, 3, min_count=3, window=16, min_loop_tokens=3)),
    "loop_stop": (
        1,
        lambda: LoopStoppingCriteria(1, 3, min_count=3, window=16, min_loop_tokens=3, eos_token_id=2),
    ),
}


def _steps(component, offset: int, rows: torch.Tensor, new: int, seed: int, shuffle: bool):
    """Feed ``new`` steps of one call; returns the outputs and the final rows (the call's output).
    ``shuffle`` reorders rows every step, as beam search does."""
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for _ in range(new):
        scores = torch.randn(rows.shape[0], 10, generator=generator)
        if offset == 0:
            outputs.append(component(rows, scores))
        tokens = torch.randint(5, 8, (rows.shape[0], 1), generator=generator)  # 3 ids: loops come often
        if shuffle:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)]
        rows = torch.cat([rows, tokens], dim=1)
        if offset == 1:
            outputs.append(component(rows, scores))
    return outputs, rows


@pytest.mark.parametrize("name", sorted(STATEFUL))
@settings(max_examples=60, deadline=None)
@given(sequence=call_sequences())
@example(sequence=([("wider", 1, 2, 0), ("equal", 1, 2, 0)], False))  # one seed: the prompts used to collide
def test_reuse_equals_fresh_per_chain(name, sequence):
    """One instance fed a chain of calls equals a fresh instance per chain (a chain = a new call and the
    continuations fed its output), step for step; the prompt length is the chain's first prompt."""
    offset, make = STATEFUL[name]
    calls, shuffle = sequence
    reused, fresh = make(), None
    last_rows, chain_prompt, last_seen = None, None, None
    for index, (kind, width, new, seed) in enumerate(calls):
        generator = torch.Generator().manual_seed(seed)
        first = 10 + 10 * index  # each call's new tokens come from ids no earlier row holds
        if kind == "continue" and last_rows is not None:
            rows = last_rows
        elif kind == "chat" and last_rows is not None:
            rows = torch.cat(
                [last_rows, torch.randint(first, first + 10, (ROWS, width), generator=generator)], 1
            )
            fresh, chain_prompt = make(), rows.shape[1]
        else:
            if last_seen is not None:
                width = {"wider": last_seen + 1, "equal": last_seen, "narrower": max(1, last_seen - 1)}.get(
                    kind, width
                )
            # its own ids: never a prefix of old rows (nor old rows plus one token)
            rows = torch.randint(first, first + 10, (ROWS, width), generator=generator)
            fresh, chain_prompt = make(), width
        got, out_rows = _steps(reused, offset, rows, new, seed, shuffle)
        expected, _ = _steps(fresh, offset, rows, new, seed, shuffle)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
        assert reused.prompt_length == fresh.prompt_length == chain_prompt
        last_rows, last_seen = out_rows, out_rows.shape[1] - (1 - offset)
