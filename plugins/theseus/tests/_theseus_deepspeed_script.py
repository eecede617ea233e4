"""Theseus replacement and export under DeepSpeed ZeRO on 2 CPU ranks (run by test_theseus_deepspeed.py).

``torchrun --nproc_per_node 2 _theseus_deepspeed_script.py CHECKPOINT OUT STAGE...``: per stage, the
predecessor is loaded from CHECKPOINT after the ``TrainingArguments`` exist (ZeRO-3 partitions it at load,
as users load models), wrapped with ``theseus_wrap`` and trained ``STEPS`` SGD steps on the examples in
order; each rank writes ``OUT/z<stage>-rank<r>.pt``: the engine's ZeRO stage, the logged losses and the
gathered parameters (``deepspeed_record``), the gate draws and ``export_successor``'s state dict.
"""

from __future__ import annotations

import sys

import torch
from hfplug_theseus import ConstantReplacementScheduler, TheseusCallback, export_successor, theseus_wrap
from transformers import AutoModelForSequenceClassification, Trainer

from hfplug.testing import (
    deepspeed_record,
    deepspeed_sgd_arguments,
    finish_distributed,
    start_deepspeed_ranks,
)

SUCCESSOR_LAYERS = 2
SEED = 3  # draws [[T, F], [T, T], [F, T]]: each module takes both branches
RATE = 0.5
STEPS = 3
PER_DEVICE = 2
LEARNING_RATE = 0.1


def examples(n: int = 2 * PER_DEVICE * STEPS, seq: int = 8) -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(3, 1000, (n, seq), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": ids[i], "labels": ids[i, 0] % 2} for i in range(n)]


def wrap(model):
    """The predecessor prepared for Theseus training (shared with the single-process reference)."""
    model.accepts_loss_kwargs = False  # BERT ignores num_items_in_batch: keep the Trainer's loss a plain mean
    return theseus_wrap(model, SUCCESSOR_LAYERS, seed=SEED, freeze_embeddings=False, freeze_head=False)


def run(stage: int, checkpoint: str, out: str) -> dict:
    args = deepspeed_sgd_arguments(
        stage,
        f"{out}/z{stage}",
        per_device_train_batch_size=PER_DEVICE,
        max_steps=STEPS,
        learning_rate=LEARNING_RATE,
    )
    model = wrap(AutoModelForSequenceClassification.from_pretrained(checkpoint))
    draws = []
    model.register_forward_pre_hook(
        lambda module, args: draws.append(module.theseus.gates.tolist()) if module.training else None
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples(),
        callbacks=[TheseusCallback(ConstantReplacementScheduler(RATE))],
    )
    trainer.train()
    exported = export_successor(model)  # every rank: gathering partitioned parameters is collective
    return {**deepspeed_record(trainer), "draws": draws, "export": exported.state_dict()}


def main(checkpoint: str, out: str, stages: list[str]) -> None:
    start_deepspeed_ranks()
    for stage in stages:
        record = run(int(stage), checkpoint, out)
        torch.save(record, f"{out}/z{stage}-rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    finish_distributed()
