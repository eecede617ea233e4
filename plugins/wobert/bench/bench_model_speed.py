"""WoBERT's speed claim where the post makes it: a BERT-base-shaped model on word-level vs char-level input.

BertForSequenceClassification with BERT-base's shape (12 layers, hidden 768, 12 heads, FFN 3072, random
weights: timing needs no pre-training), once with the bert-base-chinese vocabulary (21,128, BertTokenizer) and
once with the WoBERT vocabulary (33,585, WoBertTokenizer). The same reviews as the reproduction
(``hfplug.data.review_splits(4000, 1000, seed=1234)``, the first ``--reviews`` training reviews, max length
128) are grouped by length (sorted by their char-level length, cut into batches of ``--batch-size``) and padded
per batch, so batch ``i`` holds the same reviews in both runs.

``--repeats`` x ``--batches-per-repeat`` batches, evenly spaced over the length range, are timed (a subset keeps
the run inside 15 minutes on a shared 2-core machine); each repeat gets batches from the whole range. Batch by
batch, for both vocabularies (which one goes first alternates): forward + backward (train mode), the AdamW step
on the gradients, and inference (eval mode, no grad). One torch thread; CPU time of the process (robust to other jobs on a shared
machine) and wall time are both recorded. Reported: examples/s per repeat, medians with quartiles, and the
word/char ratio of each repeat (same reviews), median with quartiles. Writes
plugins/wobert/bench/results/model_speed.json and model_speed.png.

    python plugins/wobert/bench/bench_model_speed.py [--reviews 512] [--batch-size 16] [--repeats 6]
        [--batches-per-repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from hfplug_wobert import WoBertTokenizer, build_wobert_vocab
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from hfplug.data import bert_chinese_vocab_dir, review_splits

RESULTS = Path(__file__).parent / "results"
VOCABS = ("char", "word")
MEASURES = ("forward_backward", "train_step", "inference")


def quartiles(values: list[float], digits: int = 3) -> dict[str, float | list[float]]:
    """Median and the interquartile range's ends."""
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return {"median": round(median, digits), "iqr": [round(q1, digits), round(q3, digits)]}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of the process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batches-per-repeat", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = [round(x, 2) for x in os.getloadavg()]

    texts = [text for text, _ in review_splits(4000, 1000, seed=1234)[0][: args.reviews]]
    tokenizers = {
        "char": BertTokenizer.from_pretrained(str(bert_chinese_vocab_dir())),
        "word": WoBertTokenizer(vocab=build_wobert_vocab(bert_chinese_vocab_dir())),
    }
    char_ids = tokenizers["char"](texts, truncation=True, max_length=args.max_length)["input_ids"]
    by_length = [texts[i] for i in sorted(range(len(texts)), key=lambda i: len(char_ids[i]))]
    starts = range(0, len(texts), args.batch_size)
    batches = {
        name: [
            tok(by_length[i : i + args.batch_size], truncation=True, max_length=args.max_length, padding=True,
                return_tensors="pt")
            for i in starts
        ]
        for name, tok in tokenizers.items()
    }  # fmt: skip
    n_batches, timed_batches = len(starts), args.repeats * args.batches_per_repeat
    if timed_batches > n_batches:
        raise ValueError(
            f"--repeats x --batches-per-repeat = {timed_batches} exceeds the {n_batches} batches"
        )
    spaced = [int((k + 0.5) * n_batches / timed_batches) for k in range(timed_batches)]
    plan = [spaced[r :: args.repeats] for r in range(args.repeats)]
    models, optimizers = {}, {}
    for name, tok in tokenizers.items():
        torch.manual_seed(0)
        models[name] = BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=2))
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-6)
    labels = torch.zeros(args.batch_size, dtype=torch.long)

    def forward_backward(name: str, batch) -> None:
        models[name].train()
        models[name](**batch, labels=labels[: len(batch["input_ids"])]).loss.backward()

    def step(name: str) -> None:
        optimizers[name].step()

    def inference(name: str, batch) -> None:
        models[name].eval()
        with torch.no_grad():
            models[name](**batch)

    def measure(name: str, batch) -> dict[str, tuple[float, float]]:
        fb = timed(lambda: forward_backward(name, batch))
        st = timed(lambda: step(name))
        optimizers[name].zero_grad(set_to_none=True)
        inf = timed(lambda: inference(name, batch))
        return {"forward_backward": fb, "train_step": (fb[0] + st[0], fb[1] + st[1]), "inference": inf}

    for name in VOCABS:  # warm-up: allocator, AdamW state
        measure(name, batches[name][0])

    repeats = []
    for chosen in plan:
        seconds = {name: {m: [0.0, 0.0] for m in MEASURES} for name in VOCABS}
        for i in chosen:
            for name in VOCABS if i % 2 == 0 else VOCABS[::-1]:
                for m, (cpu, wall) in measure(name, batches[name][i]).items():
                    seconds[name][m][0] += cpu
                    seconds[name][m][1] += wall
        examples = sum(len(batches["char"][i]["input_ids"]) for i in chosen)
        repeats.append(
            {
                "batches": chosen,
                "examples": examples,
                "tokens": {
                    n: sum(int(batches[n][i]["attention_mask"].sum()) for i in chosen) for n in VOCABS
                },
                "padded_tokens": {n: sum(batches[n][i]["input_ids"].numel() for i in chosen) for n in VOCABS},
                "cpu_s": {n: {m: round(seconds[n][m][0], 3) for m in MEASURES} for n in VOCABS},
                "wall_s": {n: {m: round(seconds[n][m][1], 3) for m in MEASURES} for n in VOCABS},
            }
        )
        print(json.dumps(repeats[-1]), flush=True)

    def per_repeat(clock: str, name: str, m: str) -> list[float]:
        return [r["examples"] / r[clock][name][m] for r in repeats]

    summary = {
        clock: {
            "examples_per_s": {
                name: {m: quartiles(per_repeat(clock, name, m), 2) for m in MEASURES} for name in VOCABS
            },
            "word_vs_char": {
                m: quartiles(
                    [
                        w / c
                        for w, c in zip(
                            per_repeat(clock, "word", m), per_repeat(clock, "char", m), strict=True
                        )
                    ]
                )
                for m in MEASURES
            },
        }
        for clock in ("cpu_s", "wall_s")
    }
    timed_examples = sum(r["examples"] for r in repeats)
    lengths = {
        name: {
            "tokens_per_example": round(
                sum(int(b["attention_mask"].sum()) for b in batches[name]) / len(texts), 2
            ),
            "padded_tokens_per_example": round(
                sum(b["input_ids"].numel() for b in batches[name]) / len(texts), 2
            ),
            "timed_tokens_per_example": round(sum(r["tokens"][name] for r in repeats) / timed_examples, 2),
            "timed_padded_tokens_per_example": round(
                sum(r["padded_tokens"][name] for r in repeats) / timed_examples, 2
            ),
        }
        for name in VOCABS
    }
    result = {
        "model": "BertForSequenceClassification, BERT-base shape (12 layers, hidden 768, 12 heads, FFN 3072), "
        "random weights",
        "parameters": {name: sum(p.numel() for p in models[name].parameters()) for name in VOCABS},
        "vocab_size": {name: len(tok) for name, tok in tokenizers.items()},
        "data": f"review_splits(4000, 1000, seed=1234): the first {len(texts)} training reviews, max length "
        f"{args.max_length}, sorted by char-level length into batches of {args.batch_size}, padded per batch",
        "settings": vars(args),
        "repeats": len(repeats),
        "lengths": lengths,
        "summary": summary,
        "runs": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "note": "shared machine: CPU time of the process is the primary clock, wall time is recorded too",
        },
    }
    path = RESULTS / "model_speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(result, path.with_suffix(".png"))
    print(json.dumps({"lengths": lengths, "summary": summary}, indent=2))


def plot(result: dict, path: Path) -> None:
    """Examples/s (median, quartiles as error bars) per measure, char vs word, CPU-time clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]["cpu_s"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for offset, name, color in ((-width / 2, "char", "tab:gray"), (width / 2, "word", "tab:blue")):
        stats = [summary["examples_per_s"][name][m] for m in MEASURES]
        medians = [s["median"] for s in stats]
        errors = [[s["median"] - s["iqr"][0] for s in stats], [s["iqr"][1] - s["median"] for s in stats]]
        xs = [i + offset for i in range(len(MEASURES))]
        bars = ax.bar(xs, medians, width, yerr=errors, capsize=4, color=color, label=name)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in medians], padding=3, fontsize=8)
    ax.set_xticks(range(len(MEASURES)), [m.replace("_", " ") for m in MEASURES])
    ax.set_ylabel("examples per CPU second (1 thread)")
    ax.legend()
    ratios = ", ".join(f"{m.replace('_', ' ')} {summary['word_vs_char'][m]['median']:.2f}x" for m in MEASURES)
    machine, lengths = result["machine"], result["lengths"]
    ax.set_title(
        f"BERT-base shape, {result['settings']['reviews']} reviews, {result['repeats']} repeats, "
        f"load {machine['loadavg_before'][0]} -> {machine['loadavg_after'][0]}; "
        f"tokens/example word {lengths['word']['tokens_per_example']} vs char {lengths['char']['tokens_per_example']}\n"
        f"word/char per repeat (goal 1.2x): {ratios}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
