"""Stateful no-loop components under assisted decoding (``assistant_model=``) and prompt-lookup decoding
(``prompt_lookup_num_tokens=``), and inside ``pipeline("text-generation")``.

Assisted greedy decoding is lossless in transformers (the same tokens as greedy search), so with the same
component it must return plain greedy's tokens; under sampling every call of a component is checked
against the published rule written out here (the loop rule in _noloop_helpers), with the token index taken
from the prompt width."""

import warnings

import pytest
import torch
from _noloop_helpers import first_loop_end, reference_loop_period
from _noloop_helpers import word_tokenizer as make_word_tokenizer
from hfplug_noloop import (
    LoopEOSLogitsProcessor,
    LoopStoppingCriteria,
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
)
from transformers import LogitsProcessorList, StoppingCriteriaList

from hfplug.testing import tiny_model

EOS = 2
LOOP = dict(min_pattern_size=1, max_pattern_size=4, min_count=3, window=32, min_loop_tokens=6)
MODES = {
    "lookup": lambda family: {"prompt_lookup_num_tokens": 4},
    "assistant": lambda family: {"assistant_model": tiny_model(family, "causal-lm", seed=5).eval()},
}
STATEFUL = {
    "floor": ("procs", lambda: SelfTerminatingLogitsProcessor(0.3, EOS, start=4)),
    "loop_eos": ("procs", lambda: LoopEOSLogitsProcessor(EOS, **LOOP)),
    "loop_stop": ("stops", lambda: LoopStoppingCriteria(**LOOP, eos_token_id=EOS)),
}


class Widths:
    """Records the width of every input_ids it is called with; returns the scores unchanged."""

    def __init__(self):
        self.widths = []

    def __call__(self, input_ids, scores):
        self.widths.append(input_ids.shape[1])
        return scores


def _lists(kind, component, *extra):
    """(logits_processor, stopping_criteria) holding the component; a criterion brings its tracker."""
    if kind == "procs":
        return LogitsProcessorList([component, *extra]), StoppingCriteriaList()
    return LogitsProcessorList([component.tracker, *extra]), StoppingCriteriaList([component])


def _generate(model, ids, procs, stops, new=24, **mode):
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new,
        pad_token_id=0,
        logits_processor=procs,
        stopping_criteria=stops,
        **mode,
    )


def _records(name, component, generated):
    """The component's per-token records for the first ``generated`` tokens (drafts may leave more)."""
    if name == "loop_stop":
        return component.report()
    records = component.raised if name == "floor" else component.forced
    return [r.tolist() for r in records[:generated]]


def _prompts(count, width=8):
    """Single-row prompts that repeat a block, so prompt lookup finds drafts from the start."""
    generator = torch.Generator().manual_seed(3)
    for _ in range(count):
        block = torch.randint(3, 1000, (1, 3), generator=generator)
        yield block.repeat(1, width)[:, :width]
        width += 1


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_assisted_greedy_equals_greedy(family, mode, name, looping_model):
    """One reused instance under assisted decoding, three prompts (the second one token wider than the
    last width seen): each output equals plain greedy search with a fresh instance, token for token,
    including where the floor ends the text or the loop rule ends it; the records agree too."""
    kind, make = STATEFUL[name]
    model = looping_model(family)
    reused, spy = make(), Widths()
    rewinds = 0
    for ids in _prompts(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = _generate(model, ids, *_lists(kind, reused, spy), **MODES[mode](family))
        fresh = make()
        expected = _generate(model, ids, *_lists(kind, fresh))
        length = expected.shape[1]
        generated = length - ids.shape[1]
        if name == "loop_stop":  # generate cuts a step only at eos and max_length: it may run past the stop
            assert got[:, :length].tolist() == expected.tolist()
            extra = got.shape[1] - length
            assert bool(extra) == any("appended" in str(w.message) for w in caught), extra
        else:
            assert got.tolist() == expected.tolist()
        if name == "loop_stop":
            assert fresh.report(), "greedy search must stop on a loop here"
        else:
            assert expected[0, -1] == EOS and generated < 24, "the component must end the text here"
        assert _records(name, reused, generated) == _records(name, fresh, generated)
        assert reused.prompt_length == fresh.prompt_length == ids.shape[1]
        rewinds += sum(b <= a for a, b in zip(spy.widths, spy.widths[1:], strict=False))
        spy.widths.clear()
    assert rewinds > 0  # the drafts were really rewound, or the test shows nothing


def test_floor_ends_the_text_under_prompt_lookup(looping_model):
    """The case seen: prompt lookup, floor start 4, epsilon 0.3; the prompt width used to restart at
    every draft (10, 11, 12, ...) and the text never ended in 20 tokens."""
    model = looping_model("gpt2")
    floor = SelfTerminatingLogitsProcessor(0.3, EOS, start=4)
    ids = next(_prompts(1, width=10))
    out = _generate(model, ids, LogitsProcessorList([floor]), None, new=20, prompt_lookup_num_tokens=4)
    assert out[0, -1] == EOS and out.shape[1] - 10 <= floor.greedy_bound()
    assert floor.prompt_length == 10


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_config_build_under_assisted_decoding(family, mode, looping_model):
    """A whole NoLoopConfig build (DRY, loop eos, floor; then the loop stop) equals greedy search."""
    model = looping_model(family, seed=1)
    for loop_action in ("eos", "stop"):
        config = NoLoopConfig(epsilon=0.2, start=6, loop_action=loop_action, **_config_loop())
        ids = next(_prompts(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the loop stop may run past its step: checked above
            got = _generate(model, ids, *config.build(EOS), **MODES[mode](family))
        expected = _generate(model, ids, *config.build(EOS))
        assert got[:, : expected.shape[1]].tolist() == expected.tolist()
        assert got.shape[1] == expected.shape[1] or loop_action == "stop"


def _config_loop():
    return dict(
        min_pattern_size=LOOP["min_pattern_size"],
        max_pattern_size=LOOP["max_pattern_size"],
        min_count=LOOP["min_count"],
        loop_window=LOOP["window"],
        min_loop_tokens=LOOP["min_loop_tokens"],
    )


# ---------------------------------------------------------------- sampling: every call against the rule


def reference_floor(scores: torch.Tensor, token_index: int, epsilon: float, start: int) -> torch.Tensor:
    """Probabilities after the floor f = 1 - (1 - eps)^(t - start): eos mass raised to f if below it."""
    p = scores.double().softmax(-1)
    f = 1 - (1 - epsilon) ** (token_index - start) if token_index > start else 0.0
    p_eos = p[:, EOS : EOS + 1]
    raised = (p_eos < f) & (p_eos > 0)  # a banned eos (-inf, e.g. min_new_tokens) stays banned
    scaled = torch.where(raised, p * (1 - f) / (1 - p_eos), p)
    scaled[:, EOS : EOS + 1] = torch.where(raised, torch.full_like(p_eos, f), p_eos)
    return scaled


class Calls:
    """Wraps a processor: records (input_ids, scores in, scores out) of every call."""

    def __init__(self, processor):
        self.processor, self.calls = processor, []

    def __call__(self, input_ids, scores):
        out = self.processor(input_ids, scores)
        self.calls.append((input_ids.clone(), scores.clone(), out.clone()))
        return out


@pytest.mark.parametrize("mode", sorted(MODES))
def test_sampling_every_call_follows_the_rule(mode, looping_model):
    """Assisted / prompt-lookup sampling: every call of the floor and of the loop-eos processor (drafts,
    lookups and verification alike) equals the rule at token index width - prompt + 1; the loop stop
    stops at the first loop in the returned tokens. Two calls per instance, the second reusing it."""
    model = looping_model("llama")
    floor = Calls(SelfTerminatingLogitsProcessor(0.25, EOS, start=5))
    force = Calls(LoopEOSLogitsProcessor(EOS, **LOOP))
    stop = LoopStoppingCriteria(**LOOP, eos_token_id=EOS)
    procs = LogitsProcessorList([stop.tracker, force, floor])
    multi_token_steps = 0
    for seed, ids in enumerate(_prompts(2)):
        torch.manual_seed(seed)
        spy = Widths()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = _generate(
                model,
                ids,
                LogitsProcessorList([*procs, spy]),
                StoppingCriteriaList([stop]),
                do_sample=True,
                **MODES[mode]("llama"),
            )
        prompt = ids.shape[1]
        for rows, scores, got in force.calls:
            generated = rows[0, prompt:].tolist()
            if reference_loop_period(generated, LOOP):
                assert got[0].argmax() == EOS and torch.isinf(got[0]).sum() == got.shape[1] - 1
            else:
                assert torch.equal(got, scores)
        for rows, scores, got in floor.calls:
            expected = reference_floor(scores, rows.shape[1] - prompt + 1, 0.25, 5)
            torch.testing.assert_close(got.double().softmax(-1), expected, atol=1e-5, rtol=1e-4)
        tokens = out[0, prompt:].tolist()
        first_loop = first_loop_end(tokens, LOOP)
        stops = [r["generated_tokens"] for r in stop.report()]
        assert stops == ([first_loop] if first_loop and EOS not in tokens[: first_loop - 1] else [])
        multi_token_steps += sum(b <= a for a, b in zip(spy.widths, spy.widths[1:], strict=False))
        floor.calls.clear()
        force.calls.clear()
    assert multi_token_steps > 0


# ---------------------------------------------------------------- a stopping criterion on its own


def test_criterion_alone_is_exact_with_scores(looping_model):
    """Without its tracker, the criterion counts from the scores generate passes (output_scores=True)."""
    model = looping_model("gpt2")
    ids = next(_prompts(1))
    stop, fresh = LoopStoppingCriteria(**LOOP), LoopStoppingCriteria(**LOOP)
    kwargs = dict(output_scores=True, return_dict_in_generate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _generate(model, ids, None, StoppingCriteriaList([stop]), prompt_lookup_num_tokens=4, **kwargs)
    expected = _generate(model, ids, None, StoppingCriteriaList([fresh]), **kwargs)
    length = expected.sequences.shape[1]
    assert got.sequences[:, :length].tolist() == expected.sequences.tolist()
    assert stop.report() == fresh.report() != []
    assert stop.prompt_length == ids.shape[1]


def test_criterion_alone_without_scores_raises_under_assisted_decoding(looping_model):
    """Neither tracker nor scores: a second step appending several tokens cannot be told from a chat
    turn, so the criterion raises and says what to do rather than restart its count every step."""
    model = looping_model("gpt2")
    ids = next(_prompts(1))
    stop = LoopStoppingCriteria(**LOOP)
    with pytest.raises(ValueError, match="assisted or prompt-lookup decoding") as error:
        _generate(model, ids, None, StoppingCriteriaList([stop]), prompt_lookup_num_tokens=4)
    assert "criterion.tracker" in str(error.value) and "reset()" in str(error.value)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tracker_under_beam_search(family, looping_model):
    """Beam search shows its stopping criteria 2 x num_beams candidate rows and its processors num_beams
    rows: with its tracker the loop stop still counts each candidate on from its beam, exactly as the
    criterion alone does (its own rows only)."""
    model = looping_model(family, seed=2)  # loops in both families for this prompt
    ids = torch.randint(3, 1000, (2, 6), generator=torch.Generator().manual_seed(4))
    tracked, alone = LoopStoppingCriteria(**LOOP), LoopStoppingCriteria(**LOOP)
    beam = dict(num_beams=2, do_sample=False)
    got = _generate(
        model, ids, LogitsProcessorList([tracked.tracker]), StoppingCriteriaList([tracked]), **beam
    )
    expected = _generate(model, ids, None, StoppingCriteriaList([alone]), **beam)
    assert got.tolist() == expected.tolist()
    assert tracked.report() == alone.report() != []


def _call(stop, rows):
    return stop(rows, None).tolist()


def test_criterion_alone_chat_turns():
    """Rows several tokens wider than the last rows, starting with them: a new call (chat turn) when
    assisted decoding is impossible (more than one row) or the last call ended its row (eos, loop);
    ambiguous otherwise (one row cut by the length cap): a ValueError, and reset() starts afresh."""
    stop = LoopStoppingCriteria(**LOOP, eos_token_id=EOS)
    rows = torch.tensor([[10, 11, 12, 13, 14]] * 3)
    for token in (5, 6, EOS):
        rows = torch.cat([rows, torch.full((3, 1), token)], dim=1)
        _call(stop, rows)
    _call(stop, torch.cat([rows, torch.tensor([[20, 21, 5]] * 3)], dim=1))  # three rows: a new call
    assert stop.prompt_length == rows.shape[1] + 2

    single = torch.tensor([[10, 11, 12, 13, 14, 5]])
    _call(stop, single)
    single = torch.cat([single, torch.tensor([[EOS]])], dim=1)
    _call(stop, single)  # the row ended with eos
    _call(stop, torch.cat([single, torch.tensor([[20, 5]])], dim=1))
    assert stop.prompt_length == single.shape[1] + 1  # a new call

    single = torch.tensor([[10, 11, 12, 13, 14, 5, 6]])
    _call(stop, single[:, :-1])
    _call(stop, single)  # the length cap ended it: generate's own criterion, unseen here
    turn = torch.cat([single, torch.tensor([[20, 5]])], dim=1)
    with pytest.raises(ValueError, match="rows 2 tokens wider"):
        _call(stop, turn)
    stop.reset()
    _call(stop, turn)
    assert stop.prompt_length == turn.shape[1] - 1


# ---------------------------------------------------------------- pipelines (issue 17)


@pytest.mark.parametrize("loop_action", ["stop", "eos"])
def test_pipeline_equals_generate(loop_action, looping_model):
    """pipeline("text-generation") with the components passed per call, reused across prompts of
    colliding widths, equals model.generate with fresh components, token for token."""
    from transformers import pipeline

    model = looping_model("llama", seed=1)
    word_tokenizer = make_word_tokenizer()
    generator = pipeline("text-generation", model=model, tokenizer=word_tokenizer)
    config = NoLoopConfig(epsilon=0.2, start=8, loop_action=loop_action, **_config_loop())
    procs, stops = config.build(word_tokenizer)
    width = 6
    for text_seed in range(3):
        ids = torch.randint(3, 1000, (1, width), generator=torch.Generator().manual_seed(text_seed))
        text = " ".join(f"t{i}" for i in ids[0].tolist())
        got = generator(
            text,
            logits_processor=procs,
            stopping_criteria=stops,
            max_new_tokens=24,
            do_sample=False,
            return_tensors=True,
        )[0]["generated_token_ids"]
        fresh_procs, fresh_stops = config.build(word_tokenizer)
        expected = _generate(model, ids, fresh_procs, fresh_stops)
        assert list(got) == expected[0].tolist()
        width = expected.shape[1] + 1  # one wider than the last width the criterion saw
