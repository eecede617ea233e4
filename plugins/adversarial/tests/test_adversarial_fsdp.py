"""FSDP2 full_shard (torchrun, 2 CPU ranks, gloo): the gathered parameters equal one process on the global batch.

The runs of the DDP test against the same hand-written references: FGM per-example with the model's loss (4 per
rank), gradient penalty with compute_loss_func (and gradient clipping at 0.3, which is active) and FreeLB with the
model's loss, the last two under gradient accumulation (2 micro-batches of 2 per rank). Each rank holds about half
of the parameters. Without the plugin's FSDP handling, FGM and FreeLB fail on a resharded root parameter and the
gradient penalty segfaults in the final backward."""

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


def _reference(objective, path: str, max_grad_norm: float = 0.0, steps: int = 5) -> torch.Tensor:
    ref = Reference(make_model("seq"), make_data("seq"), "seq", path)
    for _ in range(steps):  # every step sees all 8 examples (4 per rank)
        ref.step(objective(ref), max_grad_norm=max_grad_norm)
    return flat_params(ref.model)


@pytest.mark.distributed
def test_fsdp_two_cpu_ranks_match_single_process(tmp_path: Path):
    run_torchrun(Path(__file__).with_name("_adversarial_fsdp_script.py"), str(tmp_path))
    expected = {
        "fgm_model": _reference(lambda ref: fgm_objective(ref, 0.5, per_example=True), "model"),
        "gp_loss_func": _reference(lambda ref: gp_objective(ref, 1.0), "loss_func", max_grad_norm=0.3),
        "freelb_model": _reference(lambda ref: freelb_objective(ref, init_magnitude=0), "model"),
    }
    start = flat_params(make_model("seq"))
    for name, reference in expected.items():
        rank0, rank1 = (torch.load(tmp_path / f"{name}_rank{r}.pt") for r in (0, 1))
        assert torch.equal(rank0["full"], rank1["full"])
        assert rank0["local"] + rank1["local"] == start.numel() and rank0["local"] < 0.6 * start.numel()
        torch.testing.assert_close(rank0["full"], reference, rtol=1e-5, atol=1e-6)
        assert float((rank0["full"] - reference).norm() / (reference - start).norm()) < 1e-3
