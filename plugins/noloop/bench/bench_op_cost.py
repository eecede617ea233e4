"""What one tensor operation costs inside ``generate``, against the same operation in a warm loop.

The no-loop components are chains of small tensor operations, so their cost per token is set by what one
operation costs between two forward passes. Each setting here is a processor that times exactly one
operation per decoding step (this thread's CPU time around that operation alone, ``time.thread_time_ns``),
in the same ``generate`` setup as ``bench_overhead.py`` (tiny GPT-2, batch 8, vocabulary 21,128, 64 new
tokens, final context 1,024, one thread). Operations on the scores read that step's fresh scores; the
small ones ((8, 660), (8, 1,608), (8,)) read tensors the processor allocated once, as a component's own
state. The same operation then runs back to back on the same inputs ("warm": caches and branch predictors
hot). Every repeat runs all settings in a fresh random order; per ``generate`` call the median over its 64
steps, per setting the median and IQR over repeats; "clock reads only" times an empty interval.

For scale, the run also times whole decoding steps of a GPT-2-small-shaped model (12 layers, 768 wide, random
weights) at the same batch, vocabulary and context: what a component's cost is a fraction of in real use.

``--compile`` adds a ``torch.compile``d log_softmax plus a per-row shift (the floor's renormalisation as one
compiled graph) beside the same two operations run eagerly; it needs a C++ compiler and ~20 s to compile.

    flock /tmp/hfplug/bench.lock python plugins/noloop/bench/bench_op_cost.py --repeats 7 --compile

Writes plugins/noloop/bench/results/op_cost.json and op_cost.png.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_overhead import BATCH, EOS, NEW, RESULTS, VOCAB, decode, parse_or_replot
from transformers import GPT2Config, GPT2LMHeadModel

CONTEXT = 1024
SETS, CANDIDATES, K = 660, 1608, 50  # the top-k warper's set maxima and candidates at k = 50 (see _selection)


def operations(compile_graph: bool) -> dict[str, Callable[[torch.Tensor], Callable[[], object]]]:
    """name -> factory: given this step's scores, the operation to time (a no-argument callable).

    Small inputs are made once per factory (a component's persistent state), not per step."""
    generator = torch.Generator().manual_seed(0)
    maxima = torch.randn(BATCH, SETS, generator=generator)
    candidates = torch.randn(BATCH, CANDIDATES, generator=generator)
    row_values = torch.randn(BATCH, generator=generator)
    shift = torch.randn(BATCH, 1, generator=generator)
    threshold = torch.full((BATCH, 1), 2.5)  # about the 50th largest of 21,128 standard normal scores
    ops = {
        "clock reads only": lambda s: lambda: None,
        "slice + reshape of the scores (a view, no data)": lambda s: (
            lambda: s[:, : 32 * SETS].reshape(BATCH, 32, SETS)
        ),
        "one column of the scores (scores[:, eos])": lambda s: lambda: s[:, EOS],
        "add on an (8, 660) tensor": lambda s: lambda: maxima.add(1.0),
        "8 floats to Python (.tolist())": lambda s: lambda: row_values.tolist(),
        "torch.topk, k = 50, over (8, 660)": lambda s: lambda: torch.topk(maxima, K, dim=-1, sorted=False),
        "torch.topk, k = 50, over (8, 1,608)": lambda s: (
            lambda: torch.topk(candidates, K, dim=-1, sorted=False)
        ),
        "amax over the scores (one read pass)": lambda s: lambda: s.amax(dim=-1),
        "full_like(scores, -inf) (one write pass)": lambda s: lambda: torch.full_like(s, -math.inf),
        "clone of the scores": lambda s: lambda: s.clone(),
        "masked_fill where below a threshold per row (transformers' warpers)": lambda s: (
            lambda: s.masked_fill(s < threshold, -math.inf)
        ),
        "log_softmax of the scores": lambda s: lambda: torch.log_softmax(s, dim=-1),
        "torch.topk, k = 50, over the scores": lambda s: lambda: torch.topk(s, K, dim=-1),
        "NumPy value sort of the scores": lambda s: lambda: np.sort(s.numpy(), axis=-1),
    }
    if compile_graph:
        compiled = torch.compile(_shifted_log_softmax, dynamic=False)
        compiled(torch.randn(BATCH, VOCAB), shift)  # compile outside the timing
        ops["log_softmax + row shift, eager"] = lambda s: lambda: _shifted_log_softmax(s, shift)
        ops["log_softmax + row shift, torch.compile"] = lambda s: lambda: compiled(s, shift)
    return ops


def _shifted_log_softmax(scores: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(scores, dim=-1) + shift


class OneOperation:
    """Processor that times one operation on each step's scores and passes the scores on unchanged."""

    def __init__(self, factory: Callable[[torch.Tensor], Callable[[], object]]) -> None:
        self.factory = factory
        self.us: list[float] = []

    def __call__(self, input_ids, scores):
        operation = self.factory(scores)
        began = time.thread_time_ns()
        operation()
        self.us.append((time.thread_time_ns() - began) / 1e3)
        return scores


def in_generate(model, ids: torch.Tensor, factory) -> float:
    """Median µs of the operation over the 64 decoding steps of one greedy ``generate`` call."""
    probe = OneOperation(factory)
    decode(model, ids, [probe])
    assert len(probe.us) == NEW
    return statistics.median(probe.us)


class Stamps:
    """Processor that records this thread's CPU time at every decoding step."""

    def __init__(self) -> None:
        self.ns: list[int] = []

    def __call__(self, input_ids, scores):
        self.ns.append(time.thread_time_ns())
        return scores


def gpt2_small_step_ms(steps: int) -> list[float]:
    """Thread CPU ms of ``steps`` decoding steps of a GPT-2-small-shaped model (12 layers, 768 wide, random
    weights), batch 8, vocabulary 21,128, ending at context 1,024 (the prefill is left out)."""
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=VOCAB, n_positions=CONTEXT)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(3, VOCAB, (BATCH, CONTEXT - steps - 1), generator=torch.Generator().manual_seed(3))
    stamps = Stamps()
    decode(model, ids, [stamps], new=steps + 1)
    return [(b - a) / 1e6 for a, b in itertools.pairwise(stamps.ns)]


def warm(factory, calls: int) -> list[float]:
    """µs of each of ``calls`` back-to-back runs of the operation on one (8, vocabulary) score tensor."""
    operation = factory(torch.randn(BATCH, VOCAB, generator=torch.Generator().manual_seed(1)))
    for _ in range(5):
        operation()
    times = []
    for _ in range(calls):
        began = time.thread_time_ns()
        operation()
        times.append((time.thread_time_ns() - began) / 1e3)
    return times


def quartiles(values: list[float]) -> list[float]:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [round(q1, 2), round(q3, 2)]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["operations"])
    rows = report["operations"]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(names) + 1.6))
    y = np.arange(len(names))
    ax.barh(
        y - 0.2, [max(rows[n]["generate_us"], 0.05) for n in names], 0.4, label="in generate (one per step)"
    )
    ax.barh(y + 0.2, [max(rows[n]["warm_us"], 0.05) for n in names], 0.4, label="warm loop")
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(250, color="k", linestyle="--", linewidth=1, label="0.25 ms (the per-token goal)")
    ax.set_xlabel("thread CPU µs per operation, log scale (median)")
    ax.set_title(
        "One tensor operation: inside generate() vs a warm loop\n(batch 8, vocabulary 21,128, 1 thread)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7, help="generate calls per operation")
    parser.add_argument("--warm-calls", type=int, default=200)
    parser.add_argument("--model-steps", type=int, default=8, help="GPT-2-small-shaped steps timed for scale")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile rows")
    args = parse_or_replot(parser, "op_cost", plot)
    if args is None:
        return
    if min(args.repeats, args.warm_calls, args.model_steps) < 2:
        parser.error(
            "--repeats, --warm-calls and --model-steps must be >= 2 (an IQR), got "
            f"{args.repeats}, {args.warm_calls} and {args.model_steps}"
        )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    began = time.perf_counter()
    ops = operations(args.compile)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=CONTEXT, eos_token_id=EOS
    )
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(3, VOCAB, (BATCH, CONTEXT - NEW), generator=torch.Generator().manual_seed(CONTEXT))
    order = random.Random(0)
    in_gen: dict[str, list[float]] = {name: [] for name in ops}
    with torch.inference_mode():
        in_generate(model, ids, ops["clock reads only"])  # first call: one-time set-up
        for repeat in range(args.repeats):
            names = list(ops)
            order.shuffle(names)
            for name in names:
                in_gen[name].append(in_generate(model, ids, ops[name]))
            print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
        warm_us = {name: warm(factory, args.warm_calls) for name, factory in ops.items()}
        model_steps = gpt2_small_step_ms(args.model_steps)
    report = {
        "setup": {
            "model": "GPT-2 2 layers, 64 wide, random weights, sdpa attention",
            "batch": BATCH,
            "vocab": VOCAB,
            "context": CONTEXT,
            "new_tokens": NEW,
            "threads": 1,
            "repeats": args.repeats,
            "warm_calls": args.warm_calls,
            "method": "in generate: a processor times one operation per decoding step (thread CPU time around "
            "the operation alone); per generate call the median over its steps, per operation the median and IQR "
            "over repeats, operations shuffled every repeat. warm: the same operation back to back on the same "
            "inputs, median and IQR over calls",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "date": datetime.date.today().isoformat(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "wall_s": round(time.perf_counter() - began, 1),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "operations": {
            name: {
                "generate_us": round(statistics.median(in_gen[name]), 2),
                "generate_iqr_repeats": quartiles(in_gen[name]),
                "warm_us": round(statistics.median(warm_us[name]), 2),
                "warm_iqr": quartiles(warm_us[name]),
                "ratio": round(statistics.median(in_gen[name]) / statistics.median(warm_us[name]), 2),
            }
            for name in ops
        },
        "gpt2_small_step": {
            "model": "GPT-2 12 layers, 768 wide, 12 heads, random weights, sdpa attention",
            "steps": args.model_steps,
            "ms": round(statistics.median(model_steps), 1),
            "iqr": quartiles(model_steps),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    plot(report, RESULTS / f"{args.name}.png")
    for name, row in report["operations"].items():
        print(
            f"{name:52s} generate {row['generate_us']:9.2f} us  warm {row['warm_us']:9.2f} us  x{row['ratio']}"
        )
    print(f"GPT-2-small-shaped step: {report['gpt2_small_step']['ms']} ms")
    print(f"wrote {RESULTS / args.name}.json and .png in {report['setup']['wall_s']} s")


if __name__ == "__main__":
    main()
