"""One instance of every stateful processor and criterion reused across generate() calls: a new call is
recognised from the rows (not their width), so each call equals a fresh instance token for token, and a
call fed the previous output continues the count (checked against one uninterrupted call)."""

import pytest
import torch
from hfplug_noloop import (
    LoopEOSLogitsProcessor,
    LoopStoppingCriteria,
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
)
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

EOS = 2
BATCH = 3

STATEFUL = {
    "floor": (
        "procs",
        lambda: SelfTerminatingLogitsProcessor(0.2, EOS, start=4),
        lambda c: [r.tolist() for r in c.raised],
    ),
    "loop_eos": (
        "procs",
        lambda: LoopEOSLogitsProcessor(EOS, 1, 4, min_count=3, window=32, min_loop_tokens=6),
        lambda c: [r.tolist() for r in c.forced],
    ),
    "loop_stop": (
        "stops",
        lambda: LoopStoppingCriteria(1, 4, min_count=3, window=32, min_loop_tokens=6, eos_token_id=EOS),
        lambda c: c.report(),
    ),
}


class WidthProcessor:
    """Records the width of the last input_ids it saw; returns the scores unchanged."""

    width = None

    def __call__(self, input_ids, scores):
        self.width = input_ids.shape[1]
        return scores


class WidthCriterion(StoppingCriteria):
    """Records the width of the last input_ids it saw; never stops a row."""

    width = None

    def __call__(self, input_ids, scores, **kwargs):
        self.width = input_ids.shape[1]
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def width_spy(kind):
    return WidthProcessor() if kind == "procs" else WidthCriterion()


def _generate(model, ids, component, kind, spy, **mode):
    procs = LogitsProcessorList([component, spy] if kind == "procs" else [])
    stops = StoppingCriteriaList([component, spy] if kind == "stops" else [])
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=10,
        pad_token_id=0,
        logits_processor=procs,
        stopping_criteria=stops,
        **mode,
    )


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("name", sorted(STATEFUL))
@pytest.mark.parametrize("mode", [{"do_sample": False}, {"num_beams": 2, "do_sample": False}], ids=str)
def test_reused_instance_equals_a_fresh_one(family, name, mode, looping_model):
    """Prompts whose width collides with the last width seen: one wider (the old rule took it for a
    continuation), equal, one wider again; each call must equal a fresh instance's call."""
    kind, make, state = STATEFUL[name]
    model = looping_model(family)
    reused = make()
    spy = width_spy(kind)
    generator = torch.Generator().manual_seed(7)
    width = 6
    for call in range(5):
        ids = torch.randint(3, 1000, (BATCH, width), generator=generator)
        got = _generate(model, ids, reused, kind, spy, **mode)
        fresh = make()
        expected = _generate(model, ids, fresh, kind, width_spy(kind), **mode)
        assert got.tolist() == expected.tolist(), f"call {call} (prompt width {width})"
        assert state(reused) == state(fresh), f"call {call} (prompt width {width})"
        assert reused.prompt_length == fresh.prompt_length
        width = spy.width + 1 if call % 2 == 0 else spy.width  # one wider, then equal


def test_reused_floor_does_not_stop_after_one_token(looping_model):
    """The issue's case: a second, unrelated prompt one token wider than the last width seen."""
    model = looping_model("gpt2")
    floor = SelfTerminatingLogitsProcessor(0.1, EOS, start=8)
    spy = WidthProcessor()
    ids = torch.randint(3, 1000, (BATCH, 6), generator=torch.Generator().manual_seed(0))
    _generate(model, ids, floor, "procs", spy)
    ids = torch.randint(3, 1000, (BATCH, spy.width + 1), generator=torch.Generator().manual_seed(1))
    out = _generate(model, ids, floor, "procs", spy)
    assert out.shape[1] - ids.shape[1] == 10  # the floor starts at 8: no eos forced in 10 tokens
    assert floor.prompt_length == ids.shape[1]


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_continuation_counts_on(name, looping_model):
    """The second call's input_ids = the first call's output: the count goes on, so the two calls together
    equal one uninterrupted call with a fresh instance."""
    kind, make, state = STATEFUL[name]
    model = looping_model("gpt2", seed=2)
    ids = torch.randint(3, 1000, (BATCH, 5), generator=torch.Generator().manual_seed(3))
    kwargs = dict(pad_token_id=0, do_sample=False, eos_token_id=None)

    def run(component, prompt, new):
        lists = {"logits_processor": [component]} if kind == "procs" else {"stopping_criteria": [component]}
        return model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, **kwargs, **lists
        )

    whole = make()
    expected = run(whole, ids, 12)
    reused = make()
    first = run(reused, ids, 4)
    second = run(reused, first, 8)
    assert second.tolist() == expected[:, : second.shape[1]].tolist()
    assert reused.prompt_length == whole.prompt_length == ids.shape[1]
    assert state(reused) == state(whole)
    reused.reset()  # documented: forget the count, the next call starts afresh
    restarted = run(reused, first, 8)
    fresh = make()
    assert restarted.tolist() == run(fresh, first, 8).tolist()
    assert reused.prompt_length == first.shape[1]


@pytest.mark.parametrize("mode", [{"do_sample": False}, {"num_beams": 2, "do_sample": False}], ids=str)
def test_config_components_reused(mode, looping_model):
    """A whole NoLoopConfig build reused across calls of colliding widths equals a fresh build."""
    config = NoLoopConfig(epsilon=0.2, start=3, max_pattern_size=4, min_loop_tokens=4, loop_window=32)
    model = looping_model("llama")
    procs, stops = config.build(EOS)
    generator = torch.Generator().manual_seed(11)
    width = 6
    for _ in range(3):
        ids = torch.randint(3, 1000, (BATCH, width), generator=generator)
        kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=10, pad_token_id=0, **mode)
        got = model.generate(ids, logits_processor=procs, stopping_criteria=stops, **kwargs)
        fresh_procs, fresh_stops = config.build(EOS)
        expected = model.generate(ids, logits_processor=fresh_procs, stopping_criteria=fresh_stops, **kwargs)
        assert got.tolist() == expected.tolist()
        assert stops[0].report() == fresh_stops[0].report()
        width = got.shape[1]  # = the criterion's last width; the processors saw one less


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_generate_under_inference_mode(name, looping_model):
    """Users often generate under torch.inference_mode(), where input_ids are inference tensors with no version
    counter: the reused instance must give the same tokens and state there as a fresh one outside it."""
    kind, make, state = STATEFUL[name]
    model = looping_model("gpt2")
    reused = make()
    generator = torch.Generator().manual_seed(5)
    for call in range(3):
        ids = torch.randint(3, 1000, (BATCH, 6 + call), generator=generator)
        with torch.inference_mode():
            got = _generate(model, ids, reused, kind, width_spy(kind))
        fresh = make()
        expected = _generate(model, ids, fresh, kind, width_spy(kind))
        assert got.tolist() == expected.tolist(), f"call {call}"
        assert state(reused) == state(fresh), f"call {call}"


def test_inference_rows_written_in_place_are_a_new_call():
    """Under inference mode the rows are copied, so a write into the caller's buffer is still noticed."""
    floor = SelfTerminatingLogitsProcessor(0.5, EOS, start=0)
    with torch.inference_mode():
        buffer = torch.zeros(2, 12, dtype=torch.long)
        buffer[:, :6] = torch.arange(12).reshape(2, 6) + 10
        floor(buffer[:, :6], torch.zeros(2, 20))
        buffer[:, :7] = torch.arange(14).reshape(2, 7) + 30  # an unrelated prompt, one token wider
        floor(buffer[:, :7], torch.zeros(2, 20))
        assert floor.prompt_length == 7
        floor(buffer[:, :8], torch.zeros(2, 20))
        assert floor.prompt_length == 7 and len(floor.raised) == 2


def test_rows_written_in_place_are_a_new_call():
    """A caller reusing one buffer: a new prompt written into it, one token wider. The clock keeps the
    last rows by reference, so it must notice the write (else the new rows would start with "themselves")."""
    buffer = torch.zeros(2, 12, dtype=torch.long)
    buffer[:, :6] = torch.arange(12).reshape(2, 6) + 10
    floor = SelfTerminatingLogitsProcessor(0.5, EOS, start=0)
    floor(buffer[:, :6], torch.zeros(2, 20))
    buffer[:, :7] = torch.arange(14).reshape(2, 7) + 30  # an unrelated prompt, one token wider
    floor(buffer[:, :7], torch.zeros(2, 20))
    assert floor.prompt_length == 7 and len(floor.raised) == 1
    floor(buffer[:, :8], torch.zeros(2, 20))  # the next step of that call continues it
    assert floor.prompt_length == 7 and len(floor.raised) == 2


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_chat_turn_is_a_new_call(name, looping_model):
    """Turn 2 = turn 1's output + new user tokens: its rows start with the rows seen last, but it is a
    new generation and must equal a fresh instance (the floor must not start high)."""
    kind, make, state = STATEFUL[name]
    model = looping_model("llama", seed=1)
    reused = make()
    spy = width_spy(kind)
    ids = torch.randint(3, 1000, (BATCH, 6), generator=torch.Generator().manual_seed(5))
    first = _generate(model, ids, reused, kind, spy)
    user = torch.randint(3, 1000, (BATCH, 3), generator=torch.Generator().manual_seed(6))
    turn = torch.cat([first, user], dim=1)
    got = _generate(model, turn, reused, kind, spy)
    fresh = make()
    assert got.tolist() == _generate(model, turn, fresh, kind, width_spy(kind)).tolist()
    assert state(reused) == state(fresh) and reused.prompt_length == fresh.prompt_length


def test_inference_mode_counts_like_no_grad(looping_model, prompt):
    """Inference tensors have no version counter: the clock keeps a copy of their rows instead."""
    model = looping_model()
    ids, mask = prompt
    outputs = []
    for context in (torch.no_grad, torch.inference_mode):
        procs, stops = NoLoopConfig(start=3, epsilon=0.3, loop_action="eos").build(EOS)
        with context():
            outputs.append(
                model.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=20,
                    pad_token_id=0,
                    logits_processor=procs,
                    stopping_criteria=stops,
                )
            )
    assert torch.equal(outputs[0], outputs[1]) and (outputs[1][:, ids.shape[1] :] == EOS).any()
