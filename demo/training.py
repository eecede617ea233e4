"""What every training stage of the demo shares: arguments, the attention choice, rank handling."""

from __future__ import annotations

import time
from pathlib import Path

from accelerate import PartialState
from transformers import PreTrainedModel, Trainer, TrainingArguments

import hfplug

from .settings import ATTENTION_CHOICES


def attention_implementation(attention: str) -> str:
    """The ``attn_implementation`` value for ``attention`` ("favor" goes through the hfplug registry)."""
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got {attention!r}")
    return hfplug.use_attention("favor") if attention == "favor" else "sdpa"


def configure_attention(model: PreTrainedModel, attention: str, nb_features: int) -> PreTrainedModel:
    """Store ``FavorConfig(nb_features=...)`` in ``model.config`` when ``attention`` is "favor" (saved with the
    model, so the seed and redraw count travel with checkpoints); a FAVOR+ model needs this before training."""
    if attention == "favor":
        from hfplug_favor import FavorConfig, set_favor_config

        set_favor_config(model, FavorConfig(nb_features=nb_features))
    return model


def training_arguments(
    output_dir: Path, seed: int, learning_rate: float, batch_size: int, progress: bool = True, **kwargs
) -> TrainingArguments:
    """CPU training arguments: linear decay after 10% warm-up, no checkpoints, no external loggers."""
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=128,
        learning_rate=learning_rate,
        warmup_steps=0.1,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        **kwargs,
    )


def run_training(trainer: Trainer) -> dict:
    """``trainer.train()``: optimizer steps, first and last logged training loss, wall seconds."""
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "steps": result.global_step,
        "first_logged_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else result.training_loss,
        "seconds": seconds,
    }


def is_main_process() -> bool:
    return PartialState().is_main_process


def finish() -> None:
    """Under torchrun: wait for every rank, then close the process group (gloo aborts at exit otherwise)."""
    state = PartialState()
    if state.use_distributed:
        state.wait_for_everyone()
        state.destroy_process_group()
