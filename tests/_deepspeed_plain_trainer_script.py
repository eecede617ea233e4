"""Run under torchrun by test_deepspeed_plain_trainer.py: a plain Trainer (no hfplug callback) with
BertForSequenceClassification under DeepSpeed ZeRO-3 on 2 CPU ranks, 3 SGD steps of 4 examples per rank, with the
Trainer's defaults and with each setting that might correct its loss scaling. Saves each run's ``deepspeed_record``
(gathered parameters, logged losses) per rank."""

import sys
from pathlib import Path

import torch
from transformers import Trainer
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from hfplug.testing import (
    deepspeed_config,
    deepspeed_record,
    finish_distributed,
    sgd_arguments,
    start_deepspeed_ranks,
    tiny_model,
)

start_deepspeed_ranks()
out = Path(sys.argv[1])
generator = torch.Generator().manual_seed(0)
ids = torch.randint(5, 1000, (8, 10), generator=generator)
labels = torch.randint(0, 2, (8,), generator=generator)
data = [{"input_ids": ids[i], "labels": labels[i]} for i in range(8)]
runs = {  # name: (model.accepts_loss_kwargs or None to leave it unset, TrainingArguments overrides)
    "default": (None, {}),
    "accepts_loss_kwargs_false": (False, {}),
    "accepts_loss_kwargs_false_ga2": (
        False,
        dict(per_device_train_batch_size=2, gradient_accumulation_steps=2),
    ),
    "average_tokens_false": (None, dict(average_tokens_across_devices=False)),
    "average_tokens_false_ga2": (
        None,
        dict(
            average_tokens_across_devices=False, per_device_train_batch_size=2, gradient_accumulation_steps=2
        ),
    ),
}
settings = dict(per_device_train_batch_size=4, num_train_epochs=3, learning_rate=0.5, seed=0)
for name, (accepts, overrides) in runs.items():
    unset_hf_deepspeed_config()  # else the model below is built under deepspeed.zero.Init (other initial values)
    model = tiny_model(
        "bert", "sequence-classification", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    if accepts is not None:
        model.accepts_loss_kwargs = accepts
    args = sgd_arguments(
        "/tmp/hfplug_deepspeed_plain",
        deepspeed=deepspeed_config(3),  # the shipped config: these tiny parameters are not partitioned
        **{**settings, **overrides},
    )
    trainer = Trainer(model, args, train_dataset=data)
    trainer.train()
    assert trainer.state.global_step == 3 and args.world_size == 2
    torch.save(deepspeed_record(trainer), out / f"{name}_rank{args.process_index}.pt")
finish_distributed()
