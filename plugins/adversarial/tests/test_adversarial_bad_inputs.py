"""Property tests: random bad arguments at every constructor, random non-finite values and extreme radii in training.

Constructors: each argument of each class gets a value from ``hfplug.testing.junk_values()`` (NaN, inf, negatives,
huge numbers, bools, strings, None, lists, ...): a TypeError/ValueError naming the argument, or an object whose
stored value is valid. Training: one optimizer step of a random method with a random radius in [1e-30, 1e38] and,
optionally, NaN/inf/-inf written into one random element of the classifier output or the word-embedding output:
either the step is skipped (parameters and optimizer state untouched, counted) or every parameter is finite.
"""

from __future__ import annotations

import math

import pytest
import torch
from _adversarial_failsafe import data_for, train
from _adversarial_helpers import flat_params, make_model
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfplug.testing import assert_names_argument, junk_values

CONSTRUCTOR_EXAMPLES = 150  # per class
TRAINING_EXAMPLES = 60

POSITIVE = ("epsilon", "alpha", "weight", "step_size", "noise_std")
ARGUMENTS = {
    FGM: ("epsilon", "objective", "norm", "share_by_token", "seed"),
    FGSM: ("epsilon", "objective", "seed"),
    PGD: ("epsilon", "alpha", "steps", "random_start", "objective", "norm", "seed"),
    FreeLB: ("epsilon", "alpha", "steps", "init_magnitude", "norm", "seed"),
    GradientPenalty: ("epsilon", "seed"),
    SMART: ("weight", "epsilon", "step_size", "noise_std", "steps", "norm", "seed"),
}


def _valid(name: str, value) -> bool:
    if name in POSITIVE:
        return type(value) is float and math.isfinite(value) and value > 0
    if name == "init_magnitude":
        return type(value) is float and math.isfinite(value) and value >= 0
    if name == "steps":
        return type(value) is int and value >= 1
    if name == "seed":
        return value is None or (type(value) is int and 0 <= value < 2**63)
    if name in ("share_by_token", "random_start"):
        return type(value) is bool
    if name == "objective":
        return value in ("adversarial", "sum")
    if name == "norm":
        return value in ("global", "per_example", "per_token_inf")
    raise AssertionError(name)


@pytest.mark.parametrize("cls", list(ARGUMENTS), ids=lambda cls: cls.__name__)
@settings(max_examples=CONSTRUCTOR_EXAMPLES, deadline=None)
@given(data=st.data())
def test_constructor_rejects_bad_arguments_by_name(cls, data):
    name = data.draw(st.sampled_from(ARGUMENTS[cls]), label="argument")
    value = data.draw(junk_values(), label="value")
    try:
        callback = cls(**{name: value})
    except Exception as error:
        assert_names_argument(error, name)
        return
    stored = getattr(callback, name)
    assert _valid(name, stored), (name, value, stored)
    if value is not None:  # None is a default (seed: no generator; init_magnitude: epsilon)
        coerced = type(value) is not bool if type(stored) is bool else stored != value
        assert not coerced, (name, value, stored)


def poison_output(model: torch.nn.Module, where: str, value: float, index: int) -> None:
    """Write ``value`` into element ``index`` (flattened, modulo the size) of the classifier or word-embedding output
    on every pass."""
    module = model.classifier if where == "logits" else model.get_input_embeddings()

    def hook(module, args, output):
        output = output.clone()
        output.view(-1)[index % output.numel()] = value
        return output

    module.register_forward_hook(hook)


METHODS = {
    "fgm": lambda eps: FGM(epsilon=eps),
    "fgm_sum_shared": lambda eps: FGM(epsilon=eps, objective="sum", share_by_token=True),
    "fgsm": lambda eps: FGSM(epsilon=eps),
    "pgd": lambda eps: PGD(epsilon=eps, steps=2, random_start=True, seed=0),
    "freelb": lambda eps: FreeLB(epsilon=eps, steps=2, seed=0),
    "gradient_penalty": lambda eps: GradientPenalty(epsilon=eps),
    "smart": lambda eps: SMART(epsilon=eps, seed=0),
}


@settings(max_examples=TRAINING_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(sorted(METHODS)),
    epsilon=st.floats(1e-30, 1e38),
    poison=st.none()
    | st.tuples(
        st.sampled_from(["logits", "embeddings"]),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.integers(0, 10**6),
    ),
)
def test_training_never_writes_non_finite_weights(method, epsilon, poison):
    model = make_model("seq")
    start = flat_params(model)
    if poison is not None:
        poison_output(model, *poison)
    trainer = train("fgm", data_for(1), model=model, callback=METHODS[method](epsilon), max_grad_norm=1.0)
    skipped = trainer.state.log_history[-2]["adv_skipped_steps"]
    params = flat_params(trainer.model)
    if skipped:
        assert skipped == 1
        assert torch.equal(params, start)
        assert trainer.optimizer.state_dict()["state"] == {}
    else:
        assert torch.isfinite(params).all()
        assert not torch.equal(params, start)  # AdamW's weight decay moves every weight
