"""One Trainer step of each method equals a hand-written PyTorch step of that method, in both loss paths."""

from __future__ import annotations

import copy

import pytest
import torch
from _adversarial_helpers import (
    CASES,
    Reference,
    assert_same_update,
    fgm_objective,
    flat_params,
    freelb_objective,
    make_data,
    make_model,
    relative_error,
    run_trainer,
)
from hfplug_adversarial import FGM, FreeLB
from hfplug_adversarial import callbacks as callbacks_module

PATHS = ("model", "loss_func")


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
