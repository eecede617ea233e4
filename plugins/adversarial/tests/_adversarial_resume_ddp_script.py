"""Run under torchrun by test_adversarial_resume.py: FreeLB (seeded) on 2 ranks, 4 steps of 4 per rank, AdamW, step
1 poisoned on rank 0 (so both ranks skip it); the uninterrupted run checkpoints at step 2, a second run resumes
from that checkpoint. Saves parameters, AdamW state and the skip counter per run and rank."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _adversarial_failsafe import data_for, optimizer_state, train
from hfplug_adversarial import FreeLB

from hfplug.testing import finish_distributed

out = Path(sys.argv[1])
common = dict(where="forward", rank=0, save_steps=2, ddp_find_unused_parameters=False)
data = data_for(4, world=2)
runs = {
    "full": lambda: train("freelb", data, callback=FreeLB(steps=2, seed=0), output_dir=str(out / "full"), **common),
    "resumed": lambda: train(
        "freelb", data, callback=FreeLB(steps=2, seed=0), output_dir=str(out / "resumed"),
        resume_from_checkpoint=str(out / "full" / "checkpoint-2"), **common,
    ),
}  # fmt: skip
for name, run in runs.items():
    trainer = run()
    assert trainer.args.world_size == 2 and trainer.state.global_step == 4
    skipped = trainer.state.log_history[-2]["adv_skipped_steps"]
    torch.save(
        {**optimizer_state(trainer), "skipped": torch.tensor(skipped)},
        out / f"{name}_rank{trainer.args.process_index}.pt",
    )
finish_distributed()
