"""Stage 4: compress the fine-tuned classifier to half its depth with BERT-of-Theseus and export the successor."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import datasets
import torch
from hfplug_imbalance import LogitAdjustedLoss
from hfplug_theseus import ConstantReplacementScheduler, TheseusCallback, export_successor, theseus_wrap
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from .finetune import classification_trainer, test_metrics
from .settings import DemoSettings
from .training import is_main_process, run_training


def compress(
    predecessor: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: datasets.Dataset,
    test: datasets.Dataset,
    settings: DemoSettings,
    seed: int,
    out_dir: Path,
    progress: bool = True,
) -> tuple[PreTrainedModel, dict]:
    """Theseus: successor blocks start as copies of the first n, replace predecessor groups with p = 0.5 for
    70% of the steps, then train alone, with the predecessor's logit-adjusted loss (plain cross-entropy here
    would undo the long-tail correction); the exported plain successor is saved to ``out_dir`` and scored."""
    set_seed(seed)  # model initialisation draws from the global generator
    depth = predecessor.config.num_hidden_layers // 2
    wrapped = theseus_wrap(copy.deepcopy(predecessor), depth, seed=seed)
    scheduler = ConstantReplacementScheduler(0.5, replacing_steps=int(0.7 * settings.theseus_steps))
    trainer = classification_trainer(
        wrapped,
        tokenizer,
        train,
        test,
        settings,
        seed,
        out_dir / "trainer",
        progress,
        max_steps=settings.theseus_steps,
        callbacks=[TheseusCallback(scheduler)],
        compute_loss_func=LogitAdjustedLoss.from_dataset(train, tau=1.0),
    )
    seconds = run_training(trainer)["seconds"]
    successor = export_successor(trainer.model)
    if is_main_process():
        successor.save_pretrained(out_dir)
    scorer = classification_trainer(
        successor, tokenizer, train, test, settings, seed, out_dir / "eval", False
    )
    return successor, {**test_metrics(scorer), "train_seconds": seconds, "layers": depth}


@torch.no_grad()
def latency_ms(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, test: datasets.Dataset, repeats: int
) -> float:
    """Median wall time (ms) of one forward pass over the first 64 test examples, after one warm-up."""
    batch = DataCollatorWithPadding(tokenizer)(
        [
            {"input_ids": ids, "attention_mask": mask}
            for ids, mask in zip(test["input_ids"][:64], test["attention_mask"][:64], strict=True)
        ]
    )
    model.eval()
    model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
