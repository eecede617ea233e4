"""Run under torchrun by test_deepspeed_plain_trainer.py: a plain Trainer (no hfplug callback) with
BertForSequenceClassification under DeepSpeed ZeRO-3 on 2 CPU ranks, 3 SGD steps of 4 examples per rank, with the
Trainer's defaults and with each setting that might correct its loss scaling. Saves the gathered parameters and
the logged losses per run and rank."""

import sys
from pathlib import Path

import deepspeed
import deepspeed.ops
import torch
from transformers import Trainer, TrainingArguments
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from hfplug.testing import deepspeed_config, finish_distributed, tiny_model

# DeepSpeed's comm backend JIT-compiles a shared-memory kernel used only by inference all-reduces (minutes on CPU)
deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

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
for name, (accepts, overrides) in runs.items():
    unset_hf_deepspeed_config()  # else the model below is built under deepspeed.zero.Init (other initial values)
    model = tiny_model(
        "bert", "sequence-classification", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    if accepts is not None:
        model.accepts_loss_kwargs = accepts
    settings = dict(
        per_device_train_batch_size=4, num_train_epochs=3, learning_rate=0.5, optim="sgd",
        lr_scheduler_type="constant", max_grad_norm=0.0, use_cpu=True, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, train_sampling_strategy="sequential", seed=0,
    )  # fmt: skip
    args = TrainingArguments(
        "/tmp/hfplug_deepspeed_plain", deepspeed=deepspeed_config(3), **{**settings, **overrides}
    )
    trainer = Trainer(model, args, train_dataset=data)
    trainer.train()
    assert trainer.state.global_step == 3 and args.world_size == 2
    params = list(trainer.model.parameters())
    with deepspeed.zero.GatheredParameters(params):
        full = torch.cat([p.detach().reshape(-1).clone() for p in params])
    losses = torch.tensor([h["loss"] for h in trainer.state.log_history if "loss" in h])
    torch.save({"full": full, "losses": losses}, out / f"{name}_rank{args.process_index}.pt")
finish_distributed()
