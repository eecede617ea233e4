"""One SGD step of a tiny BERT through a real Trainer with an imbalance loss (shared by the GA and DDP tests).

Run under torchrun: ``python -m torch.distributed.run --nproc_per_node 2 _imbalance_ddp_script.py OUT``;
rank 0 writes the parameters after the step and the class counts all-reduced from each rank's shard.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from hfplug_imbalance import FocalLoss, LogitAdjustedLoss, class_counts
from transformers import Trainer, TrainingArguments

from hfplug.testing import finish_distributed, tiny_model

NUM_LABELS = 3
LEARNING_RATE = 0.5


def examples(task: str, n: int = 8, seq: int = 6) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[::3, -2:] = 0
    if task == "sequence-classification":
        labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])[:n]
    else:
        labels = torch.randint(0, NUM_LABELS, (n, seq), generator=g).masked_fill(mask == 0, -100)
        labels[1, :3] = -100
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]


def make_loss(task: str):
    if task == "sequence-classification":
        return LogitAdjustedLoss([5, 2, 1], tau=1.0)
    return FocalLoss(gamma=2.0, alpha=[0.2, 0.3, 0.5])


def model_for(task: str):
    return tiny_model(
        "bert", task, seed=0, num_labels=NUM_LABELS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def train_one_step(task: str, batch_size: int, accumulation: int = 1, output_dir: str | None = None):
    """Return the trainer after one optimizer step (plain SGD, constant lr, no clipping)."""
    model = model_for(task)
    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=LEARNING_RATE,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples(task), compute_loss_func=make_loss(task))
    trainer.train()
    return trainer


def main(out_path: str) -> None:
    trainer = train_one_step("sequence-classification", batch_size=4)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    shard = [e["labels"] for e in examples("token-classification")][rank::world]
    counts = class_counts(shard, num_classes=NUM_LABELS)
    if rank == 0:
        params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        torch.save({"params": params, "counts": counts, "world": world}, out_path)


if __name__ == "__main__":
    main(sys.argv[1])
    finish_distributed()
