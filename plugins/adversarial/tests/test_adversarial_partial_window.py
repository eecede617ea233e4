"""The last optimizer step of an epoch whose micro-batches do not fill the gradient-accumulation window.

10 examples, batch 2, GA 2, one epoch: the Trainer (5.23, ``_run_epoch``) makes 3 optimizer steps of 2, 2 and 1
micro-batches and divides a micro-batch-mean loss by the window's size (``current_gradient_accumulation_steps``),
not by ``gradient_accumulation_steps``. Each step must equal a hand-written full-batch step on the examples of
its window (in order: ``train_sampling_strategy="sequential"``), and ``adv_loss`` must be that step's
adversarial loss (gradient penalty: the penalty) of the full batch. The window the plugin uses is the
Trainer's own divisor at every micro-batch, also across epochs, with ``max_steps`` and on resume.
"""

from __future__ import annotations

import math

import pytest
from _adversarial_helpers import (
    DictDataset,
    Reference,
    assert_same_update,
    fgm_objective,
    flat_params,
    freelb_objective,
    gp_objective,
    make_data,
    make_model,
    run_trainer,
)
from hfplug_adversarial import FGM, FreeLB, GradientPenalty
from hfplug_adversarial.callbacks import AdversarialCallback
from transformers import Trainer

from hfplug.testing import sgd_arguments

EXAMPLES, BATCH, ACCUMULATION = 10, 2, 2
WINDOWS = [(0, 4), (4, 8), (8, 10)]  # example ranges of the three optimizer steps

METHODS = {  # callback, full-batch objective, the adv_loss it logs
    "fgm": (
        lambda: FGM(epsilon=0.5, norm="per_example"),
        lambda ref: fgm_objective(ref, 0.5, per_example=True),
        lambda ref, objective: float(objective),
    ),
    "gradient_penalty": (
        lambda: GradientPenalty(epsilon=1.0),
        lambda ref: gp_objective(ref, 1.0),
        lambda ref, objective: ref.penalty,
    ),
    "freelb": (
        lambda: FreeLB(init_magnitude=0),
        lambda ref: freelb_objective(ref, init_magnitude=0),
        lambda ref, objective: float(objective),
    ),
}
MODELS = {  # task, accepts_loss_kwargs (None: the model's own), whether the plugin rescales its loss, learning rate
    "bert_ignores_num_items": ("seq", None, True, 0.5),  # rescaled to sum / num_items_in_batch
    "bert_mean_loss": ("seq", False, False, 0.5),  # no num_items_in_batch: the Trainer divides by the window
    # at 0.05 the penalty's gradients reach a norm of ~1e3 by step 3 and float32 noise exceeds the tolerance
    "llama_lm_honours_num_items": ("lm", None, False, 0.01),
}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("method", list(METHODS))
def test_partial_accumulation_window_equals_full_batch_steps(method, model_name, caplog):
    make_callback, objective_of, logged_of = METHODS[method]
    task, accepts_loss_kwargs, rescaled, lr = MODELS[model_name]
    data = make_data(task, n=EXAMPLES)
    model = make_model(task)
    if accepts_loss_kwargs is not None:
        model.accepts_loss_kwargs = accepts_loss_kwargs
    start = flat_params(model)

    expected_model, expected_logs = model, []
    for first, end in WINDOWS:
        ref = Reference(expected_model, {k: v[first:end] for k, v in data.items()}, task, "model")
        objective = objective_of(ref)
        expected_logs.append(logged_of(ref, objective))
        expected_model = ref.step(objective, lr=lr)

    trainer = run_trainer(
        model, data, [make_callback()], task=task, path="model", batch_size=BATCH, accumulation=ACCUMULATION,
        lr=lr,
    )  # fmt: skip
    assert trainer.state.global_step == len(WINDOWS)
    assert ("ignores num_items_in_batch" in caplog.text) == rescaled
    assert_same_update(trainer.model, expected_model, start)
    logged = [entry["adv_loss"] for entry in trainer.state.log_history if "adv_loss" in entry]
    assert len(logged) == len(WINDOWS)
    for step, (got, want) in enumerate(zip(logged, expected_logs, strict=True), start=1):
        assert math.isclose(got, want, rel_tol=1e-5), f"step {step}: adv_loss {got}, full batch {want}"


class _RecordingTrainer(Trainer):
    """Records, at each micro-batch, the Trainer's divisor of a mean loss and the window the plugin uses."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        (callback,) = [c for c in self.callback_handler.callbacks if isinstance(c, AdversarialCallback)]
        self.windows.append((self.current_gradient_accumulation_steps, callback._wrapper.window))
        return super().training_step(model, inputs, num_items_in_batch)


def _windows(tmp_path, **extra) -> list[int]:
    model = make_model("seq")
    model.accepts_loss_kwargs = False
    args = sgd_arguments(
        str(tmp_path), per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUMULATION, **extra
    )
    trainer = _RecordingTrainer(
        model, args, train_dataset=DictDataset(make_data("seq", n=EXAMPLES)), callbacks=[FGM(0.5)]
    )
    trainer.windows = []
    trainer.train(resume_from_checkpoint=extra.get("resume_from_checkpoint"))
    trainers, ours = zip(*trainer.windows, strict=True)
    assert ours == trainers
    return list(trainers)


def test_window_follows_the_trainer_across_epochs_and_resumes(tmp_path):
    """The plugin's window is the Trainer's ``current_gradient_accumulation_steps`` at every micro-batch: over two
    epochs, with ``max_steps`` ending inside an epoch, and resumed from the checkpoint of step 4 (inside the second
    epoch: the Trainer skips its first step's batches, or with ``ignore_data_skip`` restarts the epoch)."""
    per_epoch = [2, 2, 2, 2, 1]  # micro-batches of the 3 steps of an epoch, one entry per micro-batch
    assert (
        _windows(tmp_path / "full", num_train_epochs=2, save_strategy="steps", save_steps=4) == per_epoch * 2
    )
    assert _windows(tmp_path / "max_steps", max_steps=4) == [*per_epoch, 2, 2]
    checkpoint = str(tmp_path / "full" / "checkpoint-4")
    resumed = _windows(tmp_path / "resumed", num_train_epochs=2, resume_from_checkpoint=checkpoint)
    assert resumed == [2, 2, 1]
    restarted = _windows(
        tmp_path / "restarted", num_train_epochs=2, resume_from_checkpoint=checkpoint, ignore_data_skip=True
    )
    assert restarted == [2, 2, 2, 2]
