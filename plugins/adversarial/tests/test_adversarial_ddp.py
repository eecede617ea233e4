"""DDP (torchrun, 2 ranks, gloo): identical parameters across ranks, equal to one process on the global batch.

FGM per-example with the model's loss (4 per rank) and gradient penalty with compute_loss_func, both under the
Trainer's default find_unused_parameters=True; FreeLB (per-example, zero start, parameter gradients handed to the
backward as a gradient term) with the model's loss and find_unused_parameters=False. The last two under gradient
accumulation (2 micro-batches of 2 per rank, so the no_sync window is exercised)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _adversarial_helpers import (
    Reference,
    fgm_objective,
    flat_params,
    freelb_objective,
    gp_objective,
    make_data,
    make_model,
)

from hfplug.testing import run_torchrun


def _reference(objective, path: str, steps: int = 5) -> torch.Tensor:
    ref = Reference(make_model("seq"), make_data("seq"), "seq", path)
    for _ in range(steps):  # every step sees all 8 examples (4 per rank)
        ref.step(objective(ref))
    return flat_params(ref.model)


@pytest.mark.distributed
def test_ddp_two_ranks_match_single_process(tmp_path: Path):
    run_torchrun(Path(__file__).with_name("_adversarial_ddp_script.py"), str(tmp_path))
    expected = {
        "fgm_model": _reference(lambda ref: fgm_objective(ref, 0.5, per_example=True), "model"),
        "gp_loss_func": _reference(lambda ref: gp_objective(ref, 1.0), "loss_func"),
        "freelb_model": _reference(lambda ref: freelb_objective(ref, init_magnitude=0), "model"),
    }
    start = flat_params(make_model("seq"))
    for name, reference in expected.items():
        rank0, rank1 = (torch.load(tmp_path / f"{name}_rank{r}.pt") for r in (0, 1))
        assert torch.equal(rank0, rank1)
        torch.testing.assert_close(rank0, reference, rtol=1e-5, atol=1e-6)
        assert float((rank0 - reference).norm() / (reference - start).norm()) < 1e-3
