"""DDP (torchrun, 2 ranks, gloo): identical parameters across ranks, equal to one process on the global batch,
and the logged loss, adv_loss and adv_delta_norm of every step equal to the reference's on both ranks.

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


def _reference(objective, path: str, micro_batch: int, logged=None, steps: int = 5):
    """Parameters after ``steps`` hand-written steps on all 8 examples (4 per rank), and per step what must be
    logged: the objective (``loss``), ``logged(ref, objective)`` (``adv_loss``; default the objective itself) and
    the mean over the micro-batches of both ranks (``micro_batch`` consecutive examples each) of the L2 norm of
    the reference's perturbation on that micro-batch (``adv_delta_norm``)."""
    ref = Reference(make_model("seq"), make_data("seq"), "seq", path)
    values = []
    for _ in range(steps):
        loss = objective(ref)
        adv = loss if logged is None else logged(ref, loss)
        norm = torch.stack([d.norm() for d in ref.delta.split(micro_batch)]).mean()
        values.append([float(loss.detach()), float(adv.detach()), float(norm)])
        ref.step(loss)
    return flat_params(ref.model), torch.tensor(values, dtype=torch.float64)


def _penalty(ref: Reference, objective: torch.Tensor) -> torch.Tensor:
    """The gradient penalty alone: the objective minus the clean loss."""
    with torch.no_grad():
        return objective - ref.loss(ref.embed())


@pytest.mark.distributed
def test_ddp_two_ranks_match_single_process(tmp_path: Path):
    """Parameters, and the logged ``loss``, ``adv_loss`` (the adversarial loss or penalty of the global batch) and
    ``adv_delta_norm`` of every step, on both ranks, equal the single-process reference's."""
    run_torchrun(Path(__file__).with_name("_adversarial_ddp_script.py"), str(tmp_path))
    expected = {
        "fgm_model": _reference(lambda ref: fgm_objective(ref, 0.5, per_example=True), "model", 4),
        "gp_loss_func": _reference(lambda ref: gp_objective(ref, 1.0), "loss_func", 2, _penalty),
        "freelb_model": _reference(lambda ref: freelb_objective(ref, init_magnitude=0), "model", 2),
    }
    start = flat_params(make_model("seq"))
    for name, (reference, logs) in expected.items():
        rank0, rank1 = (torch.load(tmp_path / f"{name}_rank{r}.pt") for r in (0, 1))
        assert torch.equal(rank0, rank1)
        torch.testing.assert_close(rank0, reference, rtol=1e-5, atol=1e-6)
        assert float((rank0 - reference).norm() / (reference - start).norm()) < 1e-3
        for r in (0, 1):
            logged = torch.load(tmp_path / f"{name}_logs_rank{r}.pt")
            torch.testing.assert_close(
                logged, logs, rtol=1e-5, atol=1e-7, msg=lambda m, where=f"{name} rank {r}": f"{where}: {m}"
            )
