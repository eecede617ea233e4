"""Reproduction for hfplug-noloop: do the no-loop processors end non-termination and cut repetition?

A small GPT-2-style character LM (bert-base-chinese vocabulary, compacted to the characters seen in
training) is trained for a few minutes on People's Daily sentences (one sentence per sample, ending
with [SEP] as eos). Continuations of held-out sentence openings are then decoded with greedy, beam 4,
top-k 2 and nucleus 0.4, their consistent / floor / DRY / loop-stop variants and transformers'
repetition_penalty=1.2 and no_repeat_ngram_size=3. For each decoding variant: non-termination ratio at the cap,
rows cut by the loop stop, rep-4, distinct-2, loop rate and the model's own perplexity of the generated text.

    python examples/noloop_peoples_daily.py            # default: ~10 CPU minutes
    python examples/noloop_peoples_daily.py --full     # 4,000 steps, 1,000 prompts, cap 500
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from hfplug_noloop import (
    ConsistentTopKLogitsWarper,
    ConsistentTopPLogitsWarper,
    DRYLogitsProcessor,
    LoopStoppingCriteria,
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
    metrics,
)
from transformers import BertTokenizer, GPT2Config, GPT2LMHeadModel, LogitsProcessorList

from hfplug.data import bert_chinese_vocab_dir, load_peoples_daily

RESULTS = Path(__file__).resolve().parent / "results" / "noloop_peoples_daily.json"
PAD, EOS, BOS = 0, 1, 2  # compact ids of [PAD], [SEP], [CLS]


def sentences() -> list[str]:
    out = []
    for line in load_peoples_daily():
        out += [s + "。" for s in line.split("。") if 8 <= len(s) <= 60]
    return out


def encode(texts: list[str], tokenizer, mapping: dict[int, int] | None):
    """bert-base-chinese ids, then compact ids (a mapping is built when none is given)."""
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if mapping is None:
        mapping = {tokenizer.pad_token_id: PAD, tokenizer.sep_token_id: EOS, tokenizer.cls_token_id: BOS}
        for row in ids:
            for i in row:
                mapping.setdefault(i, len(mapping))
        mapping.setdefault(tokenizer.unk_token_id, len(mapping))
    unk = mapping[tokenizer.unk_token_id]
    return [[mapping.get(i, unk) for i in row] for row in ids], mapping


def train(samples: list[list[int]], vocab: int, steps: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_positions=640, n_embd=128, n_layer=2, n_head=4, bos_token_id=BOS, eos_token_id=EOS
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps)))
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = [samples[i] for i in torch.randint(len(samples), (32,), generator=generator).tolist()]
        width = max(len(s) for s in batch) + 2
        ids = torch.full((len(batch), width), PAD)
        for row, s in enumerate(batch):
            ids[row, : len(s) + 2] = torch.tensor([BOS, *s, EOS])
        labels = ids.masked_fill(ids == PAD, -100)
        loss = model(input_ids=ids, attention_mask=(ids != PAD).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}", flush=True)
    return model.eval()


def variants(cap: int) -> dict[str, dict]:
    """Decoding variants: generate kwargs plus our processors / criteria (built fresh per call)."""
    eps, start = 0.01, 40  # greedy ends within 40 + 69 = 109 tokens, below the cap
    floor = lambda: SelfTerminatingLogitsProcessor(eps, EOS, start=start)
    dry = lambda: DRYLogitsProcessor(protected_token_ids=[EOS, PAD, BOS])
    stop = lambda: LoopStoppingCriteria(eos_token_id=EOS)
    greedy, beam = {"do_sample": False}, {"do_sample": False, "num_beams": 4}
    # top_k=0: transformers 5 otherwise adds its default top_k=50 warper to every sampling call
    topk, nucleus = {"do_sample": True, "top_k": 2}, {"do_sample": True, "top_k": 0, "top_p": 0.4}
    sampled = {"do_sample": True, "top_k": 0}
    full = lambda: NoLoopConfig(epsilon=eps, start=start, protected_token_ids=(PAD, BOS)).build(EOS)
    return {
        "greedy": dict(kw=greedy),
        "greedy+floor": dict(kw=greedy, procs=[floor]),
        "greedy+dry": dict(kw=greedy, procs=[dry]),
        "greedy+loop_stop": dict(kw=greedy, stops=[stop]),
        "greedy+noloop (dry+loop_stop+floor)": dict(kw=greedy, config=full),
        "greedy+repetition_penalty=1.2": dict(kw={**greedy, "repetition_penalty": 1.2}),
        "greedy+no_repeat_ngram_size=3": dict(kw={**greedy, "no_repeat_ngram_size": 3}),
        "beam4": dict(kw=beam),
        "beam4+floor": dict(kw=beam, procs=[floor]),
        "beam4+dry": dict(kw=beam, procs=[dry]),
        "beam4+loop_stop": dict(kw=beam, stops=[stop]),
        "top-k 2": dict(kw=topk),
        "consistent top-k 2": dict(kw=sampled, procs=[lambda: ConsistentTopKLogitsWarper(2, EOS)]),
        "consistent top-k 2+floor": dict(
            kw=sampled, procs=[lambda: ConsistentTopKLogitsWarper(2, EOS), floor]
        ),
        "nucleus 0.4": dict(kw=nucleus),
        "consistent nucleus 0.4": dict(kw=sampled, procs=[lambda: ConsistentTopPLogitsWarper(0.4, EOS)]),
        "consistent nucleus 0.4+dry+loop_stop": dict(
            kw=sampled, procs=[dry, lambda: ConsistentTopPLogitsWarper(0.4, EOS)], stops=[stop]
        ),
    }


@torch.no_grad()
def perplexity(model, prompts: list[list[int]], outputs: list[list[int]]) -> float:
    """exp(mean NLL) of the generated tokens (eos included when emitted) given their prompt."""
    nll, count = 0.0, 0
    for start in range(0, len(prompts), 64):
        rows = [
            [BOS, *p, *o]
            for p, o in zip(prompts[start : start + 64], outputs[start : start + 64], strict=True)
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD)
        labels = torch.full((len(rows), width), -100)
        for i, (r, p) in enumerate(zip(rows, prompts[start : start + 64], strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, len(p) + 1 : len(r)] = torch.tensor(r[len(p) + 1 :])
        logits = model(input_ids=ids, attention_mask=(ids != PAD).long()).logits[:, :-1]
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, reduction="sum", ignore_index=-100
        )
        nll += loss.item()
        count += int((target != -100).sum())
    return math.exp(nll / max(count, 1))


def decode(model, prompts: list[list[int]], cap: int, spec: dict, seed: int, batch: int) -> dict:
    generated, reasons = [], {"eos": 0, "forced_eos": 0, "loop": 0, "max_length": 0}
    began = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        width = max(len(p) for p in chunk) + 1
        ids = torch.full((len(chunk), width), PAD)
        for i, p in enumerate(chunk):  # left padding
            ids[i, width - len(p) - 1 :] = torch.tensor([BOS, *p])
        if "config" in spec:
            components = spec["config"]()
            procs, stops = components
        else:
            components = None
            procs = LogitsProcessorList([make() for make in spec.get("procs", [])])
            stops = [make() for make in spec.get("stops", [])]
        torch.manual_seed(seed + start)
        out = model.generate(
            ids,
            attention_mask=(ids != PAD).long(),
            max_new_tokens=cap,
            pad_token_id=PAD,
            eos_token_id=EOS,
            logits_processor=procs,
            stopping_criteria=stops,
            **spec["kw"],
        )
        if components is not None:
            for reason in components.stop_reasons(out):
                reasons[reason] += 1
        for row in out[:, width:].tolist():
            while row and row[-1] == PAD:
                row.pop()
            generated.append(row)
    seconds = time.perf_counter() - began
    ended = metrics.truncate_at_eos(generated, EOS)
    with_eos = [g[: len(e) + 1] if len(e) < len(g) else e for g, e in zip(generated, ended, strict=True)]
    return {
        "non_termination": metrics.non_termination_ratio(generated, EOS, cap),
        "cut_by_loop_stop": sum(len(g) < cap and EOS not in g for g in generated) / len(generated),
        "rep_4": metrics.rep_n(ended, 4),
        "seq_rep_4": metrics.seq_rep_n(ended, 4),
        "distinct_2": metrics.distinct_n(ended, 2),
        "loop_rate": metrics.loop_rate(ended),
        "mean_length": sum(map(len, ended)) / len(ended),
        "perplexity": perplexity(model, prompts, with_eos),
        "stop_reasons": reasons if components is not None else None,
        "seconds": round(seconds, 1),
        "_outputs": with_eos,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="4,000 training steps, 1,000 prompts, cap 500")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--cap", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = args.steps or (4000 if args.full else 300)
    n_prompts = args.prompts or (1000 if args.full else 200)
    cap = args.cap or (500 if args.full else 128)
    torch.set_num_threads(1)  # the machine is shared: one thread avoids OpenMP oversubscription

    tokenizer = BertTokenizer.from_pretrained(bert_chinese_vocab_dir())
    texts = sentences()
    split = int(0.95 * len(texts))
    train_ids, mapping = encode(texts[:split], tokenizer, None)
    held_ids, _ = encode(texts[split:], tokenizer, mapping)
    inverse = {v: k for k, v in mapping.items()}
    began = time.perf_counter()
    model = train(train_ids, len(mapping), steps, args.seed)
    train_seconds = time.perf_counter() - began
    prompts = [s[:8] for s in held_ids if len(s) >= 16][:n_prompts]
    results = {}
    for name, spec in variants(cap).items():
        row = decode(model, prompts, cap, spec, args.seed, batch=100)
        outputs = row.pop("_outputs")
        row["sample"] = tokenizer.decode([inverse[t] for t in prompts[0] + outputs[0]])
        results[name] = row
        print(
            f"{name:40s} nonterm {row['non_termination']:.3f} cut {row['cut_by_loop_stop']:.3f} "
            f"rep4 {row['rep_4']:.3f} dist2 {row['distinct_2']:.3f} loops {row['loop_rate']:.3f} "
            f"ppl {row['perplexity']:.2f} len {row['mean_length']:.1f} ({row['seconds']} s)",
            flush=True,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {
            "steps": steps,
            "prompts": len(prompts),
            "cap": cap,
            "seed": args.seed,
            "vocab": len(mapping),
            "train_sentences": len(train_ids),
            "train_seconds": round(train_seconds, 1),
            "model": "GPT-2 2 layers, 128 wide, 4 heads",
            "floor": {"epsilon": 0.01, "start": 40},
            "dry": "multiplier 0.8, base 1.75, allowed_length 2, window 1024",
            "loop_stop": "periods 1..64, >= 4 copies and >= 16 tokens, window 512",
        },
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
