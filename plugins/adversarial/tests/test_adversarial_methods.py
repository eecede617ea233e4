"""One Trainer step of each method equals a hand-written PyTorch step of that method, in both loss paths."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _adversarial_helpers import (
    Reference,
    assert_same_update,
    fgm_objective,
    flat_params,
    freelb_objective,
    gp_objective,
    make_data,
    make_model,
    project,
    relative_error,
    run_trainer,
)
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from hfplug_adversarial import callbacks as callbacks_module

PATHS = ("model", "loss_func")


def fgsm_ref(ref, eps=0.01):
    e = ref.embed()
    (g,) = torch.autograd.grad(ref.loss(e), e)
    return ref.loss(ref.embed() + eps * g.sign())


def pgd_ref(ref, eps=1.0, alpha=0.3, steps=3, objective="adversarial", random_start=False):
    e = ref.embed()
    clean = ref.loss(e)
    if random_start:
        gen = torch.Generator().manual_seed(0)
        delta = project((2 * torch.rand(e.shape, generator=gen) - 1) * eps * ref.mask, eps, False)
        d = delta.clone().requires_grad_()
        (g,) = torch.autograd.grad(ref.loss(ref.embed() + d), d)
    else:
        delta = torch.zeros_like(e)
        (g,) = torch.autograd.grad(clean, e, retain_graph=True)
    for k in range(steps):
        delta = project(delta + alpha * g / (g.norm() + 1e-8), eps, False)
        if k < steps - 1:
            d = delta.clone().requires_grad_()
            (g,) = torch.autograd.grad(ref.loss(ref.embed() + d), d)
    adv = ref.loss(ref.embed() + delta)
    return clean + adv if objective == "sum" else adv


def smart_ref(ref, weight=1.0, eps=1.0, step_size=1e-3, noise_std=1e-5, draw=None):
    """``draw`` gives the standard-normal draw of the initial noise (default: generator seeded 0, full batch)."""
    e = ref.embed()
    out = ref.outputs(e)
    clean_loss = ref.loss(e)
    clean = out.logits
    z = torch.randn(e.shape, generator=torch.Generator().manual_seed(0)) if draw is None else draw(e.shape)
    noise = (noise_std * z * ref.mask).requires_grad_()
    adv = ref.outputs(ref.embed() + noise).logits
    rows = ref.mask.squeeze(-1) if clean.dim() == 3 else torch.ones(clean.shape[0])
    kl = F.kl_div(adv.log_softmax(-1), clean.detach().log_softmax(-1), log_target=True, reduction="none")
    (g,) = torch.autograd.grad((kl.sum(-1) * rows).sum(), noise)
    step = noise.detach() + step_size * g
    delta = eps * step / (step.abs().amax(-1, keepdim=True) + 1e-8)
    adv = ref.outputs(ref.embed() + delta).logits
    p, q = clean.log_softmax(-1), adv.log_softmax(-1)
    sym = F.kl_div(q, p.detach(), log_target=True, reduction="none").sum(-1)
    sym = sym + F.kl_div(p, q.detach(), log_target=True, reduction="none").sum(-1)
    count = ref.count  # num_items_in_batch: the Trainer passes it to these models and to the loss
    return clean_loss + weight * (sym * rows).sum() / count


CASES = {
    "fgm": (lambda: FGM(epsilon=0.5), lambda ref: fgm_objective(ref, 0.5)),
    "fgm_sum_per_example": (
        lambda: FGM(epsilon=0.5, objective="sum", norm="per_example"),
        lambda ref: fgm_objective(ref, 0.5, "sum", per_example=True),
    ),
    "fgsm": (lambda: FGSM(), fgsm_ref),
    "pgd": (lambda: PGD(), pgd_ref),
    "pgd_random_sum": (
        lambda: PGD(random_start=True, objective="sum", seed=0),
        lambda ref: pgd_ref(ref, objective="sum", random_start=True),
    ),
    "freelb": (lambda: FreeLB(seed=0), freelb_objective),
    "gradient_penalty": (lambda: GradientPenalty(epsilon=1.0), lambda ref: gp_objective(ref, 1.0)),
    "smart": (lambda: SMART(seed=0), smart_ref),
}


def _plain_update(model, data, task, path):
    ref = Reference(model, data, task, path)
    return flat_params(ref.step(ref.loss(ref.embed())))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_step_matches_reference_sequence_classification(name, path):
    make_callback, reference = CASES[name]
    model, data = make_model("seq"), make_data("seq")
    start = flat_params(model)
    ref = Reference(model, data, "seq", path)
    expected = ref.step(reference(ref))
    trainer = run_trainer(model, data, [make_callback()], task="seq", path=path)
    assert_same_update(trainer.model, expected, start)
    # the adversarial term changes the update: the comparison above can fail
    plain = _plain_update(make_model("seq"), data, "seq", path)
    assert relative_error(flat_params(expected) - start, plain - start) > 1e-3


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("task", ["tok", "lm"])
@pytest.mark.parametrize("name", ["fgm", "gradient_penalty", "smart"])
def test_one_step_matches_reference_token_tasks(name, task, path):
    make_callback, reference = CASES[name]
    model, data = make_model(task), make_data(task)
    start = flat_params(model)
    ref = Reference(model, data, task, path)
    expected = ref.step(reference(ref))
    trainer = run_trainer(model, data, [make_callback()], task=task, path=path)
    assert_same_update(trainer.model, expected, start)


@pytest.mark.parametrize("path", PATHS)
def test_freelb_partitioned_weights_path_matches_reference(path, monkeypatch):
    """Under FSDP/DeepSpeed FreeLB keeps every pass's graph for one backward instead of differentiating the
    parameters pass by pass: the same update."""
    monkeypatch.setattr(callbacks_module, "weights_sharded", lambda model, args: True)
    model, data = make_model("seq"), make_data("seq")
    start = flat_params(model)
    ref = Reference(model, data, "seq", path)
    expected = ref.step(freelb_objective(ref))
    trainer = run_trainer(model, data, [FreeLB(seed=0)], task="seq", path=path)
    assert_same_update(trainer.model, expected, start)


REPEATED_IDS = {  # [CLS]-like id 2 in every row, id 7 five times: the per-occurrence norm would be too large
    "input_ids": torch.tensor([[2, 7, 7, 7], [2, 7, 7, 8]]),
    "attention_mask": torch.ones(2, 4, dtype=torch.long),
    "labels": torch.tensor([0, 1]),
}


@pytest.mark.parametrize("objective", ["adversarial", "sum"])
@pytest.mark.parametrize("ids", ["random", "repeated"])
def test_share_by_token_is_the_posts_matrix_perturbation(ids, objective):
    """The post's snippet, written out: backward of the clean loss gives the embedding-matrix gradient G; the
    matrix is edited by eps * G / ||G||, the adversarial loss back-propagated (added to the clean gradients for
    objective "sum"), the matrix restored, one SGD step taken."""
    model = make_model("seq")
    data = make_data("seq") if ids == "random" else REPEATED_IDS
    start = flat_params(model)
    ref = copy.deepcopy(model)
    params = list(ref.parameters())
    weight = ref.get_input_embeddings().weight
    inputs = {k: v for k, v in data.items()}
    clean_grads = torch.autograd.grad(ref(**inputs).loss, params)
    grad = clean_grads[[p is weight for p in params].index(True)]
    edit = 0.5 * grad / (grad.norm() + 1e-8)
    with torch.no_grad():
        weight += edit
    adv_grads = torch.autograd.grad(ref(**inputs).loss, params)
    with torch.no_grad():
        weight -= edit
        for p, clean, adv in zip(params, clean_grads, adv_grads, strict=True):
            p -= 0.5 * (adv + clean if objective == "sum" else adv)
    callback = FGM(epsilon=0.5, objective=objective, share_by_token=True)
    trainer = run_trainer(model, data, [callback], task="seq", path="model", batch_size=len(data["labels"]))
    assert_same_update(trainer.model, ref, start)


def test_gradient_clipping_applies_to_the_final_gradient():
    model, data = make_model("seq"), make_data("seq")
    start = flat_params(model)
    ref = Reference(model, data, "seq", "model")
    expected = ref.step(fgm_objective(ref, 0.5, "sum"), max_grad_norm=0.05)
    trainer = run_trainer(
        model, data, [FGM(epsilon=0.5, objective="sum")], task="seq", path="model", max_grad_norm=0.05
    )
    assert_same_update(trainer.model, expected, start)
    assert trainer.state.log_history[0]["grad_norm"] > 0.05  # clipping was active
