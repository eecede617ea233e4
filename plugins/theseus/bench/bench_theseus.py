"""Benchmark: Theseus training step vs the predecessor's own fine-tuning step; exported successor latency.

Same batch, same process, interleaved repeats, median seconds. Writes bench/results/theseus_bench.json.

    python plugins/theseus/bench/bench_theseus.py [--repeats 7] [--batch 32] [--seq 128]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from hfplug_theseus import export_successor, theseus_wrap
from transformers import BertConfig, BertForSequenceClassification

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating between them so load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--successor-layers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=256,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        intermediate_size=1024,
        vocab_size=21128,
        num_labels=2,
    )
    predecessor = BertForSequenceClassification(config).train()
    theseus = theseus_wrap(copy.deepcopy(predecessor), args.successor_layers, seed=0).train()
    ids = torch.randint(1000, 21128, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (args.batch,))
    pred_opt = torch.optim.AdamW(predecessor.parameters(), lr=1e-4)
    thes_opt = torch.optim.AdamW([p for p in theseus.parameters() if p.requires_grad], lr=1e-4)
    step_counter = [0]

    def predecessor_step():
        pred_opt.zero_grad(set_to_none=True)
        predecessor(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        pred_opt.step()

    def theseus_step():
        theseus.theseus.set_step(step_counter[0], args.rate)  # a new draw every step, as in training
        step_counter[0] += 1
        thes_opt.zero_grad(set_to_none=True)
        theseus(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        thes_opt.step()

    train = interleaved({"predecessor_finetune": predecessor_step, "theseus": theseus_step}, args.repeats)
    train_median = {k: statistics.median(v) for k, v in train.items()}

    theseus.eval()
    successor = export_successor(theseus)
    predecessor.eval()
    latency = {}
    for batch in (1, args.batch):
        x, m = ids[:batch], mask[:batch]
        with torch.inference_mode():
            runs = interleaved(
                {
                    "predecessor": lambda x=x, m=m: predecessor(input_ids=x, attention_mask=m),
                    "successor": lambda x=x, m=m: successor(input_ids=x, attention_mask=m),
                },
                3 * args.repeats,
            )
        pred_t, succ_t = statistics.median(runs["predecessor"]), statistics.median(runs["successor"])
        latency[f"batch{batch}"] = {
            "predecessor_s": pred_t,
            "successor_s": succ_t,
            "ratio_successor_over_predecessor": succ_t / pred_t,
        }

    result = {
        "setup": {
            "model": "BertForSequenceClassification hidden 256, 4 heads, ffn 1024, vocab 21128, sdpa, float32",
            "predecessor_layers": args.layers,
            "successor_layers": args.successor_layers,
            "replacing_rate": args.rate,
            "batch": args.batch,
            "seq": args.seq,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, shared CPU (other jobs running); compare ratios, not absolutes",
            "torch": torch.__version__,
        },
        "train_step_median_s": train_median,
        "train_step_runs_s": train,
        "train_ratio_theseus_over_predecessor": train_median["theseus"]
        / train_median["predecessor_finetune"],
        "inference_latency": latency,
        "expected_inference_ratio_n_over_N": args.successor_layers / args.layers,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "theseus_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "train_step_runs_s"}, indent=2))


if __name__ == "__main__":
    main()
