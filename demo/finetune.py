"""Stage 3: fine-tune the pretrained base on long-tailed review sentiment.

Two runs from the same checkpoint, seed and data order: plain cross-entropy, and
``Trainer(callbacks=[FGM(...)], compute_loss_func=LogitAdjustedLoss.from_dataset(...))``.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from hfplug_adversarial import FGM
from hfplug_imbalance import LogitAdjustedLoss
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

import hfplug.metrics

from .settings import DemoSettings
from .training import run_training, training_arguments

METHODS = ("cross_entropy", "fgm_logit_adjusted")


def review_dataset(
    pairs: list[tuple[str, int]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> datasets.Dataset:
    texts, labels = zip(*pairs, strict=True)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({**encoded, "label": list(labels)})


def classification_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: datasets.Dataset,
    test: datasets.Dataset,
    settings: DemoSettings,
    seed: int,
    out_dir: Path,
    progress: bool = True,
    max_steps: int | None = None,
    **trainer_kwargs,
) -> Trainer:
    """A Trainer that scores with the shipped ``classification`` evaluate module (head/tail by train counts).

    Trains ``settings.finetune_epochs`` epochs, or ``max_steps`` optimizer steps when given.
    """
    counts = [train["label"].count(label) for label in range(model.config.num_labels)]
    length = {"max_steps": max_steps} if max_steps else {"num_train_epochs": settings.finetune_epochs}
    args = training_arguments(out_dir, seed, settings.finetune_lr, settings.batch_size, progress, **length)
    return Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=hfplug.metrics.classification_metrics(class_counts=counts),
        **trainer_kwargs,
    )


def test_metrics(trainer: Trainer) -> dict[str, float]:
    """``trainer.evaluate()`` without the ``eval_`` prefix and without its timings."""
    timings = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")
    metrics = {key.removeprefix("eval_"): value for key, value in trainer.evaluate().items()}
    return {key: value for key, value in metrics.items() if key not in timings}


def finetune(
    method: str,
    pretrained_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    train: datasets.Dataset,
    test: datasets.Dataset,
    settings: DemoSettings,
    seed: int,
    out_dir: Path,
    progress: bool = True,
) -> tuple[PreTrainedModel, dict]:
    """Fine-tune a fresh copy of the pretrained model with ``method`` (one of ``METHODS``); test metrics.

    The classifier keeps the base's softmax attention (sdpa): FAVOR+ swapped into this base approximates its
    peaked attention poorly at m = 256 (docs/plugins/favor.md), so the demo shows FAVOR+ in the causal LM."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    set_seed(seed)  # model initialisation draws from the global generator
    model = AutoModelForSequenceClassification.from_pretrained(
        pretrained_dir, num_labels=2, attn_implementation="sdpa"
    )
    extra = {}
    if method == "fgm_logit_adjusted":
        extra = {
            "callbacks": [FGM(epsilon=settings.fgm_epsilon, seed=seed)],
            "compute_loss_func": LogitAdjustedLoss.from_dataset(train, tau=1.0),
        }
    trainer = classification_trainer(
        model, tokenizer, train, test, settings, seed, out_dir, progress, **extra
    )
    seconds = run_training(trainer)["seconds"]
    return trainer.model, {**test_metrics(trainer), "train_seconds": seconds}
