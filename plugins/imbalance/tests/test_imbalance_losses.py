"""Losses against identities and independent formula implementations (float64 references in the tests)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hfplug_imbalance import (
    BalancedSoftmaxLoss,
    DiceLoss,
    F1WeightedCrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    MultiLabelCategoricalCrossEntropyLoss,
    WeightedCrossEntropyLoss,
)
from hypothesis import given, settings
from hypothesis import strategies as st

COUNTS = [50.0, 20.0, 8.0, 3.0]


def _batch(n=12, c=4, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).float()
    labels = torch.randint(0, c, (n,), generator=g)
    return logits, labels


def _grad(loss_fn, logits, *args, **kwargs):
    x = logits.clone().requires_grad_(True)
    value = loss_fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


SOFTMAX_LOSSES = {
    "weighted_ce": lambda: WeightedCrossEntropyLoss(COUNTS, "effective_number", beta=0.99),
    "focal": lambda: FocalLoss(gamma=2.0, alpha=[0.1, 0.2, 0.3, 0.4]),
    "focal_gamma_half": lambda: FocalLoss(gamma=0.5),
    "logit_adjusted": lambda: LogitAdjustedLoss(COUNTS, tau=1.5, label_smoothing=0.1),
    "balanced_softmax": lambda: BalancedSoftmaxLoss(COUNTS),
    "ldam": lambda: LDAMLoss(COUNTS, scale=5.0),
    "dice": lambda: DiceLoss(alpha=0.5),
    "f1_weighted_ce": lambda: F1WeightedCrossEntropyLoss(),
}
SIGMOID_LOSSES = {
    "focal_sigmoid": lambda: FocalLoss(gamma=0.5, alpha=0.25, activation="sigmoid"),
    "dice_sigmoid": lambda: DiceLoss(activation="sigmoid"),
    "f1_weighted_ce_sigmoid": lambda: F1WeightedCrossEntropyLoss(activation="sigmoid"),
    "multilabel_ce": lambda: MultiLabelCategoricalCrossEntropyLoss(),
}


# ---------------------------------------------------------------- identities (property-based)

logit_batches = st.tuples(st.integers(1, 16), st.integers(2, 7), st.integers(0, 10_000), st.floats(0.1, 20.0))


@settings(max_examples=15, deadline=None)
@given(logit_batches, st.floats(0.0, 0.5))
def test_identities_reduce_to_cross_entropy(shape, label_smoothing):
    n, c, seed, scale = shape
    logits, labels = _batch(n, c, seed, scale)
    expected = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    uniform = [7.0] * c
    for loss in (
        FocalLoss(gamma=0.0, label_smoothing=label_smoothing),
        FocalLoss(gamma=1e-9, label_smoothing=label_smoothing),  # the focusing code path, (1-p)**gamma ~ 1
        LogitAdjustedLoss([float(i + 1) for i in range(c)], tau=0.0, label_smoothing=label_smoothing),
        WeightedCrossEntropyLoss(uniform, "inverse", label_smoothing=label_smoothing),
        WeightedCrossEntropyLoss(uniform, "effective_number", beta=0.9, label_smoothing=label_smoothing),
        LogitAdjustedLoss(
            uniform, tau=2.0, label_smoothing=label_smoothing
        ),  # uniform prior shifts all logits
    ):
        torch.testing.assert_close(loss(logits, labels), expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(logit_batches)
def test_focal_with_scalar_alpha_is_scaled_cross_entropy(shape):
    n, c, seed, scale = shape
    logits, labels = _batch(n, c, seed, scale)
    torch.testing.assert_close(
        FocalLoss(gamma=0.0, alpha=0.5)(logits, labels),
        0.5 * F.cross_entropy(logits, labels),
        rtol=1e-5,
        atol=1e-6,
    )


def test_cross_entropy_gradient_is_smooth_accuracy_gradient_without_saturation():
    """Su (2020) §1: d(-Acc)/dz = p(1-p)-scaled; d(CE)/dz drops the factor p (positives) or 1-p (negatives)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(32, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(32, generator=g) < 0.3).double()
    zr = z.clone().requires_grad_(True)
    p = torch.sigmoid(zr)
    neg_smooth_acc = -((y * p).sum() + ((1 - y) * (1 - p)).sum()) / len(z)
    (acc_grad,) = torch.autograd.grad(neg_smooth_acc, zr)
    _, ce_grad = _grad(FocalLoss(gamma=0.0, activation="sigmoid"), z.float(), y.float())
    p = torch.sigmoid(z)
    unsaturated = torch.where(y == 1, acc_grad / p, acc_grad / (1 - p))
    torch.testing.assert_close(ce_grad.double(), unsaturated, rtol=1e-5, atol=1e-7)
    # softmax with two classes is the same binary problem on z1 - z0
    two = torch.stack([torch.zeros_like(z), z], -1).float()
    _, ce2_grad = _grad(WeightedCrossEntropyLoss([1.0, 1.0]), two, y.long())
    torch.testing.assert_close(ce2_grad[:, 1].double(), unsaturated, rtol=1e-5, atol=1e-7)


def test_f1_weighted_cross_entropy_gradient_matches_smooth_f1_gradient():
    """Su (2020) §2: grad(-log F1) = (1/TP) [(1-F1/2) grad(-log p) p on P, (F1/2) grad(-log(1-p)) (1-p) on N]."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(40, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(40, generator=g) < 0.25).double()
    zr = z.clone().requires_grad_(True)
    p = torch.sigmoid(zr)
    tp = (y * p).sum()
    f1 = 2 * tp / (y.sum() + p.sum())
    (f1_grad,) = torch.autograd.grad(-torch.log(f1), zr)
    value, grad = _grad(F1WeightedCrossEntropyLoss(activation="sigmoid"), z.float(), y.float())
    grad = grad.double() * len(z)  # undo the mean
    p, tp = torch.sigmoid(z), (y * torch.sigmoid(z)).sum()
    expected = torch.where(y == 1, grad * p, grad * (1 - p)) / tp
    torch.testing.assert_close(expected, f1_grad, rtol=1e-4, atol=1e-7)
    f1 = float(2 * tp / (y.sum() + p.sum()))
    direct = torch.where(y == 1, (1 - f1 / 2) * -torch.log(p), (f1 / 2) * -torch.log(1 - p)).mean()
    torch.testing.assert_close(value.double(), direct, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- independent references


def test_weighted_ce_matches_torch_with_sum_over_count_normalisation():
    logits, labels = _batch(30, 4, seed=3)
    for weighting in ("inverse", "sqrt_inverse", "effective_number"):
        loss = WeightedCrossEntropyLoss(COUNTS, weighting, beta=0.9, label_smoothing=0.2)
        n = torch.tensor(COUNTS, dtype=torch.float64)
        raw = {"inverse": 1 / n, "sqrt_inverse": n**-0.5, "effective_number": (1 - 0.9) / (1 - 0.9**n)}[
            weighting
        ]
        w = raw * 4 / raw.sum()
        logp = torch.log_softmax(logits.double(), -1)
        q = 0.8 * F.one_hot(labels, 4).double() + 0.2 / 4
        expected = (-(q * w * logp).sum(-1)).mean()  # PyTorch's weighted label smoothing, summed / N
        torch.testing.assert_close(loss(logits, labels).double(), expected, rtol=1e-5, atol=1e-6)


def test_softmax_focal_matches_formula():
    logits, labels = _batch(25, 4, seed=4, scale=4.0)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for gamma in (0.3, 1.0, 2.0, 5.0):
        p = torch.softmax(logits.double(), -1)[torch.arange(25), labels]
        expected = (-alpha[labels] * (1 - p) ** gamma * torch.log(p)).mean()
        got = FocalLoss(gamma=gamma, alpha=alpha.tolist())(logits, labels)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def _torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss (pytorch/vision torchvision/ops/focal_loss.py), reduction="mean".

    Written out here because torchvision does not import beside this torch build.
    """
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss.mean()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 1.0), (0.75, 3.0)])
def test_sigmoid_focal_matches_torchvision(alpha, gamma):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(16, 6, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(16, 6, generator=g) < 0.3).double()
    ref_value, ref_grad = _grad(lambda x: _torchvision_sigmoid_focal_loss(x, targets, alpha, gamma), logits)
    ours = FocalLoss(gamma=gamma, alpha=None if alpha < 0 else alpha, activation="sigmoid")
    value, grad = _grad(ours, logits.float(), targets.float())
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)
    # per-class alpha broadcast over the last dimension
    per_class = torch.linspace(0.1, 0.9, 6)
    expected = (
        sum(
            _torchvision_sigmoid_focal_loss(logits[:, j], targets[:, j], float(per_class[j]), gamma)
            for j in range(6)
        )
        / 6
    )
    got = FocalLoss(gamma=gamma, alpha=per_class, activation="sigmoid")(logits.float(), targets.float())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [3.0, 200.0])  # |logits| below / beyond 80: sigmoid-log / softplus paths
def test_sigmoid_focal_soft_and_hard_targets_match_torchvision(scale):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(16, 6, generator=g, dtype=torch.float64) * scale
    hard = (torch.rand(16, 6, generator=g) < 0.3).double()
    soft = hard.clone()
    soft[3, 2] = 0.7  # one soft target sends the whole batch down the general path
    for targets in (hard, soft):
        ref_value, ref_grad = _grad(
            lambda x, t=targets: _torchvision_sigmoid_focal_loss(x, t, 0.25, 2.0), logits
        )
        value, grad = _grad(FocalLoss(alpha=0.25, activation="sigmoid"), logits.float(), targets.float())
        torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_logit_adjusted_matches_menon_pairwise_form():
    """Menon et al. (2021) eq. 11: log[1 + sum_{y' != y} (pi_y'/pi_y)^tau exp(f_y' - f_y)]."""
    logits, labels = _batch(20, 4, seed=6)
    pi = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    for tau in (0.5, 1.0, 2.0):
        f = logits.double()
        total = 0.0
        for i, y in enumerate(labels.tolist()):
            s = sum((pi[j] / pi[y]) ** tau * math.exp(f[i, j] - f[i, y]) for j in range(4) if j != y)
            total += math.log1p(float(s))
        got = LogitAdjustedLoss(COUNTS, tau=tau)(logits, labels)
        assert got.item() == pytest.approx(total / len(labels), rel=1e-5)


def test_balanced_softmax_matches_formula():
    logits, labels = _batch(20, 4, seed=7)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    e = n * torch.exp(logits.double())
    expected = -torch.log(e[torch.arange(20), labels] / e.sum(-1)).mean()
    assert BalancedSoftmaxLoss(COUNTS)(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def _ldam_reference(x, target, cls_num_list, max_m, s, weight=None):
    """kaidic/LDAM-DRW losses.py LDAMLoss.forward, on CPU, with sum reduction."""
    m_list = 1.0 / torch.sqrt(torch.sqrt(torch.tensor(cls_num_list, dtype=torch.float64)))
    m_list = m_list * (max_m / torch.max(m_list))
    index = torch.zeros_like(x, dtype=torch.uint8)
    index.scatter_(1, target.data.view(-1, 1), 1)
    batch_m = torch.matmul(m_list[None, :], index.double().transpose(0, 1)).view((-1, 1))
    x_m = x - batch_m
    output = torch.where(index.bool(), x_m, x)
    return F.cross_entropy(s * output, target, weight=weight, reduction="sum")


def test_ldam_and_drw_match_reference_implementation():
    logits, labels = _batch(24, 4, seed=8, scale=1.0)
    loss = LDAMLoss(COUNTS, max_margin=0.5, scale=30.0, drw_beta=0.9999)
    expected = _ldam_reference(logits.double(), labels, COUNTS, 0.5, 30.0) / 24
    torch.testing.assert_close(loss(logits, labels).double(), expected, rtol=1e-5, atol=1e-6)
    # DRW weights as in cifar_train.py: (1 - beta) / (1 - beta^n), normalised to sum C
    beta = 0.9999
    n = torch.tensor(COUNTS, dtype=torch.float64)
    w = (1 - beta) / (1 - beta**n)
    w = w / w.sum() * 4
    loss.reweight = True
    expected = _ldam_reference(logits.double(), labels, COUNTS, 0.5, 30.0, weight=w) / 24
    torch.testing.assert_close(loss(logits, labels).double(), expected, rtol=1e-5, atol=1e-6)


def test_dice_matches_formula():
    logits, labels = _batch(10, 3, seed=9)
    for alpha, smooth in ((0.0, 1.0), (1.0, 1.0), (0.5, 0.1)):
        p = torch.softmax(logits.double(), -1)
        total = 0.0
        for i in range(10):
            for c in range(3):
                q = float(labels[i] == c)
                pt = (1 - p[i, c]) ** alpha * p[i, c]
                total += float(1 - (2 * pt * q + smooth) / (pt + q + smooth))
        assert DiceLoss(alpha, smooth)(logits, labels).item() == pytest.approx(total / 10, rel=1e-5)


def test_multiclass_f1_weighted_ce_matches_formula():
    logits, labels = _batch(16, 3, seed=10)
    p = torch.softmax(logits.double(), -1)
    q = F.one_hot(labels, 3).double()
    f1 = 2 * (p * q).sum(0) / (q.sum(0) + p.sum(0))
    per = (q * (1 - f1 / 2) * -torch.log(p) + (1 - q) * (f1 / 2) * -torch.log(1 - p)).sum(-1)
    got = F1WeightedCrossEntropyLoss()(logits, labels)
    assert got.item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_multilabel_ce_matches_formula_and_ignores_entries():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 5, generator=g) * 3
    targets = (torch.rand(6, 5, generator=g) < 0.4).long()
    targets[0, 1] = -100
    total = 0.0
    for i in range(6):
        s, t = logits[i].double(), targets[i]
        neg = sum(math.exp(s[j]) for j in range(5) if t[j] == 0)
        pos = sum(math.exp(-s[j]) for j in range(5) if t[j] == 1)
        total += math.log1p(neg) + math.log1p(pos)
    loss = MultiLabelCategoricalCrossEntropyLoss()
    assert loss(logits, targets).item() == pytest.approx(total / 6, rel=1e-5)
    # the Trainer counts label entries: 29 non-ignored entries -> 29 / 5 rows
    assert loss(logits, targets, num_items_in_batch=29).item() == pytest.approx(total / (29 / 5), rel=1e-5)


def test_focal_composes_with_label_smoothing():
    logits, labels = _batch(12, 4, seed=12)
    eps, gamma = 0.2, 2.0
    p = torch.softmax(logits.double(), -1)
    q = (1 - eps) * F.one_hot(labels, 4).double() + eps / 4
    expected = (q * (1 - p) ** gamma * -torch.log(p)).sum(-1).mean()
    got = FocalLoss(gamma=gamma, label_smoothing=eps)(logits, labels)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- shapes and normalisation

ALL_LOSSES = {**SOFTMAX_LOSSES, **SIGMOID_LOSSES}


def _targets(name, n=8, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name in SIGMOID_LOSSES:
        return (torch.rand(n, c, generator=g) < 0.4).float()
    return torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("name", sorted(set(ALL_LOSSES) - {"f1_weighted_ce", "f1_weighted_ce_sigmoid"}))
def test_micro_batches_add_up_to_the_full_batch(name):
    """sum over micro-batches of loss(part, num_items=total) == loss(full): what GA and DDP rely on."""
    loss = ALL_LOSSES[name]()
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(13)) * 2
    targets = _targets(name)
    targets[2] = -100
    total_items = int((targets != -100).sum())
    full = loss(logits, targets)
    if name == "multilabel_ce":
        full = loss(logits, targets, num_items_in_batch=total_items)
    parts = loss(logits[:5], targets[:5], num_items_in_batch=total_items) + loss(
        logits[5:], targets[5:], num_items_in_batch=total_items
    )
    torch.testing.assert_close(parts, full)


@pytest.mark.parametrize("name", sorted(SOFTMAX_LOSSES))
def test_token_level_with_ignored_positions(name):
    loss = SOFTMAX_LOSSES[name]()
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(3, 5, 4, generator=g)
    labels = torch.randint(0, 4, (3, 5), generator=g)
    labels[0, 3:] = -100
    labels[2, 1] = -100
    keep = labels != -100
    torch.testing.assert_close(loss(logits, labels), loss(logits[keep], labels[keep]))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_all_ignored_batch_is_zero_with_zero_gradient(name):
    loss = ALL_LOSSES[name]()
    logits = torch.randn(4, 4, requires_grad=True)
    targets = torch.full((4,) if name in SOFTMAX_LOSSES else (4, 4), -100)
    value = loss(logits, targets, num_items_in_batch=0 if name != "multilabel_ce" else None)
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_logits_give_finite_values_and_gradients(name, dtype):
    loss = ALL_LOSSES[name]()
    targets = _targets(name, n=6)
    logits = torch.full((6, 4), -1e4)
    # confidently right on some rows (p -> 1 exactly: the gamma < 1 NaN case), confidently wrong on others
    for i in range(6):
        if name in SOFTMAX_LOSSES:
            logits[i, (targets[i] + (i % 2)) % 4] = 1e4
        else:
            logits[i] = torch.where(targets[i] == 1, 1e4, -1e4) * (1 if i % 2 else -1)
    logits = logits.to(dtype).requires_grad_(True)
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_gamma_below_one_gradient_is_finite_and_matches_formula_when_not_saturated():
    logits, labels = _batch(10, 4, seed=15, scale=3.0)
    gamma = 0.3
    ref_value, ref_grad = _grad(
        lambda x: (
            -((1 - torch.softmax(x, -1)[torch.arange(10), labels]) ** gamma)
            * torch.log_softmax(x, -1)[torch.arange(10), labels]
        ).mean(),
        logits.double(),
    )
    value, grad = _grad(FocalLoss(gamma=gamma), logits, labels)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-6)


def test_trainer_call_convention_and_buffers_follow_logits():
    """``loss(outputs, labels, num_items_in_batch=...)`` with a model output; buffers move with .to()."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    logits, labels = _batch(6, 4, seed=16)
    loss = LogitAdjustedLoss(COUNTS).to(torch.float64)
    outputs = SequenceClassifierOutput(logits=logits)
    direct = loss(logits, labels, num_items_in_batch=10)
    assert loss(outputs, labels, num_items_in_batch=torch.tensor(10)).item() == pytest.approx(direct.item())
    assert direct.dtype == torch.float32
    assert "log_priors" in dict(loss.named_buffers())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FocalLoss(gamma=-0.5), "gamma"),
        (lambda: LogitAdjustedLoss(COUNTS, tau=-1.0), "tau"),
        (lambda: LogitAdjustedLoss([5.0, 0.0, 2.0]), "class 1 has count 0"),
        (lambda: BalancedSoftmaxLoss([5.0, -1.0]), r"\[1\].*negative"),
        (lambda: WeightedCrossEntropyLoss([3.0, 0.0]), "class 1 has count 0"),
        (lambda: WeightedCrossEntropyLoss([3.0, 1.0], "median"), "weighting must be one of"),
        (lambda: WeightedCrossEntropyLoss(), "exactly one of"),
        (lambda: LDAMLoss([3.0, 0.0, 1.0]), "class 1 has count 0"),
        (lambda: FocalLoss(activation="relu"), "activation must be one of"),
        (lambda: FocalLoss(alpha=1.5, activation="sigmoid"), r"alpha must be a finite number in \[0, 1\]"),
        (lambda: FocalLoss(label_smoothing=1.0), "label_smoothing"),
        (lambda: DiceLoss(smooth=0.0), r"smooth must be a finite number in \(0, "),
        (lambda: WeightedCrossEntropyLoss([1.0, 2.0], "effective_number", beta=1.0), "beta"),
    ],
)
def test_bad_construction_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_zero_count_is_accepted_with_documented_smoothing():
    loss = LogitAdjustedLoss([5.0, 0.0, 2.0], smoothing=1.0)
    torch.testing.assert_close(loss.log_priors.exp(), torch.tensor([6.0, 1.0, 3.0]) / 10)


def test_bad_calls_raise():
    logits, labels = _batch(4, 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\).*got label 7"):
        FocalLoss()(logits, torch.tensor([0, 1, 7, 2]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\).*got label -3"):
        FocalLoss()(logits, torch.tensor([0, 1, -3, 2]))
    with pytest.raises(ValueError, match="3 entries but the logits have 4 classes"):
        LogitAdjustedLoss([1.0, 2.0, 3.0])(logits, labels)
    with pytest.raises(ValueError, match="4 of 16 logits are NaN or inf"):
        FocalLoss()(logits.index_fill(0, torch.tensor([1]), float("nan")), labels)
    with pytest.raises(ValueError, match="softmax losses need logits"):
        FocalLoss()(logits, labels[:3])
    with pytest.raises(TypeError, match="integer class indices"):
        FocalLoss()(logits, labels.float())
    with pytest.raises(ValueError, match="sigmoid targets must be in"):
        FocalLoss(activation="sigmoid")(logits, torch.full((4, 4), 2.0))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*got 3"):
        MultiLabelCategoricalCrossEntropyLoss()(logits, torch.full((4, 4), 3))
    with pytest.raises(ValueError, match=r"multi-label targets must be 0, 1 or ignore_index=-100; got 0\.5"):
        MultiLabelCategoricalCrossEntropyLoss()(logits, torch.full((4, 4), 0.5))


ALL_LOSSES = {**SOFTMAX_LOSSES, **SIGMOID_LOSSES}


def _labels_for(name, logits, labels):
    return labels if name in SOFTMAX_LOSSES else F.one_hot(labels, logits.shape[-1]).float()


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
@pytest.mark.parametrize(
    "bad", [-4, -1, -0.5, float("nan"), float("inf"), torch.tensor(-4), torch.tensor([3, 4])]
)
def test_bad_num_items_in_batch_is_an_error_naming_it(name, bad):
    logits, labels = _batch(6, 4)
    with pytest.raises(ValueError, match=r"num_items_in_batch"):
        ALL_LOSSES[name]()(logits, _labels_for(name, logits, labels), num_items_in_batch=bad)
    with pytest.raises(TypeError, match=r"num_items_in_batch"):
        ALL_LOSSES[name]()(logits, _labels_for(name, logits, labels), num_items_in_batch="6")


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_num_items_in_batch_zero_means_no_target_in_the_step(name):
    logits, labels = _batch(6, 4)
    loss = ALL_LOSSES[name]()
    targets = _labels_for(name, logits, labels)
    ignored = torch.full_like(targets, -100)
    x = logits.clone().requires_grad_(True)
    value = loss(x, ignored, num_items_in_batch=0)  # the Trainer's count when every target is ignored
    value.backward()
    assert value.item() == 0.0 and torch.count_nonzero(x.grad) == 0
    with pytest.raises(ValueError, match=r"num_items_in_batch=0 .* valid target"):
        loss(logits, targets, num_items_in_batch=torch.tensor(0))


@pytest.mark.parametrize("name", ["focal_sigmoid", "dice_sigmoid", "f1_weighted_ce_sigmoid", "multilabel_ce"])
def test_sigmoid_losses_without_finiteness_check_do_not_warn(name):
    import warnings

    logits, labels = _batch(6, 4)
    loss = ALL_LOSSES[name]()
    loss.check_finite = False
    x = logits.clone().requires_grad_(True)
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch warns once per process otherwise: every case must see it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = loss(x, _labels_for(name, logits, labels))
    finally:
        torch.set_warn_always(always)
    checked = ALL_LOSSES[name]()(logits, _labels_for(name, logits, labels))
    assert value.item() == pytest.approx(checked.item(), rel=1e-6)


# ---------------------------------------------------------------- hand-written backward passes


def _plain_sigmoid_focal(x, y, gamma, alpha):
    """Autograd reference: alpha_t (1 - p_t)**gamma BCE, written out."""
    p = torch.sigmoid(x)
    bce = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))
    one_minus_pt = (p * (1 - y) + (1 - p) * y).clamp(min=1e-12)
    alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    return alpha_t * one_minus_pt**gamma * bce


def _plain_multilabel_ce(s, pos, valid):
    """Autograd reference: logsumexp over [group logits, 0] for the negatives and the (negated) positives."""
    zeros = torch.zeros_like(s[..., :1])
    neg = torch.cat([s.masked_fill(~(valid & ~pos), -math.inf), zeros], -1).logsumexp(-1)
    return neg + torch.cat([(-s).masked_fill(~pos, -math.inf), zeros], -1).logsumexp(-1)


def _plain_softmax_dice(z, y, alpha, smooth):
    """Autograd reference: sum over classes of 1 - (2 p~ q + s) / (p~ + q + s), p~ = p (1 - p)**alpha."""
    p = torch.softmax(z, -1)
    adjusted = p * (1 - p).clamp(min=1e-12) ** alpha
    q = F.one_hot(y, z.shape[-1]).to(z.dtype)
    return (1 - (2 * adjusted * q + smooth) / (adjusted + q + smooth)).sum(-1)


def _plain_softmax_f1_ce(z, y, valid):
    """Autograd reference: F1 / 2 per class from the valid rows (constant), then the weighted CE per row."""
    q = F.one_hot(y, z.shape[-1]).to(z.dtype)
    with torch.no_grad():
        p, w = torch.softmax(z, -1), valid.to(z.dtype)[:, None]
        half_f1 = (p * q * w).sum(0) / ((q * w).sum(0) + (p * w).sum(0))
    logp = torch.log_softmax(z, -1)
    return (q * (1 - half_f1) * -logp + (1 - q) * half_f1 * -torch.log1p(-logp.exp())).sum(-1)


class _Reusable(torch.autograd.Function):
    """Test-only autograd node for a kernel's ``value_and_grad`` whose backward is an out-of-place product, so that gradcheck
    can backpropagate one graph many times; it checks the hand-written ``compute(x) -> (loss, grad)``."""

    @staticmethod
    def forward(ctx, x, compute):
        loss, grad = compute(x)
        ctx.save_for_backward(grad)
        ctx.row = loss.dim() < x.dim()
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * (grad_output[..., None] if ctx.row else grad_output), None


def _gradcheck_case(case):
    """(ours, plain, x): the hand-written kernel pass and an autograd formula of the same per-item loss."""
    from hfplug_imbalance import _kernels as K

    g = torch.Generator().manual_seed(5)
    shape = (2, 3, 5) if case.endswith("3d") else (6, 5)
    x = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    hard = (torch.rand(shape, generator=g, dtype=torch.float64) < 0.4).double()
    labels = torch.randint(0, 5, shape[:1], generator=g)

    def apply(kernel):
        return lambda x: _Reusable.apply(x, kernel.value_and_grad)

    class_alpha = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    if case.startswith("focal"):  # focal_<path>_<gamma>_<alpha>
        _, path, gamma, alpha = case.split("_")
        gamma = float(gamma)
        alpha = {"none": None, "scalar": 0.25, "class": class_alpha}[alpha]
        if path == "hard":
            y = hard
            kernel = K.SigmoidFocal(y, gamma, alpha, scratch=torch.empty_like(x.detach()))
        else:
            y = torch.rand(shape, generator=g, dtype=torch.float64)  # soft targets
            tensor_alpha = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float64)
            kernel = K.SigmoidFocal(y, gamma, tensor_alpha)
        return apply(kernel), lambda x: _plain_sigmoid_focal(x, y, gamma, alpha), x
    if case.startswith("f1_weighted_bce"):
        half_f1 = torch.linspace(0.05, 0.45, 5, dtype=torch.float64)
        extent = 100.0 if case.endswith("softplus") else 0.0  # takes the softplus path / the sigmoid-log path
        return (
            apply(K.SigmoidF1CrossEntropy(hard, half_f1, extent)),
            lambda x: hard * (1 - half_f1) * F.softplus(-x) + (1 - hard) * half_f1 * F.softplus(x),
            x,
        )
    if case == "soft_dice":
        y = torch.rand(shape, generator=g, dtype=torch.float64)  # soft targets

        def plain(x):
            p = torch.sigmoid(x)
            return 1 - (2 * p * y + 0.5) / (p + y + 0.5)

        return apply(K.SigmoidSoftDice(y, 0.5)), plain, x
    if case.startswith("softmax_dice"):
        alpha = float(case.split("_")[-1])
        return (
            apply(K.SoftmaxDice(labels, alpha, 0.7)),
            lambda x: _plain_softmax_dice(x, labels, alpha, 0.7),
            x,
        )
    if case == "softmax_f1_ce":
        valid = torch.tensor([True, True, False, True, True, True])
        return (
            apply(K.SoftmaxF1CrossEntropy(labels, valid)),
            lambda x: _plain_softmax_f1_ce(x, labels, valid),
            x,
        )
    if case.startswith("cross_entropy"):
        offsets = torch.linspace(-2.0, 0.0, 5, dtype=torch.float64)
        weight = class_alpha if case.endswith("weighted") else None
        scale = 1.0 if case.endswith("plain") else 2.5
        w_y = 1.0 if weight is None else weight[labels]

        def adjust(v, y=None):
            return v if case.endswith("plain") else scale * v + offsets

        return (
            apply(K.SoftmaxCrossEntropy(labels, weight, scale, adjust)),
            lambda x: w_y * F.cross_entropy(adjust(x), labels, reduction="none"),
            x,
        )
    t = torch.rand(shape, generator=g)
    all_valid = case.endswith("all_valid")
    valid = torch.ones(shape, dtype=torch.bool) if all_valid else t < 0.9
    valid[0, ..., :] = all_valid  # else one all-ignored row (or sequence)
    pos = valid & (t < 0.4)  # as in the loss: ignored entries are neither positive nor negative
    extent = 100.0 if "shifted" in case else 0.0  # shifted by the group maxima / plain sums
    ours = apply(K.MultiLabelCrossEntropy(pos.double(), None if all_valid else valid, -100, extent))
    return ours, lambda x: _plain_multilabel_ce(x, pos, valid), x


@pytest.mark.parametrize(
    "case",
    [
        "focal_hard_2_scalar",
        "focal_hard_0.5_none",
        "focal_hard_1_class",
        "focal_hard_0_scalar",
        "focal_hard_3_none",
        "focal_soft_2_scalar",
        "focal_soft_0.5_none",
        "focal_soft_0_class",
        "multilabel",
        "multilabel_shifted",
        "multilabel_3d",
        "multilabel_all_valid",
        "multilabel_shifted_all_valid",
        "soft_dice",
        "f1_weighted_bce",
        "f1_weighted_bce_softplus",
        "softmax_dice_0",
        "softmax_dice_1",
        "softmax_dice_0.5",
        "softmax_dice_2.5",
        "softmax_f1_ce",
        "cross_entropy_plain",
        "cross_entropy_adjusted",
        "cross_entropy_adjusted_weighted",
    ],
)
def test_hand_written_backward_passes_gradcheck_and_match_autograd(case):
    ours, plain, x = _gradcheck_case(case)
    before = x.detach().clone()
    # softmax F1 CE recomputes its stop-gradient F1 weights from the logits: finite differences would see them
    # move, so that case is checked against the autograd formula (same stop-gradient) only
    assert case == "softmax_f1_ce" or torch.autograd.gradcheck(ours, (x,))
    assert torch.equal(x.detach(), before)  # the inputs are never overwritten
    upstream = torch.randn(ours(x).shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (got,) = torch.autograd.grad(ours(x), x, upstream)
    (want,) = torch.autograd.grad(plain(x), x, upstream)
    torch.testing.assert_close(ours(x), plain(x))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("row", [False, True])
def test_kernel_backward_in_place_retained_and_double(row):
    """A kernel's autograd node scales its stored gradient by the upstream one in place and hands that buffer
    on (also when the graph is kept); a second backward through the kept graph recomputes
    it; under create_graph it differentiates ``formula`` (checked by gradgradcheck)."""
    from hfplug_imbalance._kernels import Kernel

    buffers = []

    class Cube(Kernel):  # sum(v**3 / 3) per row or per element; its gradient is v**2
        def formula(self, v):
            return (v**3 / 3).sum(-1) if row else v**3 / 3

        def value_and_grad(self, v):
            buffers.append(v.detach() ** 2)
            return self.formula(v.detach()), buffers[-1]

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4 if row else (4, 3), dtype=torch.float64)
    expected = x.detach() ** 2 * (upstream[:, None] if row else upstream)
    value = Cube()(x)
    torch.testing.assert_close(value, (x.detach() ** 3 / 3).sum(-1) if row else x.detach() ** 3 / 3)
    value.backward(upstream, retain_graph=True)
    torch.testing.assert_close(x.grad, expected)
    torch.testing.assert_close(buffers[0], expected)  # scaled in place: no new [..., C] tensor
    x.grad = None
    value.backward(upstream)
    torch.testing.assert_close(x.grad, expected)
    assert len(buffers) == 2  # recomputed once, for the second backward
    assert torch.autograd.gradgradcheck(Cube(), (x,))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_retained_graph_gives_the_same_gradient_twice_without_private_torch_api(name, monkeypatch):
    """retain_graph=True (FGM's objective="sum" takes the clean gradient that way): a second backward through
    the kept graph gives the gradient of a fresh call, and no private autograd query is made to tell the
    two cases apart."""

    def private_query():
        raise AssertionError("the losses must not call torch._C._autograd._get_current_graph_task_keep_graph")

    loss = ALL_LOSSES[name]()
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(21)) * 2
    targets = _targets(name)
    reference = logits.clone().requires_grad_(True)
    (fresh,) = torch.autograd.grad(ALL_LOSSES[name]()(reference, targets), reference)
    monkeypatch.setattr(
        torch._C._autograd, "_get_current_graph_task_keep_graph", private_query, raising=False
    )
    x = logits.clone().requires_grad_(True)
    value = loss(x, targets)
    (first,) = torch.autograd.grad(value, x, retain_graph=True)
    (second,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(first, fresh)
    torch.testing.assert_close(second, fresh)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradient_penalty_double_backward_matches_plain_autograd(name):
    """create_graph=True (a gradient penalty's double backward): the first-order gradient is the usual one and
    the penalty's gradient matches central differences of the penalty along a random direction (the F1 losses
    recompute their stop-gradient weights from the logits, so only finiteness is checked for them)."""
    loss = ALL_LOSSES[name]()
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(17)) * 2
    targets = _targets(name)
    x = logits.clone().requires_grad_(True)
    (plain_grad,) = torch.autograd.grad(loss(x, targets), x)
    (grad,) = torch.autograd.grad(loss(x, targets), x, create_graph=True)
    torch.testing.assert_close(grad, plain_grad)
    (penalty_grad,) = torch.autograd.grad(grad.pow(2).sum(), x)
    assert torch.isfinite(penalty_grad).all() and penalty_grad.abs().sum() > 0
    if name.startswith("f1_weighted_ce"):
        return

    def penalty(v):
        (g,) = torch.autograd.grad(loss(v.requires_grad_(True), targets), v)
        return float(g.double().pow(2).sum())

    direction = torch.randn(8, 4, generator=torch.Generator().manual_seed(18))
    eps = 1e-2
    numeric = (penalty(logits + eps * direction) - penalty(logits - eps * direction)) / (2 * eps)
    assert float((penalty_grad * direction).sum()) == pytest.approx(numeric, rel=2e-2, abs=1e-6)


def _one_minus_p_floored(logp: torch.Tensor) -> torch.Tensor:
    return (-torch.expm1(logp)).clamp(min=1e-12)  # float64: exact for p near 1, floored as documented


def _dice_reference(z: torch.Tensor, y: torch.Tensor, alpha: float, smooth: float) -> torch.Tensor:
    logp = torch.log_softmax(z, -1)
    p, q = logp.exp(), F.one_hot(y, z.shape[-1]).double()
    adjusted = p * _one_minus_p_floored(logp) ** alpha
    return (1 - (2 * adjusted * q + smooth) / (adjusted + q + smooth)).sum(-1).mean()


def _f1_ce_reference(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z, -1)
    p, q = logp.exp(), F.one_hot(y, z.shape[-1]).double()
    with torch.no_grad():
        half_f1 = (p * q).sum(0) / (q.sum(0) + p.sum(0))
    log_q = torch.log(_one_minus_p_floored(logp))
    return -(q * (1 - half_f1) * logp + (1 - q) * half_f1 * log_q).sum(-1).mean()


CONFIDENT = [5.0, 10.0, 15.0, 17.0, 20.0, 25.0, 30.0, 50.0]  # logit gaps: p rounds to 1 in float32 from ~17


@pytest.mark.parametrize("gap", CONFIDENT)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: (F1WeightedCrossEntropyLoss(), _f1_ce_reference), id="f1_ce"),
        *(
            pytest.param(
                lambda a=alpha, s=smooth: (DiceLoss(a, s), lambda z, y: _dice_reference(z, y, a, s)),
                id=f"dice_alpha{alpha}_smooth{smooth}",
            )
            for alpha, smooth in ((0.1, 1.0), (0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (0.5, 1e-30), (0.01, 1e-6))
        ),
    ],
)
def test_confident_predictions_match_a_float64_reference(make, gap):
    """A class predicted with p ~ 1 - e^-gap (the target in one row, another class in the others): loss and
    gradient equal float64 autograd of the documented formula, with 1 - p exact near 1 and floored at 1e-12.
    Computing 1 - p as a float32 difference gave gradients up to ~9,000x too large, or NaN, from gap ~15."""
    loss, reference = make()
    z = torch.tensor([[0.0, gap, 0.0], [gap, 0.0, 1.0], [0.0, 1.0, gap], [2.0, 0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 2])
    got_z = z.clone().requires_grad_(True)
    got = loss(got_z, y)
    got.backward()
    ref_z = z.double().requires_grad_(True)
    expected = reference(ref_z, y)
    expected.backward()
    assert torch.isfinite(got_z.grad).all()
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_z.grad.double(), ref_z.grad, rtol=1e-3, atol=1e-8)
