"""The fused processor NoLoopConfig.build returns against the separate processors of the same config
(the reference: each processor called on the previous one's output): identical scores bit for bit,
identical records and errors, identical generate() tokens."""

import math

import pytest
import torch
from hfplug_noloop import NoLoopConfig, NoLoopLogitsProcessor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import EOS

VOCAB = 64
WIDTH = 48


def _pair(config: NoLoopConfig, eos) -> tuple:
    """(fused components, separate components), two independent builds of ``config``."""
    fused, separate = config.build(eos), config.build(eos, fused=False)
    kinds = [type(p) for p in separate.logits_processor]
    if len(kinds) > 1:  # one processor stays as it is
        assert [type(p) for p in fused.logits_processor] == [NoLoopLogitsProcessor]
        assert [type(p) for p in fused.logits_processor[0].processors] == kinds
    else:
        assert [type(p) for p in fused.logits_processor] == kinds
    return fused, separate


def _run(procs, ids: torch.Tensor, scores: torch.Tensor):
    try:
        return procs(ids, scores.clone())
    except ValueError as error:  # NaN / +inf scores: the same error, from the same component
        return str(error)


def _records(components) -> list:
    """The floor's raised rows and the loop-eos processor's forced rows, per generated token."""
    return [
        [record.tolist() for record in getattr(part, name)]
        for part in components.components()
        for name in ("raised", "forced")
        if hasattr(part, name)
    ]


configs = st.builds(
    NoLoopConfig,
    top_k=st.none() | st.integers(1, VOCAB + 4),
    top_p=st.none() | st.sampled_from([0.05, 0.5, 0.9, 1.0]),
    min_p=st.none() | st.sampled_from([0.0, 0.05, 0.5]),
    epsilon=st.none() | st.sampled_from([1e-9, 0.05, 0.5]),  # never / sometimes / always binding
    start=st.integers(0, 2),
    dry_multiplier=st.sampled_from([0.0, 0.8]),
    dry_window=st.sampled_from([8, 1024]),
    loop_action=st.sampled_from(["stop", "eos", None]),
    min_loop_tokens=st.just(4),
    max_pattern_size=st.just(4),
    min_count=st.just(2),
    loop_window=st.just(32),
)


@st.composite
def step_inputs(draw):
    """(ids, scores): a batch of 1..8 rows, some looping; scores with ties, -inf and optionally NaN / +inf."""
    rows = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, WIDTH), generator=generator)
    for row in draw(st.lists(st.integers(0, rows - 1), max_size=rows)):  # a loop of period 1..4
        period = int(torch.randint(1, 5, (1,), generator=generator))
        ids[row, WIDTH // 2 :] = ids[row, :period].repeat(WIDTH)[: WIDTH - WIDTH // 2]
    kind = draw(st.sampled_from(["normal", "ties", "peaked"]))
    scores = torch.randn(rows, VOCAB, generator=generator)
    if kind == "ties":
        scores = torch.randint(-3, 3, (rows, VOCAB), generator=generator).float()  # many exact ties
    elif kind == "peaked":
        scores = scores * 8
    special = st.sampled_from([-math.inf, math.nan, math.inf, 3.4e38, 0.0])
    for row, column, value in draw(
        st.lists(st.tuples(st.integers(0, rows - 1), st.integers(0, VOCAB - 1), special), max_size=6)
    ):
        scores[row, column] = value
    for row in draw(st.lists(st.integers(0, rows - 1), max_size=1)):
        scores[row] = -math.inf  # every token banned
    return ids, scores


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, inputs=step_inputs(), eos=st.sampled_from([[EOS], [EOS, 9]]), steps=st.integers(1, 3))
def test_fused_equals_separate_processors(config, inputs, eos, steps):
    ids, scores = inputs
    fused, separate = _pair(config, eos)
    for step in range(steps):  # consecutive steps of one generation: the floor rises
        step_ids = ids[:, : WIDTH - steps + step + 1]
        got = _run(fused.logits_processor, step_ids, scores)
        expected = _run(separate.logits_processor, step_ids, scores)
        if isinstance(expected, str):
            assert got == expected
            return
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype
        assert torch.equal(got.isnan(), expected.isnan())
        assert torch.equal(got.nan_to_num(0.0), expected.nan_to_num(0.0))  # bit for bit, NaN aside
    assert _records(fused) == _records(separate)


def test_bfloat16_scores_are_equal():
    ids = torch.randint(3, VOCAB, (4, WIDTH), generator=torch.Generator().manual_seed(0))
    scores = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1)).bfloat16()
    fused, separate = _pair(NoLoopConfig(top_k=5, min_p=0.1, epsilon=0.5, start=0), EOS)
    assert torch.equal(
        fused.logits_processor(ids, scores.clone()), separate.logits_processor(ids, scores.clone())
    )


def test_single_processor_is_not_wrapped():
    procs, _ = NoLoopConfig(epsilon=None, dry_multiplier=0, loop_action=None, top_k=5).build(EOS)
    assert [type(p).__name__ for p in procs] == ["ConsistentTopKLogitsWarper"]


def test_fused_must_be_a_bool():
    with pytest.raises(TypeError, match="fused"):
        NoLoopConfig().build(EOS, fused="yes")


@pytest.mark.parametrize(
    ("kwargs", "mode"),
    [
        ({"start": 4, "epsilon": 0.2}, {"do_sample": False}),
        ({"top_k": 20, "top_p": 0.9, "min_p": 0.05, "start": 2, "epsilon": 0.05}, {"do_sample": True}),
        (
            {"loop_action": "eos", "top_k": 8, "min_loop_tokens": 8, "max_pattern_size": 8},
            {"do_sample": True},
        ),
        ({"top_p": 0.8, "start": 0, "epsilon": 0.1}, {"num_beams": 3, "do_sample": False}),
    ],
)
def test_generate_gives_the_same_tokens(looping_model, prompt, kwargs, mode):
    model = looping_model()
    ids, mask = prompt
    config = NoLoopConfig(**kwargs)
    outputs, reasons = [], []
    for fused in (True, False):
        components = config.build(EOS, fused=fused)
        torch.manual_seed(3)
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=40,
            pad_token_id=0,
            logits_processor=components.logits_processor,
            stopping_criteria=components.stopping_criteria,
            return_dict_in_generate=True,
            **mode,
        )
        outputs.append(out.sequences)
        reasons.append(components.stop_reasons(out))
    assert torch.equal(outputs[0], outputs[1])
    assert reasons[0] == reasons[1]
    assert (outputs[0][:, ids.shape[1] :] == EOS).any()  # the floor / loop eos acted


@pytest.mark.parametrize("loop_action", ["stop", "eos"])
def test_one_clock_step_per_call(loop_action, monkeypatch):
    """A build's floor shares the loop component's prompt clock; the fused processor steps it once per call
    (the loop stop's own step after the token is appended is the only other one)."""
    procs, _ = NoLoopConfig(start=0, loop_action=loop_action).build(2)
    (fused,) = procs
    clocks = {id(part._clock) for part in fused.processors if hasattr(part, "_clock")}
    assert len(clocks) == 1
    steps = []
    clock = next(part._clock for part in fused.processors if hasattr(part, "_clock"))
    step = clock.step
    monkeypatch.setattr(
        clock, "step", lambda *args, **kwargs: steps.append(args[0].shape[1]) or step(*args, **kwargs)
    )
    ids = torch.randint(3, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    for width in range(6, 12):
        fused(ids[:, :width] if width <= 6 else torch.cat([ids, ids[:, : width - 6]], 1), torch.randn(2, 50))
    assert steps == list(range(6, 12))
    assert fused.processors[-1].prompt_length == 6
