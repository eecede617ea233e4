"""Run under torchrun by test_adversarial_ddp.py: 5 steps of three methods on 2 ranks, parameters saved per rank."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _adversarial_helpers import flat_params, make_data, make_model, run_trainer
from hfplug_adversarial import FGM, FreeLB, GradientPenalty

from hfplug.testing import finish_distributed

out = Path(sys.argv[1])
# global batch 8 = 2 ranks x 4, or 2 ranks x 2 micro-batches of 2 (no_sync on the first micro-batch)
runs = {
    "freelb_model": (lambda: FreeLB(init_magnitude=0), "model", dict(batch_size=2, accumulation=2)),
    "fgm_model": (lambda: FGM(epsilon=0.5, norm="per_example"), "model", dict(batch_size=4)),
    "gp_loss_func": (
        lambda: GradientPenalty(epsilon=1.0),
        "loss_func",
        dict(batch_size=2, accumulation=2),
    ),
}
for name, (make_callback, path, shape) in runs.items():
    trainer = run_trainer(
        make_model("seq"), make_data("seq"), [make_callback()], task="seq", path=path, epochs=5,
        # the loss-function path runs with the Trainer's default find_unused_parameters=True, under which
        # DDP rebuilds the outputs and the finisher must still reach the loss
        **{"ddp_find_unused_parameters": path == "loss_func", **shape},
    )  # fmt: skip
    assert trainer.state.global_step == 5 and trainer.args.world_size == 2
    torch.save(flat_params(trainer.model), out / f"{name}_rank{trainer.args.process_index}.pt")
finish_distributed()
