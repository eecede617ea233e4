"""FAVOR+ training with feature redraw under DeepSpeed ZeRO on 2 CPU ranks (run by test_favor_deepspeed.py).

``torchrun --nproc_per_node 2 _favor_deepspeed_script.py CHECKPOINT OUT STAGE...``: per stage, a tiny BERT
loaded from CHECKPOINT with ``attn_implementation="favor"`` (after the ``TrainingArguments`` exist, so ZeRO-3
partitions it at load) trains ``STEPS`` SGD steps with ``FeatureRedrawCallback(every_n_steps=1)``, saving a
checkpoint every ``SAVE_EVERY`` steps ("full"); a second model then resumes from the first checkpoint and
finishes ("resumed"). Each rank writes ``OUT/z<stage>-<run>-rank<r>.pt``: the engine's ZeRO stage, the redraw
count, every layer's projection, the logged losses and the gathered parameters.
"""

from __future__ import annotations

import sys

import torch
from hfplug_favor import FavorConfig, FeatureRedrawCallback, get_favor_config, set_favor_config
from transformers import AutoModelForSequenceClassification, Trainer

import hfplug
from hfplug.testing import (
    deepspeed_record,
    deepspeed_sgd_arguments,
    finish_distributed,
    start_deepspeed_ranks,
)

FAVOR = FavorConfig(nb_features=16, seed=3)
STEPS = 4
SAVE_EVERY = 2
PER_DEVICE = 2
LEARNING_RATE = 0.1


def examples(n: int = 2 * PER_DEVICE * STEPS, seq: int = 6) -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(5, 1000, (n, seq), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": ids[i], "labels": ids[i, 0] % 2} for i in range(n)]


def load(checkpoint: str):
    """The FAVOR+ model (shared with the single-process reference)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation=hfplug.use_attention("favor")
    )
    model.accepts_loss_kwargs = False  # BERT ignores num_items_in_batch: keep the Trainer's loss a plain mean
    set_favor_config(model, FAVOR)
    return model


def run(stage: int, checkpoint: str, out: str, resume: str | None) -> dict:
    args = deepspeed_sgd_arguments(
        stage,
        f"{out}/z{stage}-{'resumed' if resume else 'full'}",
        per_device_train_batch_size=PER_DEVICE,
        max_steps=STEPS,
        learning_rate=LEARNING_RATE,
        save_strategy="no" if resume else "steps",
        save_steps=SAVE_EVERY,
    )
    model = load(checkpoint)
    trainer = Trainer(
        model=model, args=args, train_dataset=examples(), callbacks=[FeatureRedrawCallback(every_n_steps=1)]
    )
    trainer.train(resume_from_checkpoint=resume)
    return {
        **deepspeed_record(trainer),
        "redraw_count": get_favor_config(model).redraw_count,
        "favor_state": model.favor_state.tolist(),
        "projections": [layer.attention.self._favor_projection[1] for layer in model.bert.encoder.layer],
    }


def main(checkpoint: str, out: str, stages: list[str]) -> None:
    start_deepspeed_ranks()
    rank = torch.distributed.get_rank()
    for stage in stages:
        full = run(int(stage), checkpoint, out, resume=None)
        torch.save(full, f"{out}/z{stage}-full-rank{rank}.pt")
        resumed = run(int(stage), checkpoint, out, resume=f"{out}/z{stage}-full/checkpoint-{SAVE_EVERY}")
        torch.save(resumed, f"{out}/z{stage}-resumed-rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    finish_distributed()
