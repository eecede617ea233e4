"""Choose the fine-tuning learning rate for the project's pre-trained Chinese BERT on a validation split.

The reproductions that start from ``hfplug.data.zh_bert_dir`` share one fine-tuning recipe (AdamW, weight decay
0.01, batch 32, linear decay after a 10% warm-up). This script picks its learning rate without looking at any test
split: the first 4,000 reviews of ``review_splits(4000, 1000, seed=0)`` (the reproductions' training split) are cut
into 3,200 for training and 800 for validation; each base (``char`` with BertTokenizer, ``word`` with its WoBERT
tokenizer) is fine-tuned with a new classification head for ``--steps`` steps at each learning rate, for each seed,
and its validation accuracy is recorded every ``--eval-every`` steps. A 4-layer model of the same config from random
weights (``scratch``) at its own lr grid is the reference a pre-trained start should beat.

    python examples/zh_bert_finetune_lr.py                 # char, word and scratch; ~25 min of CPU, one thread
    python examples/zh_bert_finetune_lr.py --bases char    # one base

Writes examples/results/zh_bert_finetune_lr.json (curves, the best lr per base by mean final validation accuracy)
and its plot zh_bert_finetune_lr.png (``--plot-only`` redraws it from the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertForSequenceClassification,
    get_linear_schedule_with_warmup,
)

from hfplug.data import encode_reviews, review_splits, zh_bert_dir, zh_bert_record

RESULTS = Path(__file__).resolve().parent / "results" / "zh_bert_finetune_lr.json"
BASES = ("char", "word", "scratch")


def encoded_splits(tokenizer, max_length: int, n_val: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """(ids, mask, labels) for the training part and the validation part of the reproductions' training split."""
    train_pairs, _ = review_splits(4000, 1000, seed=0)
    parts = {"train": train_pairs[:-n_val], "val": train_pairs[-n_val:]}
    out = {}
    for name, pairs in parts.items():
        batch, labels = encode_reviews(tokenizer, pairs, max_length)
        out[name] = (batch["input_ids"], batch["attention_mask"], labels)
    return out


def accuracy(model: torch.nn.Module, data: tuple[torch.Tensor, ...], batch_size: int = 200) -> float:
    ids, mask, labels = data
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            window = slice(start, start + batch_size)
            logits = model(input_ids=ids[window], attention_mask=mask[window]).logits
            correct += (logits.argmax(-1) == labels[window]).sum().item()
    model.train()
    return correct / len(labels)


def fine_tune(
    model, data, lr: float, seed: int, steps: int, eval_every: int, batch_size: int = 32
) -> list[float]:
    """AdamW (weight decay 0.01), 10% linear warm-up then linear decay; validation accuracy every ``eval_every``."""
    ids, mask, labels = data["train"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, round(0.1 * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    curve, cursor = [], 0
    model.train()
    for step in range(1, steps + 1):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(labels), generator=generator), 0
        pick = order[cursor : cursor + batch_size]
        cursor += batch_size
        loss = model(input_ids=ids[pick], attention_mask=mask[pick], labels=labels[pick]).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % eval_every == 0:
            curve.append(accuracy(model, data["val"]))
    return curve


def build(base: str, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)  # the new head (and, for scratch, every weight)
    if base == "scratch":
        return BertForSequenceClassification(AutoConfig.from_pretrained(zh_bert_dir("char"), num_labels=2))
    return BertForSequenceClassification.from_pretrained(zh_bert_dir(base), num_labels=2)


def plot(results: dict, eval_every: int, path: Path) -> None:
    """One panel per base: validation accuracy vs step for each lr (mean over seeds, the seeds' range shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), sharey=True, squeeze=False)
    every_lr = sorted({r["lr"] for record in results.values() for r in record["runs"]})
    for ax, record in zip(axes[0], results.values(), strict=True):
        for lr in sorted({r["lr"] for r in record["runs"]}):
            color = f"C{every_lr.index(lr)}"  # one colour per lr across the panels
            curves = torch.tensor([r["val_accuracy"] for r in record["runs"] if r["lr"] == lr])
            steps = [eval_every * (i + 1) for i in range(curves.shape[1])]
            ax.plot(steps, curves.mean(0), marker="o", markersize=3, color=color, label=f"lr {lr:g}")
            ax.fill_between(steps, curves.min(0).values, curves.max(0).values, color=color, alpha=0.15)
        name = "random init (char config)" if record["record"]["random_init"] else record["record"]["folder"]
        ax.set(title=name, xlabel="fine-tuning step (batch 32)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("validation accuracy (800 reviews)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES))
    parser.add_argument("--lrs", nargs="+", type=float, default=[3e-5, 1e-4, 2e-4, 5e-4])
    parser.add_argument("--scratch-lrs", nargs="+", type=float, default=[5e-4, 1e-3])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--steps", type=int, default=200, help="fine-tuning steps (3,200 reviews = 100 steps)"
    )
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--val", type=int, default=800, help="reviews held out of the training split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = parser.parse_args()
    if args.plot_only:
        stored = json.loads(args.output.read_text())
        plot(stored["bases"], stored["setup"]["eval_every"], args.output.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)

    results = {}
    load_start, date = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for base in args.bases:
        tokenizer = AutoTokenizer.from_pretrained(zh_bert_dir("char" if base == "scratch" else base))
        data = encoded_splits(tokenizer, args.max_length, args.val)
        lrs = args.scratch_lrs if base == "scratch" else args.lrs
        runs = []
        for lr in tqdm(lrs, desc=base):
            for seed in args.seeds:
                curve = fine_tune(build(base, seed), data, lr, seed, args.steps, args.eval_every)
                runs.append({"lr": lr, "seed": seed, "val_accuracy": curve})
                tqdm.write(f"{base} lr {lr:g} seed {seed}: " + " ".join(f"{a:.3f}" for a in curve))
        summary = {
            f"{lr:g}": {
                "final_mean": statistics.mean(r["val_accuracy"][-1] for r in runs if r["lr"] == lr),
                "final_min": min(r["val_accuracy"][-1] for r in runs if r["lr"] == lr),
            }
            for lr in lrs
        }
        results[base] = {
            "record": zh_bert_record("char" if base == "scratch" else base)
            | {"random_init": base == "scratch"},
            "tokens_per_example_cap": args.max_length,
            "runs": runs,
            "summary": summary,
            "best_lr": max(lrs, key=lambda lr: summary[f"{lr:g}"]["final_mean"]),
        }
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}  # another lane's bases
    results = previous.get("bases", {}) | results
    results = {base: results[base] for base in BASES if base in results}
    result = {
        "setup": {
            "data": "review_splits(4000, 1000, seed=0) training part only: "
            f"{4000 - args.val} train / {args.val} validation (the test split is not used)",
            "steps": args.steps,
            "eval_every": args.eval_every,
            "batch": 32,
            "max_length": args.max_length,
            "optimizer": "AdamW, weight decay 0.01, 10% linear warm-up then linear decay to 0",
            "seeds": args.seeds,
            "threads": args.threads,
        },
        "bases": results,
        "machine": {
            "platform": platform.platform(),
            "date": date,
            "load_average_start_end": [load_start, os.getloadavg()],
            "torch": torch.__version__,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    plot(results, args.eval_every, args.output.with_suffix(".png"))
    print(json.dumps({base: (r["best_lr"], r["summary"]) for base, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
