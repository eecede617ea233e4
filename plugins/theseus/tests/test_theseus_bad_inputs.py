"""Property tests: random bad arguments for every public constructor and function, non-finite hidden states.

Each call either raises a clean TypeError / ValueError naming the argument (and leaves the model as it was),
or works. A non-finite example in a batch stays in its own row: the other rows' outputs equal the run in
which that example is finite (Theseus mixes branches per row, never across rows).
"""

from __future__ import annotations

import copy
import math

import torch
from hfplug_theseus import (
    ConstantReplacementScheduler,
    LinearReplacementScheduler,
    ReplacementScheduler,
    TheseusCallback,
    export_successor,
    get_controller,
    theseus_wrap,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfplug.testing import assert_names_argument, junk_values, tiny_model

# cases per test (the report quotes these)
WRAP_CASES = 300
SCHEDULER_CASES = 400
NON_FINITE_CASES = 60
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

WRAP_ARGUMENTS = [
    "num_successor_layers",
    "partition",
    "successor_init",
    "gate",
    "seed",
    "replacing_rate",
    "freeze_predecessor",
    "freeze_embeddings",
    "freeze_head",
    "block_path",
    "distill_alpha",
    "distill_temperature",
]
BASE_MODEL = tiny_model(
    "bert",
    "sequence-classification",
    seed=0,
    num_hidden_layers=4,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _fingerprint(model: torch.nn.Module) -> tuple:
    return (
        [(name, type(module).__name__) for name, module in model.named_modules()],
        [(name, p.requires_grad) for name, p in model.named_parameters()],
    )


@settings(max_examples=WRAP_CASES, **FAST)
@given(name=st.sampled_from(WRAP_ARGUMENTS), value=junk_values())
def test_theseus_wrap_rejects_junk_by_name_before_changing_the_model_or_works(name, value):
    model = copy.deepcopy(BASE_MODEL)
    before = _fingerprint(model)
    arguments = {"num_successor_layers": 2, name: value}
    try:
        theseus_wrap(model, **arguments)
    except (TypeError, ValueError) as error:
        assert_names_argument(error, name)
        assert _fingerprint(model) == before, "a rejected argument must leave the model unchanged"
        return
    controller = model.theseus
    # what was accepted is read as given: no truthy strings, no silently converted or clamped numbers
    if name.startswith("freeze_"):
        assert isinstance(value, bool)
    accepted = {"seed": controller.seed, "gate": controller.gate, "replacing_rate": controller.rate}
    accepted.update(
        distill_alpha=controller.distill_alpha, distill_temperature=controller.distill_temperature
    )
    if name in accepted:
        assert accepted[name] == value and not isinstance(value, bool)
    model.train()
    controller.set_step(0, 0.5)
    ids = torch.randint(3, 1000, (2, 6), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    small = export_successor(model)
    assert small.config.num_hidden_layers == model.theseus.num_modules


SCHEDULER_CALLS = [
    (lambda v: ConstantReplacementScheduler(v), "rate"),
    (lambda v: ConstantReplacementScheduler(0.5, replacing_steps=v), "replacing_steps"),
    (lambda v: LinearReplacementScheduler(v, 0.3), "k"),
    (lambda v: LinearReplacementScheduler(0.1, v), "b"),
    (lambda v: LinearReplacementScheduler(0.1, 0.3).get_rate(v), "step"),
    (lambda v: ConstantReplacementScheduler(0.5, 3).get_rate(v), "step"),
    (lambda v: ReplacementScheduler.from_dict(v), "scheduler spec"),
    (lambda v: ReplacementScheduler.from_dict({"type": v}), "scheduler spec 'type'"),
    (lambda v: TheseusCallback(v), "scheduler"),
    (lambda v: get_controller(v), "model"),
    (lambda v: export_successor(v), "model"),
    (lambda v: theseus_wrap(v, 2), "model"),
    (lambda v: _controller().set_step(v), "step"),
    (lambda v: _controller().set_step(0, v), "rate"),
]


def _controller():
    return theseus_wrap(copy.deepcopy(BASE_MODEL), 2).theseus


@settings(max_examples=SCHEDULER_CASES, **FAST)
@given(call=st.sampled_from(SCHEDULER_CALLS), value=junk_values())
def test_schedulers_callback_and_controller_reject_junk_by_name_or_work(call, value):
    function, name = call
    try:
        result = function(value)
    except (TypeError, ValueError) as error:
        assert_names_argument(error, name)
        return
    if isinstance(result, float):
        assert 0.0 < result <= 1.0
    elif isinstance(result, ReplacementScheduler):
        assert all(0.0 < result.get_rate(t) <= 1.0 for t in (0, 1, 10**9))
        assert ReplacementScheduler.from_dict(result.to_dict()) == result


BAD = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=NON_FINITE_CASES, **FAST)
@given(
    gate=st.sampled_from(["module", "example"]),
    step=st.integers(0, 10**6),
    bad_rows=st.sets(st.integers(0, 3), min_size=1, max_size=3),
    value=BAD,
    position=st.integers(0, 5),
)
def test_non_finite_example_stays_in_its_row(gate, step, bad_rows, value, position):
    model = theseus_wrap(copy.deepcopy(BASE_MODEL), 2, gate=gate, seed=3)
    model.train()
    twin = copy.deepcopy(model)
    embeds = torch.randn(4, 6, 64, generator=torch.Generator().manual_seed(step % 1000))
    broken = embeds.clone()
    for row in bad_rows:
        broken[row, position, 0] = value
    clean_rows = [row for row in range(4) if row not in bad_rows]
    model.theseus.set_step(step, 0.5)
    twin.theseus.set_step(step, 0.5)
    got = model(inputs_embeds=broken).logits
    reference = twin(inputs_embeds=embeds).logits  # same draws: same seed, step and forward index
    if gate == "example":
        assert torch.equal(model.theseus.example_gates, twin.theseus.example_gates)
    assert torch.isfinite(reference).all()
    torch.testing.assert_close(got[clean_rows], reference[clean_rows], rtol=0, atol=0)
