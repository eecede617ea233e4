"""Theseus replacement and export under DeepSpeed ZeRO on 2 CPU ranks (run by test_theseus_deepspeed.py).

``torchrun --nproc_per_node 2 _theseus_deepspeed_script.py CHECKPOINT OUT STAGE...``: per stage, the
predecessor is loaded from CHECKPOINT after the ``TrainingArguments`` exist (ZeRO-3 partitions it at load,
as users load models), wrapped with ``theseus_wrap`` and trained ``STEPS`` SGD steps on the examples in
order; each rank writes ``OUT/z<stage>-rank<r>.pt``: the engine's ZeRO stage, the gate draws, the logged
losses, the gathered parameters and ``export_successor``'s state dict.
"""

from __future__ import annotations

import sys

import deepspeed
import torch
from accelerate.state import AcceleratorState
from hfplug_theseus import ConstantReplacementScheduler, TheseusCallback, export_successor, theseus_wrap
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hfplug.testing import deepspeed_config, finish_distributed

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
    config = deepspeed_config(stage)
    config["zero_optimization"]["stage3_param_persistence_threshold"] = (
        0  # else ZeRO-3 keeps tiny params whole
    )
    args = TrainingArguments(
        output_dir=f"{out}/z{stage}",
        deepspeed=config,
        per_device_train_batch_size=PER_DEVICE,
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
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
    record = {
        "world_size": args.world_size,
        "stage": trainer.deepspeed.zero_optimization_stage(),
        "partitioned": [p.numel() == 0 for p in model.parameters()],  # ZeRO-3: every rank holds a shard only
        "draws": draws,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "params": params,
        "export": exported.state_dict(),
    }
    AcceleratorState._reset_state()  # the next run's Trainer builds its own DeepSpeed plugin
    return record


def main(checkpoint: str, out: str, stages: list[str]) -> None:
    # With use_cpu=True accelerate starts torch.distributed but not deepspeed.comm, so zero.Init inside
    # from_pretrained would see one rank ("train_batch_size is not equal to ... 4 != 2 * 1 * 1")
    deepspeed.init_distributed(dist_backend="gloo")
    for stage in stages:
        record = run(int(stage), checkpoint, out)
        torch.save(record, f"{out}/z{stage}-rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    finish_distributed()
