"""hfplug.losses: normalisation and the loss-finisher protocol."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from hfplug.losses import (
    TrainerLoss,
    attach_loss_finisher,
    check_num_items,
    reduce_loss,
    trainer_loss,
)


class CrossEntropy(TrainerLoss):
    def loss(self, logits, labels, num_items_in_batch=None):
        per_item = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
        return reduce_loss(per_item, labels != -100, num_items_in_batch)


def test_reduce_loss_sum_over_num_items_or_mean_over_valid():
    per_item = torch.tensor([1.0, 2.0, 3.0, 4.0])
    valid = torch.tensor([True, False, True, True])
    assert reduce_loss(per_item, valid).item() == pytest.approx((1 + 3 + 4) / 3)
    assert reduce_loss(per_item, valid, num_items_in_batch=16).item() == pytest.approx((1 + 3 + 4) / 16)
    assert reduce_loss(per_item, valid, num_items_in_batch=torch.tensor(8)).item() == pytest.approx(8 / 8)


def test_reduce_loss_empty_batch_is_zero_with_zero_gradient():
    per_item = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = reduce_loss(per_item, torch.tensor([False, False]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(per_item.grad, torch.zeros(2))


def test_trainer_loss_matches_cross_entropy_on_tensors_and_outputs():
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 2, -100, 1, 1, 0])
    expected_mean = F.cross_entropy(logits, labels, ignore_index=-100)
    expected_sum = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    loss = CrossEntropy()
    torch.testing.assert_close(loss(logits, labels), expected_mean)
    outputs = SequenceClassifierOutput(logits=logits)
    torch.testing.assert_close(loss(outputs, labels, num_items_in_batch=10), expected_sum / 10)


def test_finisher_receives_the_loss_function_and_is_consumed_once():
    seen = []

    def finisher(loss_fn, outputs, labels, num_items_in_batch):
        seen.append(num_items_in_batch)
        return 2 * loss_fn(outputs, labels, num_items_in_batch)

    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 0])
    outputs = SequenceClassifierOutput(logits=logits)
    plain = F.cross_entropy(logits, labels, reduction="sum") / 4

    attach_loss_finisher(outputs, finisher)
    torch.testing.assert_close(CrossEntropy()(outputs, labels, 4), 2 * plain)
    torch.testing.assert_close(CrossEntropy()(outputs, labels, 4), plain)  # consumed
    assert seen == [4]

    def user_loss(outputs, labels, num_items_in_batch=None):
        return F.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch

    wrapped = trainer_loss(user_loss)
    assert wrapped.__name__ == "user_loss"
    attach_loss_finisher(outputs, finisher)
    torch.testing.assert_close(wrapped(outputs, labels, num_items_in_batch=4), 2 * plain)
    torch.testing.assert_close(wrapped(outputs, labels, num_items_in_batch=4), plain)


def test_reduce_loss_without_mask_counts_every_item():
    per_item = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert reduce_loss(per_item).item() == pytest.approx(3.0)
    assert reduce_loss(per_item, num_items_in_batch=6).item() == pytest.approx(2.0)


def test_finisher_survives_outputs_rebuilt_by_a_wrapper():
    """DDP(find_unused_parameters=True) hands the loss a rebuilt outputs object without the attribute."""
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 0])
    plain = F.cross_entropy(logits, labels, reduction="sum") / 4
    attach_loss_finisher(SequenceClassifierOutput(logits=logits), lambda fn, o, y, n: 3 * fn(o, y, n))
    rebuilt = SequenceClassifierOutput(logits=logits)
    torch.testing.assert_close(CrossEntropy()(rebuilt, labels, 4), 3 * plain)
    torch.testing.assert_close(CrossEntropy()(rebuilt, labels, 4), plain)  # consumed once


@pytest.mark.parametrize(
    ("count", "message"),
    [
        (-4, r"must be a finite number >= 0, got -4"),
        (-0.5, r"must be a finite number >= 0, got -0.5"),
        (float("nan"), r"must be a finite number >= 0, got nan"),
        (float("inf"), r"must be a finite number >= 0, got inf"),
        (torch.tensor(-4), r"must be a finite number >= 0, got -4"),
        (torch.tensor([3.0, 4.0]), r"must be one number \(a one-element tensor\), got shape \(2,\)"),
    ],
)
def test_reduce_loss_rejects_a_num_items_in_batch_out_of_range(count, message):
    with pytest.raises(ValueError, match=rf"num_items_in_batch {message}"):
        reduce_loss(torch.tensor([1.0, 2.0]), num_items_in_batch=count)


@pytest.mark.parametrize("count", [True, "4", [4], torch.tensor(True), torch.tensor(2 + 0j)])
def test_reduce_loss_rejects_a_num_items_in_batch_that_is_not_a_number(count):
    with pytest.raises(TypeError, match=r"num_items_in_batch must be a (finite number|count)"):
        reduce_loss(torch.tensor([1.0, 2.0]), num_items_in_batch=count)


def test_check_num_items_accepts_zero_or_a_count_of_at_least_one():
    for count in (None, 0, 1, 2.0, torch.tensor(7), torch.tensor([3])):
        check_num_items(count)
    for count in (0.5, torch.tensor(0.25)):
        with pytest.raises(ValueError, match=r"num_items_in_batch must be 0 or a count >= 1, got"):
            check_num_items(count)
    with pytest.raises(ValueError, match=r"num_items_in_batch must be a finite number >= 0, got -1"):
        check_num_items(-1)


def test_reduce_loss_takes_the_trainers_one_element_count():
    """Under DataParallel the Trainer hands each replica a (1,)-shaped count; the loss stays a scalar."""
    loss = reduce_loss(torch.tensor([1.0, 2.0, 3.0]), num_items_in_batch=torch.tensor([2]))
    assert loss.shape == () and loss.item() == 3.0


def test_reduce_loss_zero_items_in_the_step_gives_zero_not_nan():
    per_item = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = reduce_loss(per_item, torch.tensor([False, False]), num_items_in_batch=torch.tensor(0))
    loss.backward()
    assert loss.item() == 0.0 and per_item.grad.tolist() == [0.0, 0.0]


def test_attaching_a_finisher_leaves_the_outputs_as_the_model_returned_them():
    """The finisher is held in the context only: the outputs gain no attribute and stay picklable."""
    logits = torch.randn(4, 3)
    outputs = SequenceClassifierOutput(logits=logits)
    attach_loss_finisher(outputs, lambda fn, o, y, n: 3 * fn(o, y, n))
    assert vars(outputs) == vars(SequenceClassifierOutput(logits=logits))
    torch.testing.assert_close(pickle.loads(pickle.dumps(outputs)).logits, logits)
    labels = torch.tensor([0, 1, 2, 0])
    plain = F.cross_entropy(logits, labels, reduction="sum") / 4
    torch.testing.assert_close(CrossEntropy()(outputs, labels, 4), 3 * plain)  # still consumed by the loss
