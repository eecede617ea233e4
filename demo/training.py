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


def configure_attention(
    model: PreTrainedModel, attention: str, nb_features: int | None = None
) -> PreTrainedModel:
    """Store the FAVOR+ settings in ``model.config`` when ``attention`` is "favor" (saved with the model):
    ``FavorConfig(nb_features=...)`` for a new model, the loaded ones (``nb_features=None``) after
    ``from_pretrained``. Training a FAVOR+ model needs this first (the seed and redraw count then travel with
    checkpoints)."""
    if attention == "favor":
        from hfplug_favor import FavorConfig, get_favor_config, set_favor_config

        config = get_favor_config(model) if nb_features is None else FavorConfig(nb_features=nb_features)
        set_favor_config(model, config)
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


def main_process_first():
    """Context manager: rank 0 runs the block first (e.g. writes files), then the other ranks."""
    return PartialState().main_process_first()


def wait_for_everyone() -> None:
    PartialState().wait_for_everyone()


def finish() -> None:
    """Under torchrun: wait for every rank, then close the process group (gloo aborts at exit otherwise)."""
    state = PartialState()
    if state.use_distributed:
        state.wait_for_everyone()
        state.destroy_process_group()
