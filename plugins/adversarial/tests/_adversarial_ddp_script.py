"""Run under torchrun by test_adversarial_ddp.py: 5 steps of three methods on 2 ranks, parameters and the logged
(loss, adv_loss, adv_delta_norm) of each step saved per rank."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _adversarial_helpers import flat_params, make_data, make_model, run_trainer
from hfplug_adversarial import FGM, FreeLB, GradientPenalty

from hfplug.testing import finish_distributed

out = Path(sys.argv[1])
# global batch 8 = 2 ranks x 4, or 2 ranks x 2 micro-batches of 2 (no_sync on the first micro-batch)
# find_unused_parameters=True is the Trainer's default: DDP then rebuilds the outputs through its hook node, which
# sends gradients into every output tensor (also the first pass's logits, whose graph FGM has already freed) and
# rebuilds the outputs object (so no loss finisher could travel on it). FreeLB runs with False: its gradient term feeds DDP's reducer.
runs = {
    "fgm_model": (lambda: FGM(epsilon=0.5, norm="per_example"), "model", True, dict(batch_size=4)),
    "gp_loss_func": (
        lambda: GradientPenalty(epsilon=1.0),
        "loss_func",
        True,
        dict(batch_size=2, accumulation=2),
    ),
    "freelb_model": (lambda: FreeLB(init_magnitude=0), "model", False, dict(batch_size=2, accumulation=2)),
}
for name, (make_callback, path, find_unused, shape) in runs.items():
    trainer = run_trainer(
        make_model("seq"), make_data("seq"), [make_callback()], task="seq", path=path, epochs=5,
        ddp_find_unused_parameters=find_unused, **shape,
    )  # fmt: skip
    assert trainer.state.global_step == 5 and trainer.args.world_size == 2
    rank = trainer.args.process_index
    torch.save(flat_params(trainer.model), out / f"{name}_rank{rank}.pt")
    keys = ("loss", "adv_loss", "adv_delta_norm")
    logged = [[log[k] for k in keys] for log in trainer.state.log_history if "adv_loss" in log]
    torch.save(torch.tensor(logged, dtype=torch.float64), out / f"{name}_logs_rank{rank}.pt")
finish_distributed()
