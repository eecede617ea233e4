"""Property tests: random bad arguments and non-finite tensors thrown at every public constructor and function.

Each call either raises a clean TypeError / ValueError naming the argument, or gives a working object
whose result is finite (and correct where a reference is cheap). Non-finite logits raise with the default
``check_finite=True``; with ``check_finite=False`` a NaN in a counted target propagates to the loss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hfplug_imbalance import (
    BalancedSoftmaxLoss,
    DiceLoss,
    F1WeightedCrossEntropyLoss,
    FocalLoss,
    LDAMDRWCallback,
    LDAMLoss,
    LogitAdjustedLoss,
    MultiLabelCategoricalCrossEntropyLoss,
    PostHocLogitAdjuster,
    WeightedCrossEntropyLoss,
    class_counts,
    class_priors,
    class_weights,
    post_hoc_logit_adjust,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfplug.testing import assert_names_argument, junk_values

COUNTS = [50.0, 20.0, 8.0, 3.0]
# cases per test (the report quotes these)
CONSTRUCTOR_CASES = 400
NUM_ITEMS_CASES = 150
NON_FINITE_CASES = 150
MAGNITUDE_CASES = 150
POST_HOC_CASES = 100
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (callable, argument under test, the other arguments)
CONSTRUCTORS = [
    *((FocalLoss, name, {}) for name in ("gamma", "alpha", "activation", "label_smoothing", "ignore_index")),
    (FocalLoss, "check_finite", {}),
    (FocalLoss, "alpha", {"activation": "sigmoid"}),
    *((LogitAdjustedLoss, name, {"priors": COUNTS}) for name in ("tau", "smoothing", "label_smoothing")),
    (LogitAdjustedLoss, "priors", {}),
    (BalancedSoftmaxLoss, "priors", {}),
    (BalancedSoftmaxLoss, "smoothing", {"priors": [5.0, 0.0, 2.0]}),
    *(
        (LDAMLoss, name, {"class_counts": COUNTS})
        for name in ("max_margin", "scale", "drw_beta", "smoothing")
    ),
    (LDAMLoss, "class_counts", {}),
    *(
        (WeightedCrossEntropyLoss, name, {"class_counts": COUNTS})
        for name in ("weighting", "beta", "smoothing", "class_counts")
    ),
    (WeightedCrossEntropyLoss, "weights", {}),
    *((DiceLoss, name, {}) for name in ("alpha", "smooth", "activation", "check_finite")),
    (DiceLoss, "alpha", {"activation": "sigmoid"}),
    (F1WeightedCrossEntropyLoss, "activation", {}),
    (F1WeightedCrossEntropyLoss, "ignore_index", {"activation": "sigmoid"}),
    (MultiLabelCategoricalCrossEntropyLoss, "ignore_index", {}),
    (MultiLabelCategoricalCrossEntropyLoss, "check_finite", {}),
    (class_priors, "counts", {}),
    (class_priors, "smoothing", {"counts": COUNTS}),
    *((class_weights, name, {"counts": COUNTS}) for name in ("weighting", "beta", "smoothing")),
    (class_weights, "counts", {}),
    *(
        (class_counts, name, {"source": [0, 1, 2, 1, -100]})
        for name in ("num_classes", "ignore_index", "multi_label", "all_reduce", "label_column")
    ),
    (class_counts, "source", {}),
    *((PostHocLogitAdjuster, name, {"priors": COUNTS}) for name in ("tau", "smoothing", "check_finite")),
    (PostHocLogitAdjuster, "priors", {}),
    (LDAMDRWCallback, "loss", {}),
    (LDAMDRWCallback, "start_epoch", {"loss": LDAMLoss(COUNTS)}),
    (LDAMDRWCallback, "start_fraction", {"loss": LDAMLoss(COUNTS)}),
]


def _num_classes(loss: torch.nn.Module) -> int:
    for name in ("log_priors", "class_weight", "margins", "alpha"):
        buffer = getattr(loss, name, None)
        if isinstance(buffer, torch.Tensor) and buffer.dim() == 1:
            return buffer.numel()
    return 4


def _targets(loss: torch.nn.Module, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    sigmoid = (
        isinstance(loss, MultiLabelCategoricalCrossEntropyLoss)
        or getattr(loss, "activation", "") == "sigmoid"
    )
    return F.one_hot(labels, num_classes).float() if sigmoid else labels


def _exercise(made: object) -> None:
    """A constructed object works: a finite result (and a finite gradient for losses)."""
    generator = torch.Generator().manual_seed(0)
    if isinstance(made, torch.nn.Module):
        c = _num_classes(made)
        logits = (3 * torch.randn(6, c, generator=generator)).requires_grad_(True)
        labels = torch.randint(0, c, (6,), generator=generator)
        value = made(logits, _targets(made, labels, c))
        value.backward()
        assert math.isfinite(value.item()) and torch.isfinite(logits.grad).all(), made
    elif isinstance(made, PostHocLogitAdjuster):
        logits = torch.randn(5, made.log_priors.numel(), generator=generator)
        expected = logits - made.tau * made.log_priors.float()
        torch.testing.assert_close(made(logits), expected)
    elif isinstance(made, LDAMDRWCallback):
        from transformers import TrainerState

        state = TrainerState(max_steps=10, global_step=9, epoch=1.0)
        made.on_step_begin(None, state, None)
        assert isinstance(made.loss.reweight, bool)
    else:
        assert isinstance(made, torch.Tensor) and made.dim() == 1 and torch.isfinite(made).all()
        assert (made >= 0).all() and made.sum() > 0 and made.numel() <= 2**24


@settings(max_examples=CONSTRUCTOR_CASES, **FAST)
@given(case=st.sampled_from(CONSTRUCTORS), value=junk_values())
def test_every_argument_rejects_junk_by_name_or_works(case, value):
    make, name, others = case
    try:
        made = make(**{**others, name: value})
    except (TypeError, ValueError) as error:
        assert_names_argument(error, name)
        return
    _exercise(made)


LOSSES = {
    "weighted_ce": lambda **kw: WeightedCrossEntropyLoss(COUNTS, "effective_number", beta=0.99, **kw),
    "focal": lambda **kw: FocalLoss(gamma=2.0, alpha=[0.1, 0.2, 0.3, 0.4], **kw),
    "focal_smoothed": lambda **kw: FocalLoss(gamma=0.5, label_smoothing=0.1, **kw),
    "logit_adjusted": lambda **kw: LogitAdjustedLoss(COUNTS, tau=1.5, **kw),
    "balanced_softmax": lambda **kw: BalancedSoftmaxLoss(COUNTS, label_smoothing=0.1, **kw),
    "ldam": lambda **kw: LDAMLoss(COUNTS, scale=30.0, **kw),
    "dice": lambda **kw: DiceLoss(alpha=0.5, **kw),
    "f1_weighted_ce": lambda **kw: F1WeightedCrossEntropyLoss(**kw),
    "focal_sigmoid": lambda **kw: FocalLoss(gamma=2.0, alpha=0.25, activation="sigmoid", **kw),
    "dice_sigmoid": lambda **kw: DiceLoss(activation="sigmoid", **kw),
    "dice_sigmoid_adjusted": lambda **kw: DiceLoss(alpha=1.0, activation="sigmoid", **kw),
    "f1_weighted_ce_sigmoid": lambda **kw: F1WeightedCrossEntropyLoss(activation="sigmoid", **kw),
    "multilabel_ce": lambda **kw: MultiLabelCategoricalCrossEntropyLoss(**kw),
}


def _batch(seed: int, rows: int = 5):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, generator=generator), torch.randint(0, 4, (rows,), generator=generator)


@settings(max_examples=NUM_ITEMS_CASES, **FAST)
@given(name=st.sampled_from(sorted(LOSSES)), value=junk_values(), as_tensor=st.booleans())
def test_num_items_in_batch_rejects_junk_by_name_or_normalises(name, value, as_tensor):
    loss = LOSSES[name]()
    logits, labels = _batch(0)
    targets = _targets(loss, labels, 4)
    if as_tensor:
        try:
            value = torch.tensor(value)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            return  # not representable as a tensor: the plain value is drawn as well
    try:
        got = loss(logits, targets, num_items_in_batch=value)
    except (TypeError, ValueError) as error:
        assert_names_argument(error, "num_items_in_batch")
        return
    count = float(targets.numel() if value is None else value)  # None: the mean over the targets
    assert count >= 1 and math.isfinite(count)
    total = loss(logits, targets, num_items_in_batch=1).double()  # the sum of the per-target losses
    # the multi-label loss counts rows: entries / C, at least 1 (hfplug.losses.reduce_loss)
    expected = total / (max(count / 4, 1.0) if name == "multilabel_ce" else count)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(float(expected), rel=1e-5, abs=1e-30)


non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=NON_FINITE_CASES, **FAST)
@given(
    name=st.sampled_from(sorted(LOSSES)),
    seed=st.integers(0, 1000),
    spots=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), non_finite), min_size=1, max_size=4),
)
def test_non_finite_logits_raise_or_propagate_when_unchecked(name, seed, spots):
    logits, labels = _batch(seed)
    for row, column, bad in spots:
        logits[row, column] = bad
    loss = LOSSES[name]()
    targets = _targets(loss, labels, 4)
    with pytest.raises(ValueError, match=r"logits are NaN or inf") as caught:
        loss(logits, targets)
    assert_names_argument(caught.value, "logits")
    unchecked = LOSSES[name](check_finite=False)(logits.clone().requires_grad_(True), targets)
    if logits.isnan().any():
        assert math.isnan(unchecked.item()), "a NaN logit of a counted target must not give a finite loss"


F32_MAX = float(torch.finfo(torch.float32).max)
magnitudes = st.floats(-F32_MAX, F32_MAX, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=MAGNITUDE_CASES, **FAST)
@given(
    name=st.sampled_from(sorted(LOSSES)),
    values=st.lists(magnitudes, min_size=20, max_size=20),
    seed=st.integers(0, 1000),
)
def test_finite_logits_of_any_magnitude_give_finite_loss_and_gradient_or_a_clean_error(name, values, seed):
    logits = torch.tensor(values, dtype=torch.float32).reshape(5, 4).requires_grad_(True)
    _, labels = _batch(seed)
    loss = LOSSES[name]()
    try:
        value = loss(logits, _targets(loss, labels, 4))
    except ValueError as error:
        assert_names_argument(error, "logits")
        return
    value.backward()
    assert math.isfinite(value.item()), "finite logits gave a non-finite loss"
    assert torch.isfinite(logits.grad).all(), "finite logits gave a non-finite gradient"


@settings(max_examples=POST_HOC_CASES, **FAST)
@given(
    values=st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
        min_size=12,
        max_size=12,
    ),
    tau=st.floats(0.0, 10.0),
    numpy=st.booleans(),
)
def test_post_hoc_adjustment_of_any_logits(values, tau, numpy):
    logits = torch.tensor(values, dtype=torch.float32).reshape(4, 3)
    priors = [0.6, 0.3, 0.1]
    expected = logits - tau * torch.log(torch.tensor(priors, dtype=torch.float64)).float()
    given_logits = logits.numpy() if numpy else logits
    if torch.isfinite(logits).all():
        got = post_hoc_logit_adjust(given_logits, priors, tau)
        torch.testing.assert_close(torch.as_tensor(got), expected)
    else:
        with pytest.raises(ValueError, match="NaN or inf") as caught:
            post_hoc_logit_adjust(given_logits, priors, tau)
        assert_names_argument(caught.value, "logits")
    got = PostHocLogitAdjuster(priors, tau, check_finite=False)(given_logits)
    assert isinstance(got, np.ndarray) == numpy
    torch.testing.assert_close(torch.as_tensor(got), expected, equal_nan=True)


SOFTMAX = [name for name in sorted(LOSSES) if "sigmoid" not in name and name != "multilabel_ce"]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("name", SOFTMAX)
def test_narrow_integer_labels_give_the_int64_result(name, dtype):
    """Labels of any integer dtype index classes, as in F.cross_entropy (a uint8 index used to act as a
    boolean mask: IndexError or a torch-internal gather error)."""
    logits, labels = _batch(3, rows=6)
    expected_logits, got_logits = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    expected = LOSSES[name]()(expected_logits, labels)
    got = LOSSES[name]()(got_logits, labels.to(dtype))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    expected.backward()
    got.backward()
    torch.testing.assert_close(got_logits.grad, expected_logits.grad, rtol=0, atol=0)
