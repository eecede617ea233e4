"""Imbalance losses through ``Trainer(compute_loss_func=...)`` under DeepSpeed ZeRO on 2 CPU ranks.

Run by test_imbalance_deepspeed.py: ``torchrun --nproc_per_node 2 _imbalance_deepspeed_script.py CHECKPOINT OUT
RUN...`` where each RUN is ``<case>-z<stage>``. Every run loads the tiny BERT of CHECKPOINT after its
``TrainingArguments`` exist (so ZeRO-3 partitions it at load, as users load models), trains
``STEPS`` SGD steps on the examples in order, and each rank writes ``OUT/<run>-rank<r>.pt``: the ZeRO stage
of the engine, the logged losses and every parameter gathered from the partitions.
"""

from __future__ import annotations

import sys

import deepspeed
import torch
from accelerate.state import AcceleratorState
from hfplug_imbalance import FocalLoss, LDAMDRWCallback, LDAMLoss, LogitAdjustedLoss
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hfplug.testing import deepspeed_config, finish_distributed

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
    config = deepspeed_config(stage)
    config["zero_optimization"]["stage3_param_persistence_threshold"] = (
        0  # else ZeRO-3 keeps tiny params whole
    )
    args = TrainingArguments(
        output_dir=f"{out}/{case}-z{stage}",
        deepspeed=config,
        per_device_train_batch_size=PER_DEVICE,
        gradient_accumulation_steps=CASES[case],
        train_sampling_strategy="sequential",
        max_steps=STEPS,
        learning_rate=LEARNING_RATE,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
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
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
    record = {
        "world_size": args.world_size,
        "stage": trainer.deepspeed.zero_optimization_stage(),
        "partitioned": [p.numel() == 0 for p in model.parameters()],  # ZeRO-3: every rank holds a shard only
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "params": params,
    }
    AcceleratorState._reset_state()  # the next run's Trainer builds its own DeepSpeed plugin
    return record


def main(checkpoint: str, out: str, runs: list[str]) -> None:
    # With use_cpu=True accelerate starts torch.distributed but not deepspeed.comm, so zero.Init inside
    # from_pretrained would see one rank ("train_batch_size is not equal to ... 4 != 2 * 1 * 1")
    deepspeed.init_distributed(dist_backend="gloo")
    for name in runs:
        case, _, stage = name.rpartition("-z")
        record = run(case, int(stage), checkpoint, out)
        torch.save(record, f"{out}/{name}-rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    finish_distributed()
