"""Run under torchrun by test_adversarial_failsafe_ddp.py: FGM on 2 ranks, 3 steps of 4 per rank, AdamW, clipping
at 1.0; step 1 poisoned on one rank only. Saves parameters and AdamW state per run and rank."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _adversarial_failsafe import Inject, data_for, optimizer_state, train, without_step

from hfplug.testing import finish_distributed

out = Path(sys.argv[1])


class HugeLogits(Inject):
    """Logits x 1e30 on one rank: the losses and (clipped, all-reduced) gradients stay finite, but that rank's
    squared gradient norm overflows, so only that rank sees a non-finite perturbation direction."""

    def _forward(self, module, args, output):
        return output * 1e30 if self.active else None


data = data_for(3, world=2)
runs = {
    "reference": lambda: train(
        "fgm", without_step(data, 1, world=2), max_grad_norm=1.0, ddp_find_unused_parameters=False
    ),
    "forward_rank0": lambda: train(
        "fgm", data, where="forward", rank=0, max_grad_norm=1.0, ddp_find_unused_parameters=False
    ),
    "backward_rank1": lambda: train(
        "fgm", data, where="backward", rank=1, max_grad_norm=1.0, ddp_find_unused_parameters=False
    ),
    "rank0_only": lambda: train(
        "fgm",
        data,
        where="forward",
        rank=0,
        inject_class=HugeLogits,
        max_grad_norm=1.0,
        ddp_find_unused_parameters=False,
    ),
}
for name, run in runs.items():
    trainer = run()
    assert trainer.args.world_size == 2
    skipped = trainer.state.log_history[-2]["adv_skipped_steps"]
    torch.save(
        {**optimizer_state(trainer), "skipped": torch.tensor(skipped)},
        out / f"{name}_rank{trainer.args.process_index}.pt",
    )
finish_distributed()
