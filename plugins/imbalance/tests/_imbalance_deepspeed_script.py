"""Imbalance losses through ``Trainer(compute_loss_func=...)`` under DeepSpeed ZeRO on 2 CPU ranks.

Run by test_imbalance_deepspeed.py: ``torchrun --nproc_per_node 2 _imbalance_deepspeed_script.py CHECKPOINT OUT
RUN...`` where each RUN is ``<case>-z<stage>``. Every run loads the tiny BERT of CHECKPOINT after its
``TrainingArguments`` exist (so ZeRO-3 partitions it at load, as users load models), trains
``STEPS`` SGD steps on the examples in order, and each rank writes ``OUT/<run>-rank<r>.pt``: the ZeRO stage
of the engine, the logged losses and every parameter gathered from the partitions (``deepspeed_record``).
"""

from __future__ import annotations

import sys

import torch
from hfplug_imbalance import FocalLoss, LDAMDRWCallback, LDAMLoss, LogitAdjustedLoss
from transformers import AutoModelForSequenceClassification, Trainer

from hfplug.testing import (
    deepspeed_record,
    deepspeed_sgd_arguments,
    finish_distributed,
    start_deepspeed_ranks,
)

NUM_LABELS = 3
LEARNING_RATE = 0.1
STEPS = 3
PER_DEVICE = 2
COUNTS = [5, 2, 1]
FOCAL = dict(gamma=2.0, alpha=[0.2, 0.3, 0.5])
LDAM = dict(max_margin=0.5, scale=5.0)
DRW_START_FRACTION = 0.5  # re-weighting from global step 2 of 3: the last step differs from the first two
# case -> gradient accumulation steps
CASES = {"logit-adjusted": 1, "focal-ga2": 2, "ldam-drw": 1}


def examples(n: int = 24, seq: int = 6) -> list[dict[str, torch.Tensor]]:
    """``n`` sequences with some padding and long-tailed labels (class 0 most frequent)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[::3, -2:] = 0
    labels = torch.tensor([0, 0, 1, 0, 2, 0, 1, 0] * (n // 8))
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]


def run(case: str, stage: int, checkpoint: str, out: str) -> dict:
    args = deepspeed_sgd_arguments(
        stage,
        f"{out}/{case}-z{stage}",
        per_device_train_batch_size=PER_DEVICE,
        gradient_accumulation_steps=CASES[case],
        max_steps=STEPS,
        learning_rate=LEARNING_RATE,
    )
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    callbacks = []
    if case == "logit-adjusted":
        loss = LogitAdjustedLoss(COUNTS, tau=1.0)
    elif case == "focal-ga2":
        loss = FocalLoss(**FOCAL)
    else:
        loss = LDAMLoss(COUNTS, **LDAM)
        callbacks.append(LDAMDRWCallback(loss, start_fraction=DRW_START_FRACTION))
    trainer = Trainer(
        model=model, args=args, train_dataset=examples(), compute_loss_func=loss, callbacks=callbacks
    )
    trainer.train()
    return deepspeed_record(trainer)


def main(checkpoint: str, out: str, runs: list[str]) -> None:
    start_deepspeed_ranks()
    for name in runs:
        case, _, stage = name.rpartition("-z")
        record = run(case, int(stage), checkpoint, out)
        torch.save(record, f"{out}/{name}-rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    finish_distributed()
