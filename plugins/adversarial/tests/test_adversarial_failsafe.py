"""A non-finite optimizer step changes nothing: parameters, AdamW state and the learning-rate schedule after a run
with NaN injected during optimizer step 1 of 3 equal those of the run on the same data minus that step.

Every method, NaN in the forward (classifier output) and in the backward (gradient through the embedding
LayerNorm), without clipping and GA 1, and with clipping at 1.0 under GA 2 (NaN only in the step's second
micro-batch, so the clean first micro-batch must be dropped too). The reference run never sees the step's
examples; AdamW with weight decay 0.1 moves every parameter, so a step that still decays or counts shows.
"""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from _adversarial_failsafe import METHODS, data_for, optimizer_state, train, without_step
from _adversarial_helpers import flat_params, make_model
from hfplug_adversarial import FGM

STEPS, BAD = 3, 1
SETTINGS = {"ga1_noclip": (1, 0.0), "ga2_clip1": (2, 1.0)}


@functools.cache
def _reference(method: str, accumulation: int, max_grad_norm: float) -> dict[str, torch.Tensor]:
    data = without_step(data_for(STEPS), BAD)
    trainer = train(method, data, accumulation=accumulation, max_grad_norm=max_grad_norm)
    assert trainer.state.global_step == STEPS - 1
    return optimizer_state(trainer)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("where", ["forward", "backward"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_non_finite_step_changes_nothing(method, where, setting, caplog):
    accumulation, max_grad_norm = SETTINGS[setting]
    with caplog.at_level(logging.WARNING, logger="hfplug_adversarial"):
        trainer = train(
            method,
            data_for(STEPS),
            where=where,
            bad_step=BAD,
            accumulation=accumulation,
            max_grad_norm=max_grad_norm,
        )
    got, expected = optimizer_state(trainer), _reference(method, accumulation, max_grad_norm)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)
    assert trainer.state.log_history[-2]["adv_skipped_steps"] == 1
    assert any(f"optimizer step {BAD + 1}" in r.getMessage() for r in caplog.records)
    assert all("adv_skipped" not in log for log in trainer.state.log_history)  # one counter, per step


def test_skipped_step_does_not_advance_the_schedule():
    """Linear decay over 3 steps, step 2 skipped: two scheduler steps, so the lr is 1e-2 * (3 - 2) / 3."""
    trainer = train("fgm", data_for(STEPS), where="forward", bad_step=BAD, scheduler="linear")
    assert trainer.lr_scheduler.last_epoch == STEPS - 1
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * (STEPS - 2) / STEPS)
    assert [log["learning_rate"] for log in trainer.state.log_history[:-1]] == pytest.approx(
        [1e-2, 1e-2 * 2 / 3, 1e-2 * 2 / 3]  # logged before each step's scheduler step
    )


def test_huge_epsilon_ends_in_skipped_steps():
    """epsilon=1e38 is finite and accepted; the perturbed pass overflows, so every step is skipped."""
    trainer = train("fgm", data_for(2), callback=FGM(epsilon=1e38))
    assert trainer.state.log_history[-2]["adv_skipped_steps"] == 2
    assert torch.equal(flat_params(trainer.model), flat_params(make_model("seq")))
    assert trainer.optimizer.state_dict()["state"] == {}


def test_finite_run_skips_nothing():
    trainer = train("fgm", data_for(2))
    assert [log["adv_skipped_steps"] for log in trainer.state.log_history[:-1]] == [0, 0]
