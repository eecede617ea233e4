"""The evaluate modules shipped in hfplug.metrics, against direct formulas written here."""

from __future__ import annotations

import math
import random

import evaluate
import numpy as np
import pytest
from transformers import EvalPrediction

import hfplug.metrics
from hfplug.metrics import ngrams


def direct_classification(pred, ref, n_classes):
    recalls, f1s = [], []
    for c in range(n_classes):
        tp = sum(p == c and r == c for p, r in zip(pred, ref, strict=True))
        fn = sum(p != c and r == c for p, r in zip(pred, ref, strict=True))
        fp = sum(p == c and r != c for p, r in zip(pred, ref, strict=True))
        if tp + fn:
            recalls.append(tp / (tp + fn))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    accuracy = sum(p == r for p, r in zip(pred, ref, strict=True)) / len(ref)
    return accuracy, sum(recalls) / len(recalls), sum(f1s) / len(f1s), recalls


@pytest.fixture(scope="module")
def classification():
    return evaluate.load(hfplug.metrics.path("classification"))


@pytest.fixture(scope="module")
def repetition():
    return evaluate.load(hfplug.metrics.path("repetition"))


@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_direct_formulas(classification, seed):
    rng = random.Random(seed)
    ref = [rng.choice([0, 0, 0, 0, 1, 2]) for _ in range(200)]
    pred = [r if rng.random() < 0.7 else rng.randrange(3) for r in ref]
    accuracy, balanced, macro_f1, recalls = direct_classification(pred, ref, 3)
    out = classification.compute(predictions=pred, references=ref, class_counts=[500, 40, 30])
    assert out["accuracy"] == pytest.approx(accuracy)
    assert out["balanced_accuracy"] == pytest.approx(balanced)
    assert out["macro_f1"] == pytest.approx(macro_f1)
    # counts [500, 40, 30]: median 40 -> head {0, 1}, tail {2}
    assert out["head_recall"] == pytest.approx((recalls[0] + recalls[1]) / 2)
    assert out["tail_recall"] == pytest.approx(recalls[2])


def test_head_tail_by_median_count(classification):
    ref = [0, 0, 0, 0, 1, 1, 2, 2]
    pred = [0, 0, 0, 1, 1, 0, 2, 0]
    # recalls: class 0 3/4, class 1 1/2, class 2 1/2; counts [500, 40, 30] -> head {0, 1}, tail {2}
    out = classification.compute(predictions=pred, references=ref, class_counts=[500, 40, 30])
    assert out["head_recall"] == pytest.approx((0.75 + 0.5) / 2)
    assert out["tail_recall"] == pytest.approx(0.5)
    out = classification.compute(predictions=pred, references=ref, head_classes=[0], tail_classes=[1, 2])
    assert out["head_recall"] == pytest.approx(0.75)
    assert out["tail_recall"] == pytest.approx(0.5)
    assert "head_recall" not in classification.compute(predictions=pred, references=ref)


def test_classification_bad_split_is_an_error(classification):
    with pytest.raises(ValueError, match="no tail"):
        classification.compute(predictions=[0, 1], references=[0, 1], class_counts=[5, 5])
    with pytest.raises(ValueError, match="together"):
        classification.compute(predictions=[0, 1], references=[0, 1], head_classes=[0])


def test_compute_metrics_for_trainer():
    logits = np.array([[2.0, 0.1], [0.3, 0.2], [0.0, 1.0], [1.0, 3.0]])
    labels = np.array([0, 1, 1, 1])
    out = hfplug.metrics.classification_metrics(class_counts=[90, 10])(EvalPrediction(logits, labels))
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert out["head_recall"] == 1.0 and out["tail_recall"] == pytest.approx(2 / 3)


def test_repetition_hand_worked(repetition):
    rows = [[1, 2, 1, 2, 1, 2, 1, 2], [3, 4, 5, 0, 9, 9]]
    out = repetition.compute(predictions=rows, eos_token_id=0, max_length=8)
    # row 0: 5 four-grams, 2 unique, no eos in 8 tokens; row 1 ends at eos -> [3, 4, 5]
    assert out == {"non_termination": 0.5, "rep_4": 0.6, "seq_rep_4": 0.6, "distinct_2": 4 / 9}
    out = repetition.compute(predictions=rows, n=2, distinct=1)
    # no eos given: row 1 kept whole; bigrams: row0 7 (2 unique), row1 5 (5 unique)
    assert out["rep_2"] == pytest.approx(1 - 7 / 12)
    assert out["seq_rep_2"] == pytest.approx(((1 - 2 / 7) + 0) / 2)
    assert out["distinct_1"] == pytest.approx(7 / 14)  # ids {0, 1, 2, 3, 4, 5, 9} of 14 tokens


def test_non_termination_counts_padding_and_multiple_eos():
    rows = [[5, 6, 7, 8], [5, 6, 7, 2], [5, 6, 1, 1]]
    assert ngrams.non_termination_ratio(rows, eos_token_id=[1, 2], max_length=4) == pytest.approx(1 / 3)
    assert ngrams.non_termination_ratio(rows, eos_token_id=9, max_length=4, pad_token_id=1) == pytest.approx(
        2 / 3
    )
    assert ngrams.non_termination_ratio(rows, eos_token_id=9, max_length=5) == 0.0


def test_empty_and_invalid_inputs():
    assert math.isnan(ngrams.rep_n([[1, 2]], 4))
    assert math.isnan(ngrams.distinct_n([], 2))
    with pytest.raises(ValueError, match="n must be"):
        ngrams.rep_n([[1, 2]], 0)
    with pytest.raises(ValueError, match="sequences is empty"):
        ngrams.non_termination_ratio([], 0, 4)
    with pytest.raises(ValueError, match="max_length"):
        ngrams.non_termination_ratio([[1]], 0, 0)
    with pytest.raises(ValueError, match="unknown hfplug metric module 'acc'"):
        hfplug.metrics.path("acc")


@pytest.mark.parametrize(
    ("eos", "error"),
    [
        (None, TypeError),
        ("2", TypeError),
        ([1.5], TypeError),
        (True, TypeError),
        ([[1]], TypeError),
        ([], ValueError),
        ([-1], ValueError),
    ],
)
def test_bad_eos_is_an_error_naming_it(eos, error):
    with pytest.raises(error, match="eos_token_id"):
        ngrams.non_termination_ratio([[1, 2]], eos, 2)


def test_eos_from_a_tensor():
    import torch

    assert ngrams.eos_set(torch.tensor([2, 5])) == {2, 5}
