"""Class counts, priors, weights and the from_dataset constructors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value
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

import hfplug
from hfplug.registry import KNOWN_PROVIDERS


def test_counts_from_dataset_with_class_label_pads_unseen_classes():
    ds = Dataset.from_dict(
        {"text": ["a"] * 6, "label": [0, 2, 2, 1, 2, 0]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c", "d"])}),
    )
    assert class_counts(ds).tolist() == [2, 1, 3, 0]
    with pytest.raises(ValueError, match="'labels' is not a column"):
        class_counts(ds, "labels")


def test_counts_from_token_labels_skip_ignore_index():
    ds = Dataset.from_dict(
        {"labels": [[0, 1, -100], [2, -100], [1]]},
        features=Features({"labels": List(ClassLabel(num_classes=3))}),
    )
    assert class_counts(ds, "labels").tolist() == [1, 2, 1]
    nested = [torch.tensor([0, 1, -100]), np.array([2, 2]), [1, [0]], 3]
    assert class_counts(nested).tolist() == [2, 2, 2, 1]
    assert class_counts(ds.to_iterable_dataset(), "labels", num_classes=4).tolist() == [1, 2, 1, 0]
    examples = [{"labels": [0, 1, -100]}, {"labels": [2, -100]}]  # e.g. a torch Dataset of dicts
    assert class_counts(examples, "labels").tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="'label' is not a key"):
        class_counts(examples)


def test_counts_from_mapping_multi_label_and_errors():
    assert class_counts({0: 5, 2: 1}).tolist() == [5, 0, 1]
    assert class_counts([[1, 0, 1], [0, 0, 1], [1, -100, 0]], multi_label=True).tolist() == [2, 0, 2]
    with pytest.raises(ValueError, match="num_classes=2"):
        class_counts([0, 1, 2], num_classes=2)
    with pytest.raises(ValueError, match="got -4"):
        class_counts([0, -4])
    with pytest.raises(TypeError, match="integers"):
        class_counts([0, 1.5])
    with pytest.raises(ValueError, match="no labels"):
        class_counts([-100, -100])


def test_priors_and_weights_match_their_definitions():
    counts = torch.tensor([100.0, 10.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(class_priors(counts), counts / 111)
    for weighting, raw in {
        "inverse": 1 / counts,
        "sqrt_inverse": 1 / counts.sqrt(),
        "effective_number": (1 - 0.99) / (1 - 0.99**counts),
    }.items():
        w = class_weights(counts, weighting, beta=0.99)
        torch.testing.assert_close(w, raw / raw.sum() * 3)
    torch.testing.assert_close(
        class_weights(counts, "effective_number", beta=0.0), torch.ones(3, dtype=torch.float64)
    )


def test_from_dataset_constructors():
    labels = [0] * 30 + [1] * 10 + [2] * 2
    ds = Dataset.from_dict({"label": labels})
    la = LogitAdjustedLoss.from_dataset(ds, tau=1.0)
    torch.testing.assert_close(la.log_priors, torch.tensor([30.0, 10.0, 2.0]).div(42).log())
    wce = WeightedCrossEntropyLoss.from_dataset(labels, weighting="sqrt_inverse")
    torch.testing.assert_close(wce.class_weight, class_weights([30, 10, 2], "sqrt_inverse").float())
    focal = FocalLoss.from_dataset(ds, gamma=1.0, weighting="inverse")
    torch.testing.assert_close(focal.alpha, class_weights([30, 10, 2]).float())
    ldam = LDAMLoss.from_dataset({0: 30, 1: 10, 2: 2}, scale=1.0)
    assert ldam.margins.argmax().item() == 2 and ldam.margins.max().item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'softmax' only"):
        FocalLoss.from_dataset(ds, activation="sigmoid")


def test_post_hoc_adjustment_on_tensors_arrays_and_trainer_tuples():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 0.1, -0.2]])
    priors = [0.7, 0.2, 0.1]
    expected = logits - torch.log(torch.tensor(priors))
    torch.testing.assert_close(post_hoc_logit_adjust(logits, priors), expected)
    adjuster = PostHocLogitAdjuster([70, 20, 10], tau=1.0)
    assert np.allclose(adjuster(logits.numpy()), expected.numpy())
    assert adjuster.predict(logits).tolist() == expected.argmax(-1).tolist()
    adjusted, hidden = adjuster((logits, "hidden"))
    assert hidden == "hidden"
    torch.testing.assert_close(adjusted, expected)
    torch.testing.assert_close(post_hoc_logit_adjust(logits, priors, tau=0.0), logits)
    with pytest.raises(ValueError, match="tau"):
        PostHocLogitAdjuster(priors, tau=-1)
    with pytest.raises(ValueError, match="C = 3"):
        adjuster(torch.zeros(2, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_post_hoc_adjustment_of_non_finite_logits_is_an_error_or_propagates_when_asked(bad):
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 0.1, -0.2], [1.0, -1.0, 0.3]])
    logits[1, 2] = bad
    priors = [0.7, 0.2, 0.1]
    adjuster = PostHocLogitAdjuster(priors)
    for call in (
        lambda: post_hoc_logit_adjust(logits, priors),
        lambda: post_hoc_logit_adjust(logits.numpy(), priors),
        lambda: adjuster(logits),
        lambda: adjuster((logits, "hidden")),
        lambda: adjuster.predict(logits),
    ):
        with pytest.raises(ValueError, match=r"logits: 1 of 9 values are NaN or inf \(first at \[1, 2\]\)"):
            call()
    # check_finite=False: element-wise, the non-finite entry stays what it was, the others are adjusted
    expected = logits - torch.log(torch.tensor(priors))
    got = post_hoc_logit_adjust(logits, priors, check_finite=False)
    torch.testing.assert_close(got, expected, equal_nan=True)
    assert PostHocLogitAdjuster(priors, check_finite=False)(logits)[1, 2].isnan() == math.isnan(bad)


def test_post_hoc_adjustment_that_overflows_the_logits_dtype_is_an_error():
    logits = torch.tensor([[0.0, 65504.0]], dtype=torch.float16)  # float16's largest value
    with pytest.raises(ValueError, match=r"leaves the range of torch.float16 at \[0, 1\]"):
        post_hoc_logit_adjust(logits, [1e8, 1.0])  # + 18.4 rounds to inf
    with pytest.raises(ValueError, match="tau"):
        PostHocLogitAdjuster([0.5, 0.5], tau=1e300)  # tau * log(0.5) is -inf


def test_registry_names_and_drw_callback_switch():
    from transformers import TrainerState

    names = {
        "weighted_ce": ({"class_counts": [3, 1]}, WeightedCrossEntropyLoss),
        "focal": ({"gamma": 1.0}, FocalLoss),
        "logit_adjusted": ({"priors": [3, 1]}, LogitAdjustedLoss),
        "ldam": ({"class_counts": [3, 1]}, LDAMLoss),
    }
    for name, (kwargs, cls) in names.items():
        assert type(hfplug.get_loss(name, **kwargs)) is cls
    assert type(hfplug.get_loss("balanced_softmax", priors=[3, 1])) is BalancedSoftmaxLoss
    for name, cls in (
        ("dice", DiceLoss),
        ("f1_weighted_ce", F1WeightedCrossEntropyLoss),
        ("multilabel_ce", MultiLabelCategoricalCrossEntropyLoss),
    ):
        assert type(hfplug.get_loss(name)) is cls
    (ours,) = [p for p in hfplug.list_plugins() if p["name"] == "hfplug-imbalance"]
    assert ours["registered"] == {"callback": ["ldam_drw"], "loss": sorted(KNOWN_PROVIDERS["loss"])}
    loss = LDAMLoss([3, 1])
    callback = hfplug.get_callback("ldam_drw", loss=loss, start_fraction=0.5)
    assert isinstance(callback, LDAMDRWCallback)
    state = TrainerState(max_steps=10)
    for step, expected in ((0, False), (4, False), (5, True), (9, True)):
        state.global_step = step
        callback.on_step_begin(None, state, None)
        assert loss.reweight is expected
    by_epoch = LDAMDRWCallback(loss, start_epoch=2)
    state.epoch = 1.5
    by_epoch.on_step_begin(None, state, None)
    assert loss.reweight is False
    state.epoch = 2.0
    by_epoch.on_step_begin(None, state, None)
    assert loss.reweight is True
    with pytest.raises(TypeError, match="LDAMLoss"):
        LDAMDRWCallback(FocalLoss())
    with pytest.raises(ValueError, match="at most one"):
        LDAMDRWCallback(loss, start_epoch=1, start_fraction=0.5)


def test_effective_number_counts_are_exact_for_large_counts():
    w = class_weights([1e6, 1.0], "effective_number", beta=0.9999)
    raw = np.array([(1 - 0.9999) / (1 - 0.9999**1e6), 1.0])
    assert np.allclose(w.numpy(), raw / raw.sum() * 2)
    assert math.isclose(float(w.sum()), 2.0)
