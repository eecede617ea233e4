"""Per-token overhead of the no-loop processors against transformers' RepetitionPenalty and NoRepeatNGram.

Two measurements, both in one run, settings interleaved and the median of the repeats kept:

1. in ``generate``: a tiny GPT-2 (2 layers, 64 wide, vocab 21,128) decodes 64 new tokens greedily for a
   batch of 8 at a final context of 256 / 1,024 tokens; overhead = (time - time with no processor) / 64.
2. isolated: one call of each processor on (8, context) ids and (8, 21,128) scores: random histories
   with flat scores (random logits: the nucleus holds most of the vocabulary), looping histories (an
   8-token block repeated: the worst case for DRY and the loop check) and random histories with peaked
   scores (logits x 6, a trained-LM-like distribution). The loop stop is timed on the detection it
   runs every step with the whole context generated. transformers' TopK / TopP / MinP warpers are timed
   beside our consistent ones.

    python plugins/noloop/bench/bench_overhead.py [--repeats 5]

Writes plugins/noloop/bench/results/overhead.json. The machine may be shared: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
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
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
)
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
OUT = Path(__file__).resolve().parent / "results" / "overhead.json"


def settings() -> dict[str, dict]:
    """name -> generate kwargs, or factories for our processors / criteria (fresh objects per call)."""
    floor = lambda: SelfTerminatingLogitsProcessor(1e-9, EOS)  # active every step, never decisive
    return {
        "none": {},
        "transformers repetition_penalty=1.2": {
            "repetition_penalty": 1.2,
            "isolated": lambda: [RepetitionPenaltyLogitsProcessor(1.2)],
        },
        "transformers no_repeat_ngram_size=3": {
            "no_repeat_ngram_size": 3,
            "isolated": lambda: [NoRepeatNGramLogitsProcessor(3)],
        },
        "transformers TopK (k=50), isolated only": {"isolated": lambda: [TopKLogitsWarper(50)]},
        "transformers TopP (p=0.9), isolated only": {"isolated": lambda: [TopPLogitsWarper(0.9)]},
        "transformers MinP (0.05), isolated only": {"isolated": lambda: [MinPLogitsWarper(0.05)]},
        "consistent_top_k (k=50)": {"procs": lambda: [ConsistentTopKLogitsWarper(50, EOS)]},
        "consistent_top_p (p=0.9)": {"procs": lambda: [ConsistentTopPLogitsWarper(0.9, EOS)]},
        "consistent_min_p (0.05)": {"procs": lambda: [ConsistentMinPLogitsWarper(0.05, EOS)]},
        "self_terminating": {"procs": lambda: [floor()]},
        "dry (window 1024)": {"procs": lambda: [DRYLogitsProcessor(protected_token_ids=[EOS])]},
        "loop_stop": {"stops": lambda: [LoopStoppingCriteria(eos_token_id=EOS)]},
        "NoLoopConfig() all defaults": {"config": lambda: NoLoopConfig(start=0, epsilon=1e-9).build(EOS)},
    }


class MeasureOnly(StoppingCriteria):
    """Runs a stopping criterion (its full per-step work) and ignores its verdict."""

    def __init__(self, criterion) -> None:
        self.criterion = criterion

    def __call__(self, input_ids, scores, **kwargs):
        self.criterion(input_ids, scores, **kwargs)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def run_generate(model, ids, spec) -> float:
    kwargs = {k: v for k, v in spec.items() if k not in ("procs", "stops", "config", "isolated")}
    procs, stops = LogitsProcessorList(), StoppingCriteriaList()
    if "config" in spec:
        procs, stops = spec["config"]()
    procs.extend(spec["procs"]() if "procs" in spec else [])
    stops.extend(spec["stops"]() if "stops" in spec else [])
    # the random model loops: let the criteria do their work every step but never cut a row
    stops = StoppingCriteriaList([MeasureOnly(stop) for stop in stops])
    began = time.perf_counter()
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        logits_processor=procs,
        stopping_criteria=stops,
        **kwargs,
    )
    elapsed = time.perf_counter() - began
    assert out.shape[1] == ids.shape[1] + NEW
    return elapsed


def work(component, ids: torch.Tensor, scores: torch.Tensor) -> None:
    """What a component computes per generated token, with the whole context counted as generated."""
    if isinstance(component, LoopStoppingCriteria):
        component.detector(ids, ids.shape[1])
    else:
        getattr(component, "reset", lambda: None)()
        component(ids, scores)


def isolated(spec, ids: torch.Tensor, scores: torch.Tensor, calls: int) -> float | None:
    """Median seconds of one call on fixed inputs (None for generate-only settings)."""
    make = spec.get("isolated") or spec.get("procs") or spec.get("stops")
    if "config" in spec:
        make = lambda: [*spec["config"]()[0], *spec["config"]()[1]]
    if make is None:
        return None
    components = make()
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        for c in components:
            work(c, ids, scores)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--isolated-contexts", type=int, nargs="+", default=[256, 1024, 4096])
    args = parser.parse_args()
    torch.set_num_threads(1)  # shared machine: fewer threads, steadier numbers
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=1100, eos_token_id=EOS)
    model = GPT2LMHeadModel(config).eval()
    specs = settings()
    in_generate = {name: spec for name, spec in specs.items() if set(spec) != {"isolated"}}
    report = {
        "setup": {
            "model": "GPT-2 2 layers, 64 wide, random weights",
            "batch": BATCH,
            "vocab": VOCAB,
            "new_tokens": NEW,
            "repeats": args.repeats,
            "threads": 1,
            "note": "shared 2-core CPU; medians of interleaved repeats; compare rows within this run",
        },
        "generate": {},
        "isolated": {},
    }
    with torch.inference_mode():
        for context in args.contexts:
            ids = torch.randint(3, VOCAB, (BATCH, context - NEW), generator=torch.Generator().manual_seed(1))
            run_generate(model, ids, specs["none"])  # warm-up
            times = {name: [] for name in in_generate}
            for _ in range(args.repeats):
                for name, spec in in_generate.items():
                    times[name].append(run_generate(model, ids, spec))
            base = statistics.median(times["none"])
            rows = {}
            for name, values in times.items():
                median = statistics.median(values)
                rows[name] = {
                    "s_per_generate": round(median, 4),
                    "ms_per_token": round(1000 * median / NEW, 3),
                    "overhead_ms_per_token": round(1000 * (median - base) / NEW, 3),
                    "ratio_vs_none": round(median / base, 3),
                }
                print(f"ctx {context:5d} {name:40s} {rows[name]}", flush=True)
            report["generate"][str(context)] = rows
        for context in args.isolated_contexts:
            generator = torch.Generator().manual_seed(2)
            random_ids = torch.randint(3, VOCAB, (BATCH, context), generator=generator)
            block = torch.randint(3, VOCAB, (BATCH, 8), generator=generator)
            looping_ids = block.repeat(1, context // 8 + 1)[:, :context]
            scores = torch.randn(BATCH, VOCAB, generator=generator)
            peaked = 6.0 * scores
            rows = {}
            for name, spec in specs.items():
                cases = {"random_ms": (random_ids, scores), "looping_ms": (looping_ids, scores)}
                cases["peaked_scores_ms"] = (random_ids, peaked)
                timed = {key: isolated(spec, i, s, 3 * args.repeats) for key, (i, s) in cases.items()}
                if None in timed.values():
                    continue
                rows[name] = {key: round(1000 * value, 3) for key, value in timed.items()}
                print(f"isolated ctx {context:5d} {name:40s} {rows[name]}", flush=True)
            report["isolated"][str(context)] = rows
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
