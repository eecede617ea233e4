"""Resume: whatever decides a method's behaviour travels with Trainer checkpoints.

A run resumed from the checkpoint of step 2 of 4 ends with the parameters and AdamW state of the uninterrupted
run, for each method that draws random starts (PGD with random_start, FreeLB, SMART, all seeded), also when a step
before the checkpoint was skipped as non-finite (the skip counter and the draws continue where they were). A
checkpoint written with other settings or by another method is refused with both values.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import pytest
import torch
from _adversarial_failsafe import data_for, optimizer_state, train
from hfplug_adversarial import FGM, PGD, SMART, FreeLB
from transformers import TrainerCallback

from hfplug.testing import run_torchrun

STEPS, SAVE = 4, 2
METHODS = {
    "pgd_random_start": lambda: PGD(steps=2, random_start=True, seed=0),
    "freelb": lambda: FreeLB(steps=2, seed=0),
    "smart": lambda: SMART(seed=0),
}


@functools.cache
def _full_run(name: str, where: str | None, root: str):
    """The uninterrupted run (checkpoints every SAVE steps) and its final state."""
    trainer = train(
        name, data_for(STEPS), callback=METHODS[name](), where=where, output_dir=f"{root}/{name}-{where}",
        save_steps=SAVE,
    )  # fmt: skip
    return trainer, optimizer_state(trainer)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("resume"))


def _resume(name: str, where: str | None, root: str, tmp_path: Path, callback=None, **extra):
    checkpoint = f"{root}/{name}-{where}/checkpoint-{SAVE}"
    return train(
        name, data_for(STEPS), callback=METHODS[name]() if callback is None else callback, where=where,
        output_dir=str(tmp_path), save_steps=SAVE, resume_from_checkpoint=checkpoint, **extra,
    )  # fmt: skip


def _assert_same_state(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)


@pytest.mark.parametrize("where", [None, "forward"], ids=["finite", "step1_skipped"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_resumed_run_equals_uninterrupted(name, where, root, tmp_path):
    full, expected = _full_run(name, where, root)
    resumed = _resume(name, where, root, tmp_path)
    assert resumed.state.global_step == STEPS
    _assert_same_state(optimizer_state(resumed), expected)
    skipped = 0 if where is None else 1
    assert full.state.log_history[-2]["adv_skipped_steps"] == skipped
    assert resumed.state.log_history[-2]["adv_skipped_steps"] == skipped  # the counter did not restart


def test_checkpoint_holds_settings_and_counter(root):
    _full_run("freelb", "forward", root)
    saved = json.loads(Path(f"{root}/freelb-forward/checkpoint-{SAVE}/trainer_state.json").read_text())
    entry = saved["stateful_callbacks"]["FreeLB"]
    assert entry["args"] == {
        "epsilon": 1.0, "alpha": 0.1, "steps": 2, "init_magnitude": 1.0, "norm": "per_example", "seed": 0,
    }  # fmt: skip
    assert entry["attributes"] == {"skipped_steps": 1}


@pytest.mark.parametrize(
    ("callback", "message"),
    [
        (
            lambda: PGD(epsilon=0.5, steps=2, random_start=True, seed=0),
            "epsilon: the checkpoint has 1.0, this run has 0.5",
        ),
        (lambda: PGD(steps=2, random_start=True, seed=1), "seed: the checkpoint has 0, this run has 1"),
        (
            lambda: PGD(steps=3, random_start=False, seed=0),
            "random_start: the checkpoint has True, this run has False",
        ),
        (lambda: FreeLB(steps=2, seed=0), "written by PGD\\(.*epsilon=1.0.*\\), this run uses FreeLB\\("),
        (lambda: FGM(epsilon=1.0, seed=0), "written by PGD\\(.*\\), this run uses FGM\\("),
    ],
)
def test_resume_with_other_settings_is_refused(callback, message, root, tmp_path):
    _full_run("pgd_random_start", None, root)
    with pytest.raises(ValueError, match=message):
        _resume("pgd_random_start", None, root, tmp_path, callback=callback())


def test_restore_callback_states_takes_the_checkpoint_settings(root, tmp_path):
    """TrainingArguments(restore_callback_states_from_checkpoint=True) rebuilds the callback from the checkpoint."""
    _, expected = _full_run("pgd_random_start", None, root)
    resumed = _resume(
        "pgd_random_start", None, root, tmp_path, callback=PGD(epsilon=0.5, seed=3),
        restore_callback_states_from_checkpoint=True,
    )  # fmt: skip
    _assert_same_state(optimizer_state(resumed), expected)


def test_checkpoint_without_adversarial_state(tmp_path, caplog):
    """Adversarial training added when resuming a run that had none: a warning, the counter starts at 0, and the
    next checkpoint (which the Trainer writes by the names of the callbacks it loaded) holds its state."""
    data = data_for(STEPS)
    train("fgm", data, callback=TrainerCallback(), output_dir=str(tmp_path / "plain"), save_steps=SAVE)
    with caplog.at_level(logging.WARNING, logger="hfplug_adversarial"):
        resumed = train(
            "fgm", data, callback=FGM(0.5), output_dir=str(tmp_path / "resumed"), save_steps=SAVE,
            resume_from_checkpoint=str(tmp_path / "plain" / f"checkpoint-{SAVE}"),
        )  # fmt: skip
    assert any("has no FGM state" in r.getMessage() for r in caplog.records)
    assert resumed.state.log_history[-2]["adv_skipped_steps"] == 0
    saved = json.loads((tmp_path / "resumed" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["FGM"]["args"]["epsilon"] == 0.5


@pytest.mark.distributed
def test_resume_under_two_ranks(tmp_path):
    """torchrun, 2 ranks: each rank's draws continue where they were (seeded per rank), the ranks agree, and the
    resumed run equals the uninterrupted one, with the skipped step counted once."""
    run_torchrun(Path(__file__).with_name("_adversarial_resume_ddp_script.py"), str(tmp_path))
    full = [torch.load(tmp_path / f"full_rank{r}.pt") for r in (0, 1)]
    resumed = [torch.load(tmp_path / f"resumed_rank{r}.pt") for r in (0, 1)]
    for key in full[0]:
        assert torch.equal(full[0][key], full[1][key]), key
        assert torch.equal(resumed[0][key], resumed[1][key]), key
    assert int(full[0]["skipped"]) == int(resumed[0]["skipped"]) == 1
    _assert_same_state(resumed[0], full[0])
