"""Per-token overhead of the no-loop processors inside ``generate``, against transformers' own processors.

Setup (issue #7): a tiny GPT-2 (2 layers, 64 wide, random weights, vocab 21,128) decodes 64 new tokens
greedily for a batch of 8 at a final context of 256 / 1,024 / 4,096 tokens, one CPU thread.

Direct measurement (the verdict): every processor and stopping criterion under test runs inside a timing
wrapper (``hfplug_noloop._timing.timed``: same arguments, same output, same signature for
``LogitsProcessorList``) that records the thread's CPU time (``time.thread_time_ns``) and the wall time
(``time.perf_counter_ns``) of each of its calls. A component's cost in a step is its own call time (the sum
over its parts: a ``NoLoopConfig`` build's processor and stopping criterion); per ``generate`` call the
median over the 64 steps, per setting the median over repeats, with the IQR over repeats and the IQR over
all steps (``direct_*`` in the JSON; ``direct_cpu_*`` from the CPU clock decides the goals:
<= 0.25 ms/token, and <= 0.5x the transformers counterpart, as the median over repeats of the paired ratio).
With contexts 1,024 and a longer one in the same run, ``flatness`` gives each component's longer / 1,024 ratio.

Paired differences (shows that nothing else is added, e.g. by ``generate`` around the calls): a probe
processor placed first records a timestamp at every decoding step, so a step time covers the whole step
(model forward, every processor, argmax, stopping criteria) and the prefill is left out; the step time of
one ``generate`` call is the median of its 63 step intervals, by the wall clock and by the thread's CPU
time (``cpu_*``). Every repeat runs all settings once, in a fresh random order; the overhead of a setting
in a repeat is its step time minus the step time of "none" in the same repeat. The JSON gives, per
setting, the median and the interquartile range of those paired differences over the repeats; their IQR
is set by the variation of generate's own step, which is larger than most components' cost.

The random model loops under greedy decoding, so the generated tail is a loop: the worst case for DRY
and the loop check (their early exits do not fire). Rows never stop (no eos; the loop criteria run
their full check every step but their verdicts are ignored). transformers' TopK / TopP / MinP warpers
run as custom processors beside our consistent ones (greedy decoding ignores their output, not their
cost). The top-p rows sort the whole vocabulary every step (transformers with torch.sort, ours the values
only with NumPy on CPU): a random model's distribution is nearly flat, so the nucleus holds most tokens.

Two reference settings time the least such work costs inside ``generate`` in the same run: one read pass
over the scores (the row maxima) and one ``log_softmax`` (what an exact renormalisation, as the floor does
when it binds, cannot avoid).

An isolated section times one call of each component on fixed (8, 1,024) ids: random history with flat
scores, a looping history (an 8-token block repeated) and peaked scores (logits x 6).

    flock /tmp/hfplug/bench.lock python plugins/noloop/bench/bench_overhead.py \
        --contexts 256 1024 --repeats 15 12 --name overhead_256_1024
    flock /tmp/hfplug/bench.lock python plugins/noloop/bench/bench_overhead.py \
        --contexts 1024 4096 --repeats 7 7 --name overhead_4096

Writes plugins/noloop/bench/results/overhead.json and overhead.png (``--name`` changes the stem). The machine may be shared (load is
recorded): compare rows of one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch
from hfplug_noloop import (
    ConsistentMinPLogitsWarper,
    ConsistentTopKLogitsWarper,
    ConsistentTopPLogitsWarper,
    DRYLogitsProcessor,
    LoopStoppingCriteria,
    NoLoopComponents,
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
)
from hfplug_noloop._timing import timed
from hfplug_noloop.logits_process import LoopEOSLogitsProcessor
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

VOCAB, BATCH, NEW, EOS = 21128, 8, 64, 2
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 0.25
COUNTERPART_RATIO = 0.5  # ours <= 0.5x the transformers counterpart
FLAT_RATIO = 1.25  # direct ms/token at the longest context <= 1.25x that at 1,024
OURS = "ours"


def settings() -> dict[str, dict]:
    """name -> {"kind": "baseline" | "ours", "procs": factory, "stops": factory} (fresh objects per run); a
    ``procs`` factory may return a ``NoLoopComponents`` (processors and criteria of one build)."""

    def ours(procs=None, stops=None, counterpart=None) -> dict:
        return {"kind": OURS, "procs": procs, "stops": stops, "counterpart": counterpart}

    def baseline(procs) -> dict:
        return {"kind": "transformers", "procs": procs, "stops": None, "counterpart": None}

    def reference(procs) -> dict:
        return {"kind": "reference", "procs": procs, "stops": None, "counterpart": None}

    return {
        "none": {"kind": "none", "procs": None, "stops": None, "counterpart": None},
        "reference: one read pass over the scores (amax)": reference(lambda: [ReadPass()]),
        "reference: log_softmax of the scores": reference(lambda: [LogSoftmaxPass()]),
        "transformers RepetitionPenalty (1.2)": baseline(lambda: [RepetitionPenaltyLogitsProcessor(1.2)]),
        "transformers NoRepeatNGram (3)": baseline(lambda: [NoRepeatNGramLogitsProcessor(3)]),
        "transformers TopK (50)": baseline(lambda: [TopKLogitsWarper(50)]),
        "transformers TopP (0.9)": baseline(lambda: [TopPLogitsWarper(0.9)]),
        "transformers MinP (0.05)": baseline(lambda: [MinPLogitsWarper(0.05)]),
        "consistent_top_k (50)": ours(
            lambda: [ConsistentTopKLogitsWarper(50, EOS)], counterpart="transformers TopK (50)"
        ),
        "consistent_top_p (0.9)": ours(
            lambda: [ConsistentTopPLogitsWarper(0.9, EOS)], counterpart="transformers TopP (0.9)"
        ),
        "consistent_min_p (0.05)": ours(
            lambda: [ConsistentMinPLogitsWarper(0.05, EOS)], counterpart="transformers MinP (0.05)"
        ),
        # eps 1e-9: active every step, never binding (the usual case); eps 0.05: raises every row every step
        "self_terminating (not binding)": ours(lambda: [SelfTerminatingLogitsProcessor(1e-9, EOS)]),
        "self_terminating (binding every step)": ours(lambda: [SelfTerminatingLogitsProcessor(0.05, EOS)]),
        "dry (window 1024)": ours(lambda: [DRYLogitsProcessor(protected_token_ids=[EOS])]),
        "loop_stop": ours(stops=lambda: [LoopStoppingCriteria(eos_token_id=EOS)]),
        "loop eos (LoopEOSLogitsProcessor)": ours(lambda: [LoopEOSLogitsProcessor(EOS)]),
        "NoLoopConfig defaults (start=0, eps 1e-9)": ours(
            lambda: NoLoopConfig(start=0, epsilon=1e-9).build(EOS)
        ),
        "NoLoopConfig defaults, separate processors": ours(
            lambda: NoLoopConfig(start=0, epsilon=1e-9).build(EOS, fused=False)
        ),
    }


class ReadPass:
    """The least a processor that looks at every score does: one reduction over the rows (the row maxima),
    scores returned unchanged."""

    def __call__(self, input_ids, scores):
        scores.amax(dim=-1)
        return scores


class LogSoftmaxPass:
    """The least an exact renormalisation of the rows costs (the floor when it raises eos): one
    ``log_softmax``, scores returned unchanged."""

    def __call__(self, input_ids, scores):
        torch.log_softmax(scores, dim=-1)
        return scores


class Probe:
    """First processor of the list: records the time (wall clock and this thread's CPU time) at which each
    decoding step reaches the processors."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        return scores


class MeasureOnly(StoppingCriteria):
    """Runs a stopping criterion (its full per-step work) and ignores its verdict."""

    def __init__(self, criterion) -> None:
        self.criterion = criterion

    def __call__(self, input_ids, scores, **kwargs):
        self.criterion(input_ids, scores, **kwargs)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class LoopEOSWithoutEffect:
    """Runs LoopEOSLogitsProcessor every step (detection and masking) but passes the scores on unchanged,
    so the rows keep looping and the timing stays comparable."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, input_ids, scores):
        self.processor(input_ids, scores)
        return scores


def components(spec: dict) -> tuple[list, list]:
    """Fresh (processors, stopping criteria) of ``spec``."""
    procs = spec["procs"]() if spec["procs"] else []
    if isinstance(procs, NoLoopComponents):
        return list(procs.logits_processor), list(procs.stopping_criteria)
    return list(procs), list(spec["stops"]() if spec["stops"] else [])


def decode(model, ids: torch.Tensor, processors: list, criteria: list = (), new: int = NEW) -> torch.Tensor:
    """``new`` greedy tokens for every row of ``ids`` (never stopped early: no eos, ``min_new_tokens=new``)."""
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        logits_processor=LogitsProcessorList(processors),
        stopping_criteria=StoppingCriteriaList(list(criteria)),
    )


def step_ms(model, ids: torch.Tensor, spec: dict) -> tuple[float, float, list[float], list[float]]:
    """One greedy ``generate`` call with ``spec``'s processors and criteria: the median step time (ms) by the
    wall clock and by this thread's CPU time (one thread does all the work; time spent preempted by other
    processes does not count), then the components' own time per step (ms, wall and CPU: the sum over the
    timed components of their call in that step)."""
    probe = Probe()
    procs, stops = components(spec)
    procs = [timed(p) for p in procs]
    stops = [timed(s) for s in stops]
    clocks = [*procs, *stops]
    procs = [LoopEOSWithoutEffect(p) if isinstance(p.component, LoopEOSLogitsProcessor) else p for p in procs]
    stops = [MeasureOnly(s) for s in stops]
    out = decode(model, ids, [probe, *procs], stops)
    assert out.shape[1] == ids.shape[1] + NEW and len(probe.stamps) == NEW
    assert all(len(c.cpu_ns) == NEW for c in clocks)  # one call per step
    steps = [
        1000 * statistics.median(b - a for a, b in itertools.pairwise(stamps))
        for stamps in (probe.stamps, probe.cpu)
    ]
    direct = [
        [sum(step) / 1e6 for step in zip(*(getattr(c, ns) for c in clocks), strict=True)] or [0.0] * NEW
        for ns in ("wall_ns", "cpu_ns")
    ]
    return steps[0], steps[1], direct[0], direct[1]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def in_generate(model, specs: dict, context: int, repeats: int, order: random.Random) -> dict:
    ids = torch.randint(3, VOCAB, (BATCH, context - NEW), generator=torch.Generator().manual_seed(context))
    step_ms(model, ids, specs["none"])  # warm-up
    times: dict[str, list[tuple]] = {name: [] for name in specs}
    names = list(specs)
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            times[name].append(step_ms(model, ids, specs[name]))
    rows = {}
    for name, spec in specs.items():
        row = {"kind": spec["kind"]}
        for clock, prefix in ((0, ""), (1, "cpu_")):  # wall clock, then thread CPU time
            mine = [t[clock] for t in times[name]]
            overhead = [t - base[clock] for t, base in zip(mine, times["none"], strict=True)]
            q1, median, q3 = quartiles(overhead)
            row[f"{prefix}ms_per_token"] = round(statistics.median(mine), 4)
            row[f"{prefix}overhead_ms_per_token"] = round(median, 4)
            row[f"{prefix}overhead_iqr"] = [round(q1, 4), round(q3, 4)]
            if spec["counterpart"]:
                extra = [t - c[clock] for t, c in zip(mine, times[spec["counterpart"]], strict=True)]
                row[f"{prefix}minus_counterpart_ms_per_token"] = round(statistics.median(extra), 4)
        for clock, prefix in ((2, "direct_"), (3, "direct_cpu_")):  # the components' own calls
            calls = [statistics.median(t[clock]) for t in times[name]]  # per generate call: median step
            row[f"{prefix}ms_per_token"] = round(statistics.median(calls), 4)
            row[f"{prefix}iqr_repeats"] = [round(q, 4) for q in quartiles(calls)[::2]]
            row[f"{prefix}iqr_steps"] = [
                round(q, 4) for q in quartiles([s for t in times[name] for s in t[clock]])[::2]
            ]
        if spec["counterpart"]:
            row["counterpart"] = spec["counterpart"]
            paired = [
                statistics.median(t[3]) / statistics.median(c[3])
                for t, c in zip(times[name], times[spec["counterpart"]], strict=True)
            ]
            row["direct_cpu_ratio_to_counterpart"] = round(statistics.median(paired), 4)
            row["direct_cpu_ratio_iqr"] = [round(q, 4) for q in quartiles(paired)[::2]]
        if spec["kind"] == OURS:
            row["verdict"] = verdict(row)
        rows[name] = row
        print(f"ctx {context:5d} {name:44s} {row}", flush=True)
    return rows


def verdict(row: dict) -> dict:
    """The issue's goals from the direct CPU measurement: <= TARGET_MS per token, and <= COUNTERPART_RATIO x
    the transformers counterpart (paired per repeat) where there is one."""
    out = {"meets_target": row["direct_cpu_ms_per_token"] <= TARGET_MS}
    if "direct_cpu_ratio_to_counterpart" in row:
        out["meets_counterpart_ratio"] = row["direct_cpu_ratio_to_counterpart"] <= COUNTERPART_RATIO
    return out


def flatness(report: dict) -> dict:
    """Per component: its direct CPU ms/token at the longest context over that at 1,024 (same run); flat
    when the ratio is <= FLAT_RATIO (the windowed components read at most 1,024 tokens whatever the
    context)."""
    contexts = report["generate"]
    longest = max(contexts, key=int)
    out = {}
    for name, row in contexts[longest].items():
        if row["kind"] == "none":
            continue
        ratio = row["direct_cpu_ms_per_token"] / contexts["1024"][name]["direct_cpu_ms_per_token"]
        out[name] = {"ratio": round(ratio, 3), "flat": ratio <= FLAT_RATIO}
    return {"contexts": ["1024", longest], "max_ratio": FLAT_RATIO, "components": out}


def isolated(specs: dict, calls: int) -> dict:
    """Median ms of one call on fixed (8, 1,024) inputs: random / looping history, flat / peaked scores."""
    generator = torch.Generator().manual_seed(2)
    random_ids = torch.randint(3, VOCAB, (BATCH, 1024), generator=generator)
    block = torch.randint(3, VOCAB, (BATCH, 8), generator=generator)
    looping_ids = block.repeat(1, 1024 // 8)
    scores = torch.randn(BATCH, VOCAB, generator=generator)
    cases = {"random_ms": (random_ids, scores), "looping_ms": (looping_ids, scores)}
    cases["peaked_scores_ms"] = (random_ids, 6.0 * scores)
    rows = {}
    for name, spec in specs.items():
        if name == "none":
            continue
        procs, stops = components(spec)
        row = {}
        for case, (ids, case_scores) in cases.items():
            times = []
            for _ in range(calls if "top_p" not in name and "TopP" not in name else max(3, calls // 5)):
                fresh = case_scores.clone()  # a new tensor each call, as in generate
                began = time.perf_counter()
                for component in (*procs, *stops):
                    getattr(component, "reset", lambda: None)()  # every call starts a generation
                    if isinstance(component, LoopStoppingCriteria):
                        component.detector(ids, ids.shape[1])  # the check as if all 1,024 were generated
                    elif isinstance(component, LoopEOSLogitsProcessor):
                        component.detector(ids, ids.shape[1])
                    else:
                        component(ids, fresh)
                times.append(time.perf_counter() - began)
            row[case] = round(1000 * statistics.median(times), 4)
        rows[name] = row
        print(f"isolated {name:44s} {row}", flush=True)
    return rows


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contexts = list(report["generate"])
    names = [n for n in report["generate"][contexts[0]] if n != "none"]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(contexts)
    for i, context in enumerate(contexts):
        rows = report["generate"][context]
        medians = [max(rows[n]["direct_cpu_ms_per_token"], 1e-3) for n in names]
        low = [
            m - max(rows[n]["direct_cpu_iqr_repeats"][0], 1e-3) for m, n in zip(medians, names, strict=True)
        ]
        high = [
            max(rows[n]["direct_cpu_iqr_repeats"][1], 1e-3) - m for m, n in zip(medians, names, strict=True)
        ]
        x = [j + (i - (len(contexts) - 1) / 2) * width for j in range(len(names))]
        ax.bar(
            x,
            medians,
            width,
            yerr=[[max(v, 0) for v in low], [max(v, 0) for v in high]],
            label=f"context {context}",
        )
    ax.axhline(TARGET_MS, color="k", linestyle="--", linewidth=1, label=f"target {TARGET_MS} ms/token")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("own CPU ms per token, log scale\n(median, IQR over repeats)")
    ax.set_title(
        "Per-token cost of each component in generate(): batch 8, vocab 21,128, tiny GPT-2, 1 thread"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_or_replot(parser: argparse.ArgumentParser, name: str, plot) -> argparse.Namespace | None:
    """``parser``'s arguments plus ``--name`` (results/<name>.json and .png) and ``--replot``; with ``--replot``
    redraws the PNG from the JSON with ``plot(report, path)`` and returns None."""
    parser.add_argument("--name", default=name, help="results/<name>.json and .png")
    parser.add_argument("--replot", action="store_true", help="redraw <name>.png from <name>.json, no timing")
    args = parser.parse_args()
    if not args.replot:
        return args
    plot(json.loads((RESULTS / f"{args.name}.json").read_text()), RESULTS / f"{args.name}.png")
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, nargs="+", default=[15, 15, 7], help="one per context")
    parser.add_argument("--isolated-calls", type=int, default=50)
    args = parse_or_replot(parser, "overhead", plot)
    if args is None:
        return
    repeats = (
        args.repeats if len(args.repeats) == len(args.contexts) else args.repeats[:1] * len(args.contexts)
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=max(args.contexts), eos_token_id=EOS
    )
    model = GPT2LMHeadModel(config).eval()
    specs = settings()
    report = {
        "setup": {
            "model": "GPT-2 2 layers, 64 wide, random weights, sdpa attention",
            "batch": BATCH,
            "vocab": VOCAB,
            "new_tokens": NEW,
            "contexts": args.contexts,
            "repeats": dict(zip(map(str, args.contexts), repeats, strict=True)),
            "threads": 1,
            "method": "direct_*: every component under test in a timing wrapper recording each call's wall "
            "(perf_counter_ns) and thread CPU time (thread_time_ns); per generate call the median over steps of the "
            "components' own time per step, per setting the median and IQR over repeats (and the IQR over all "
            "steps); the verdict uses direct_cpu_*. Paired columns: probe timestamps per step; per call the median "
            "step; per setting the median and IQR over repeats of (step - step of 'none' in the same repeat); "
            "settings shuffled every repeat; cpu_*: the same from this thread's CPU time (time.thread_time)",
            "counterpart_ratio_goal": COUNTERPART_RATIO,
            "target_ms_per_token": TARGET_MS,
            "load_before": os.getloadavg(),
            "torch": torch.__version__,
        },
        "generate": {},
    }
    began = time.perf_counter()
    with torch.inference_mode():
        for context, count in zip(args.contexts, repeats, strict=True):
            report["generate"][str(context)] = in_generate(
                model, specs, context, count, random.Random(context)
            )
        report["isolated_ctx1024"] = isolated(specs, args.isolated_calls)
    if "1024" in report["generate"] and max(args.contexts) > 1024:
        report["flatness"] = flatness(report)
    report["setup"]["load_after"] = os.getloadavg()
    report["setup"]["wall_s"] = round(time.perf_counter() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    plot(report, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.json and .png in {report['setup']['wall_s']} s")


if __name__ == "__main__":
    main()
