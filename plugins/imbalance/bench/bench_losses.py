"""Forward+backward time and peak extra memory of each loss on logits [8192, 1000], against F.cross_entropy.

Every loss runs in the same process with a fixed number of threads (1: the machine is shared), in
``--repeats`` rounds; each round runs every case once, in a freshly shuffled order, so that the baseline and
the losses see the same load. Time ratio: the median over rounds of (loss time / F.cross_entropy time in the
same round); the median and minimum milliseconds and the ratio of minimum times are saved too. The 1-minute load average before and after
the run is recorded. Memory: peak bytes allocated during one forward+backward (the logits' gradient
included), from the PyTorch profiler's allocation events, in units of the logits tensor. Writes
bench/results/bench_losses.json.

    flock /tmp/hfplug/bench.lock python plugins/imbalance/bench/bench_losses.py [--rows 8192 --classes 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hfplug_imbalance import (
    BalancedSoftmaxLoss,
    DiceLoss,
    F1WeightedCrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    MultiLabelCategoricalCrossEntropyLoss,
    WeightedCrossEntropyLoss,
)
from torch.profiler import ProfilerActivity, profile

RESULTS = Path(__file__).with_name("results")
# issue 4 targets: <= 1.5x for these, <= 3x for every other loss
FAST = {"weighted_ce", "logit_adjusted", "balanced_softmax"}


def make_cases(classes: int) -> dict[str, tuple[object, str]]:
    counts = torch.logspace(3, 0, classes)  # long tail: 1000 ... 1 examples
    return {
        "F.cross_entropy": (F.cross_entropy, "labels"),
        "F.binary_cross_entropy_with_logits": (
            lambda x, t: F.binary_cross_entropy_with_logits(x, t),
            "multi_hot",
        ),
        "weighted_ce": (WeightedCrossEntropyLoss(counts, "effective_number"), "labels"),
        "logit_adjusted": (LogitAdjustedLoss(counts, tau=1.0), "labels"),
        "balanced_softmax": (BalancedSoftmaxLoss(counts), "labels"),
        "focal (softmax, gamma=2, alpha)": (
            FocalLoss.from_dataset({i: float(c) for i, c in enumerate(counts)}),
            "labels",
        ),
        "focal (softmax, gamma=0.5)": (FocalLoss(gamma=0.5), "labels"),
        "ldam": (LDAMLoss(counts), "labels"),
        "dice (softmax, alpha=1)": (DiceLoss(alpha=1.0), "labels"),
        "f1_weighted_ce (softmax)": (F1WeightedCrossEntropyLoss(), "labels"),
        "weighted_ce + label_smoothing=0.1": (
            WeightedCrossEntropyLoss(counts, label_smoothing=0.1),
            "labels",
        ),
        "focal (sigmoid, gamma=2, alpha=0.25)": (FocalLoss(alpha=0.25, activation="sigmoid"), "multi_hot"),
        "dice (sigmoid)": (DiceLoss(activation="sigmoid"), "multi_hot"),
        "f1_weighted_ce (sigmoid)": (F1WeightedCrossEntropyLoss(activation="sigmoid"), "multi_hot"),
        "multilabel_ce": (MultiLabelCategoricalCrossEntropyLoss(), "multi_hot"),
    }


def step(fn, logits: torch.Tensor, targets: torch.Tensor) -> None:
    logits.grad = None
    fn(logits, targets).backward()


def peak_bytes(fn, logits: torch.Tensor, targets: torch.Tensor) -> int:
    logits.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(logits, targets).backward()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def plot(report: dict, path: Path) -> None:
    """Time ratio to F.cross_entropy (with the issue's targets) and peak memory, one bar per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"][::-1]
    names = [r["loss"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 6), sharey=True)
    colours = [
        "grey" if r["time_target"] is None else ("tab:green" if r["time_within_target"] else "tab:red")
        for r in rows
    ]
    left.barh(names, [r["time_ratio_vs_cross_entropy"] for r in rows], color=colours)
    left.plot([r["time_ratio_min_over_min"] for r in rows], names, "o", color="black", mfc="none", ms=5)
    for r_index, r in enumerate(rows):
        if r["time_target"] is not None:
            left.plot([r["time_target"]] * 2, [r_index - 0.4, r_index + 0.4], color="black", lw=1.5)
    left.set_xlabel(
        "time / F.cross_entropy: bars = median of same-round ratios,\n"
        "circles = ratio of minimum times, black lines = issue targets"
    )
    right.barh(names, [r["peak_memory_x_logits"] for r in rows], color="tab:blue")
    right.axvline(3.0, color="black", lw=1, ls="--")
    right.set_xlabel("peak memory in forward+backward\n(x logits, the gradient included)")
    load = report["load_average_1min"]
    fig.suptitle(
        f"logits {report['shape'][0]}x{report['shape'][1]} float32, {report['threads']} thread, "
        f"torch {report['torch']}, load {load['before']}->{load['after']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    logits = (3 * torch.randn(args.rows, args.classes)).requires_grad_(True)
    inputs = {
        "labels": torch.randint(0, args.classes, (args.rows,)),
        "multi_hot": (torch.rand(args.rows, args.classes) < 0.01).float(),
    }
    cases = make_cases(args.classes)
    for fn, kind in cases.values():  # warm-up
        step(fn, logits, inputs[kind])
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(args.repeats):
        shuffle(order)
        for name in order:
            fn, kind = cases[name]
            start = time.perf_counter()
            step(fn, logits, inputs[kind])
            times[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()[0]
    logits_bytes = logits.numel() * logits.element_size()

    def ratio(name: str, baseline: str) -> float:
        return statistics.median(t / b for t, b in zip(times[name], times[baseline], strict=True))

    rows = []
    for name, (fn, kind) in cases.items():
        vs_ce = ratio(name, "F.cross_entropy")
        limit = None if name.startswith("F.") else (1.5 if name in FAST else 3.0)
        rows.append(
            {
                "loss": name,
                "median_ms": round(1e3 * statistics.median(times[name]), 2),
                "min_ms": round(1e3 * min(times[name]), 2),
                "time_ratio_vs_cross_entropy": round(vs_ce, 2),
                # element-wise (sigmoid / multi-label) losses: the like-for-like baseline is BCE
                "time_ratio_vs_bce": (
                    round(ratio(name, "F.binary_cross_entropy_with_logits"), 2)
                    if kind == "multi_hot"
                    else None
                ),
                # the least-disturbed round of each, for comparison with the paired median above
                "time_ratio_min_over_min": round(min(times[name]) / min(times["F.cross_entropy"]), 2),
                "time_target": limit,
                "time_within_target": None if limit is None else vs_ce <= limit,
                "peak_memory_x_logits": round(peak_bytes(fn, logits, inputs[kind]) / logits_bytes, 2),
            }
        )
    report = {
        "shape": [args.rows, args.classes],
        "dtype": "float32",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "note": "shared 2-core CPU machine; ratios are medians of per-round ratios from one run in shuffled "
        "order. Peak memory counts every allocation during forward+backward, including the logits' gradient "
        "(1.0x) that any loss needs.",
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_losses.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, RESULTS / "bench_losses.png")
    width = max(len(r["loss"]) for r in rows)
    print(
        f"{'loss':<{width}}  {'ms':>8}  {'x CE':>6}  {'x BCE':>6}  {'target':>6}  {'peak mem (x logits)':>19}"
    )
    for r in rows:
        target = "" if r["time_target"] is None else f"<={r['time_target']}"
        vs_bce = "" if r["time_ratio_vs_bce"] is None else f"{r['time_ratio_vs_bce']:.2f}"
        print(
            f"{r['loss']:<{width}}  {r['median_ms']:>8.1f}  {r['time_ratio_vs_cross_entropy']:>6.2f}  {vs_bce:>6}  "
            f"{target:>6}  {r['peak_memory_x_logits']:>19.2f}"
        )


if __name__ == "__main__":
    main()
