"""``make report``: run every plugin's benchmark and reproduction, then regenerate ``docs/results.md``.

    python scripts/report.py                     # run every job (about an hour on 2 cores), then render
    python scripts/report.py --only favor noloop # run those sections' jobs, then render everything
    python scripts/report.py --render-only       # render docs/results.md from the JSON already on disk

Each section reads the JSON its jobs wrote and states, per claim: the anchor (published or baseline number),
our number, the ratio, the seeds and the command that reproduces it. A job that fails stops the report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.table import render as render_demo_table  # noqa: E402

RESULTS_PAGE = ROOT / "docs" / "results.md"
DEMO_PAGE = ROOT / "docs" / "demo.md"


@dataclass(frozen=True)
class Row:
    claim: str
    anchor: str
    ours: str
    ratio: str = ""
    seeds: str = ""


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    jobs: tuple[tuple[str, ...], ...]  # argument lists for the venv's python, run from the repository root
    rows: Callable[[], list[Row]]
    note: str = ""


def load(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def ratio(ours: float, anchor: float, digits: int = 2) -> str:
    return f"{ours / anchor:.{digits}f}x"


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# --- sections -------------------------------------------------------------------------------------------


def demo_rows() -> list[Row]:
    r = load("examples/results/demo.json")
    clf, gen, tok = r["classifiers"], r["generation"], r["tokenizers"]
    seed = str(r["seed"])
    return [
        Row(
            "tokens per character, People's Daily (WoBERT vs char BERT)",
            fmt(tok["char"]["peoples_daily"]),
            fmt(tok["word"]["peoples_daily"]),
            ratio(tok["word"]["peoples_daily"], tok["char"]["peoples_daily"]),
            seed,
        ),
        Row(
            "balanced accuracy, long-tailed reviews (FGM + logit-adjusted vs cross-entropy)",
            fmt(clf["cross_entropy"]["balanced_accuracy"]),
            fmt(clf["fgm_logit_adjusted"]["balanced_accuracy"]),
            ratio(clf["fgm_logit_adjusted"]["balanced_accuracy"], clf["cross_entropy"]["balanced_accuracy"]),
            seed,
        ),
        Row(
            "balanced accuracy, Theseus successor vs its predecessor",
            fmt(clf["fgm_logit_adjusted"]["balanced_accuracy"]),
            fmt(clf["theseus"]["balanced_accuracy"]),
            ratio(clf["theseus"]["balanced_accuracy"], clf["fgm_logit_adjusted"]["balanced_accuracy"]),
            seed,
        ),
        Row(
            "latency, one 64-review batch, successor vs predecessor (ms)",
            fmt(clf["fgm_logit_adjusted"]["latency_ms"], 1),
            fmt(clf["theseus"]["latency_ms"], 1),
            ratio(clf["theseus"]["latency_ms"], clf["fgm_logit_adjusted"]["latency_ms"]),
            seed,
        ),
        Row(
            f"greedy non-termination at {gen['max_new_tokens']} new tokens (no-loop vs plain)",
            fmt(gen["plain"]["non_termination"]),
            fmt(gen["noloop"]["non_termination"]),
            "",
            seed,
        ),
        Row(
            "greedy rep-4 (no-loop vs plain)",
            fmt(gen["plain"]["rep_4"]),
            fmt(gen["noloop"]["rep_4"]),
            ratio(gen["noloop"]["rep_4"], gen["plain"]["rep_4"]) if gen["plain"]["rep_4"] else "",
            seed,
        ),
    ]


def theseus_rows() -> list[Row]:
    bench = load("plugins/theseus/bench/results/theseus_bench.json")
    repro = load("examples/results/theseus_snownlp.json")
    runs = repro["runs"]
    seeds = ", ".join(str(run["seed"]) for run in runs)
    latency = bench["inference_latency"]
    return [
        Row(
            "train step, Theseus (p = 0.5) vs fine-tuning the 6-block predecessor (s)",
            fmt(bench["train_step_median_s"]["predecessor_finetune"], 2),
            fmt(bench["train_step_median_s"]["theseus"], 2),
            ratio(
                bench["train_step_median_s"]["theseus"], bench["train_step_median_s"]["predecessor_finetune"]
            ),
        ),
        Row(
            "inference batch 32 x 128, exported 3-block successor vs predecessor (s); expected n/N = 0.5",
            fmt(latency["batch32"]["predecessor_s"], 2),
            fmt(latency["batch32"]["successor_s"], 2),
            ratio(latency["batch32"]["successor_s"], latency["batch32"]["predecessor_s"]),
        ),
        Row(
            "accuracy, Theseus 3 blocks vs first 3 blocks fine-tuned (post: 59.36 vs 57.96 on IFLYTEK)",
            mean_sd([run["first3_finetuned_3"] for run in runs], 100, 2),
            mean_sd([run["theseus_3"] for run in runs], 100, 2),
            ratio(
                statistics.mean(run["theseus_3"] for run in runs),
                statistics.mean(run["first3_finetuned_3"] for run in runs),
                3,
            ),
            seeds,
        ),
    ]


def wobert_rows() -> list[Row]:
    bench = load("plugins/wobert/bench/results/tokenizers.json")
    repro = load("examples/results/wobert_snownlp.json")
    speed, lengths, summary = bench["speed"], bench["lengths_without_special_tokens"], repro["summary"]
    seeds = ", ".join(map(str, repro["settings"]["seeds"]))
    return [
        Row(
            "chars/s, WoBertTokenizer vs RoFormerTokenizer, same vocabulary (goal >= 4x)",
            f"{speed['roformer_same_vocab']['chars_per_s']:,}",
            f"{speed['wobert']['chars_per_s']:,}",
            ratio(speed["wobert"]["chars_per_s"], speed["roformer_same_vocab"]["chars_per_s"]),
        ),
        Row(
            "chars/s, WoBertTokenizer vs BertTokenizer char level (goal >= 0.75x)",
            f"{speed['bert_char']['chars_per_s']:,}",
            f"{speed['wobert']['chars_per_s']:,}",
            ratio(speed["wobert"]["chars_per_s"], speed["bert_char"]["chars_per_s"]),
        ),
        Row(
            "tokens per character, People's Daily (anchor: 0.742 word vs 0.996 char)",
            fmt(lengths["bert_char"]["tokens_per_char"]),
            fmt(lengths["wobert"]["tokens_per_char"]),
            ratio(lengths["wobert"]["tokens_per_char"], lengths["bert_char"]["tokens_per_char"]),
        ),
        Row(
            "review sentiment accuracy, word vs char vocabulary (post: equal accuracy, faster)",
            f"{summary['char']['accuracy_mean']:.3f} ± {summary['char']['accuracy_std']:.3f}",
            f"{summary['word']['accuracy_mean']:.3f} ± {summary['word']['accuracy_std']:.3f}",
            ratio(summary["word"]["accuracy_mean"], summary["char"]["accuracy_mean"], 3),
            seeds,
        ),
        Row(
            "training throughput (examples/s), word vs char",
            fmt(summary["char"]["train_examples_per_s_mean"], 1),
            fmt(summary["word"]["train_examples_per_s_mean"], 1),
            ratio(summary["word"]["train_examples_per_s_mean"], summary["char"]["train_examples_per_s_mean"]),
            seeds,
        ),
    ]


def adversarial_rows() -> list[Row]:
    bench = load("plugins/adversarial/bench/results/step_time.json")
    rows = [
        Row(
            f"{method} step, Trainer + callback vs plain Trainer step (target <= {target}x; hand loop {bench['hand_ratio'][method]:.2f}x)",
            "1.00x",
            "",
            f"{bench['trainer_ratio'][method]:.2f}x",
        )
        for method, target in bench["targets"].items()
    ]
    repro = load("examples/results/adversarial_snownlp_scaled_eps.json")
    seeds = ", ".join(map(str, repro["setup"]["seeds"]))
    summary = repro["summary"]
    for name, stats in summary.items():
        if name == "none":
            continue
        for split in ("clean", "robust"):
            base, ours = summary["none"][split], stats[split]
            rows.append(
                Row(
                    f"{split} accuracy, {name} vs no adversarial training (post: FGM +2 clean points)",
                    f"{base['mean']:.3f} ± {base['std']:.3f}",
                    f"{ours['mean']:.3f} ± {ours['std']:.3f}",
                    ratio(ours["mean"], base["mean"], 3),
                    seeds,
                )
            )
    return rows


def imbalance_rows() -> list[Row]:
    bench = load("plugins/imbalance/bench/results/bench_losses.json")
    rows = [
        Row(
            f"{r['loss']}: forward+backward time vs F.cross_entropy (target <= {r['time_target']}x)",
            "1.00x",
            "",
            f"{r['time_ratio_vs_cross_entropy']:.2f}x",
        )
        for r in bench["results"]
        if r["time_target"] is not None
    ]
    for path, label in (
        ("examples/results/imbalance_digits_longtail.json", "digits"),
        ("examples/results/imbalance_snownlp_longtail.json", "snownlp reviews"),
    ):
        repro = load(path)
        seeds = repro["setup"]["seeds"]
        for imbalance, losses in repro["summary"].items():
            run_seeds = seeds[imbalance] if isinstance(seeds, dict) else seeds
            base = losses["ce"]["balanced_accuracy"]
            for name in ("logit_adjusted", "balanced_softmax", "post_hoc"):
                ours = losses[name]["balanced_accuracy"]
                rows.append(
                    Row(
                        f"{label}, imbalance {imbalance}: balanced accuracy, {name} vs cross-entropy",
                        f"{base['mean']:.3f} ± {base['std']:.3f}",
                        f"{ours['mean']:.3f} ± {ours['std']:.3f}",
                        ratio(ours["mean"], base["mean"], 3),
                        ", ".join(map(str, run_seeds)),
                    )
                )
    return rows


def favor_rows() -> list[Row]:
    bench = load("plugins/favor/bench/results/favor_bench.json")
    timings = {(t["length"], t["causal"], t["backward"]): t for t in bench["timings"]}
    longest = max(length for length, _, _ in timings)
    rows = []
    for causal, backward, label in (
        (False, False, "forward"),
        (False, True, "fwd+bwd"),
        (True, False, "causal forward"),
        (True, True, "causal fwd+bwd"),
    ):
        t = timings[(longest, causal, backward)]
        key = ("causal_" if causal else "non_causal_") + ("fwd_bwd" if backward else "fwd")
        rows.append(
            Row(
                f"{label} at L = {longest}, SDPA vs FAVOR+ m = 256 (ms); FAVOR+ faster from L = {bench['crossover'][key]}",
                fmt(t["ms"]["sdpa"], 0),
                fmt(t["ms"]["favor"], 0),
                ratio(t["ms"]["sdpa"], t["ms"]["favor"]),
            )
        )
    causal_vs_performer = [
        t["favor_vs_performer"]
        for (_, causal, _), t in timings.items()
        if causal and t.get("favor_vs_performer")
    ]
    rows.append(
        Row(
            "causal, performer-pytorch time / ours, worst L measured (goal >= 10x)",
            "1.00x",
            "",
            f"{min(causal_vs_performer):.1f}x",
        )
    )
    decode = bench["decode"]
    rows.append(
        Row(
            f"decode ms per token at context {decode[0]['context']} -> {decode[-1]['context']} (SDPA grows, FAVOR+ flat)",
            f"{fmt(decode[0]['sdpa'], 2)} -> {fmt(decode[-1]['sdpa'], 2)}",
            f"{fmt(decode[0]['favor'], 2)} -> {fmt(decode[-1]['favor'], 2)}",
            ratio(decode[-1]["favor"], decode[0]["favor"]),
        )
    )
    error = load("examples/results/favor_error_vs_m.json")["minilm"]["mean"]
    shifted = (
        error["favor"]["orthogonal+shifted"]
        if "orthogonal+shifted" in error["favor"]
        else error["favor"]["iid+shifted"]
    )
    rows.append(
        Row(
            "relative error of attention output on MiniLM's own q/k, m = 256 (anchor: uniform attention)",
            fmt(error["uniform"]),
            fmt(shifted["256"]),
            ratio(shifted["256"], error["uniform"]),
        )
    )
    swap = load("examples/results/favor_finetune_after_swap.json")
    rows.append(
        Row(
            "accuracy after swapping SDPA -> FAVOR+ in a trained BERT, then a short fine-tune",
            fmt(swap["sdpa_trained"]["accuracy"]),
            fmt(swap["favor_finetuned"]["accuracy"]),
            ratio(swap["favor_finetuned"]["accuracy"], swap["sdpa_trained"]["accuracy"], 3),
        )
    )
    return rows


def noloop_rows() -> list[Row]:
    bench = load("plugins/noloop/bench/results/overhead_256_1024.json")
    context = max(bench["generate"], key=int)
    settings = bench["generate"][context]
    baseline = settings["transformers RepetitionPenalty (1.2)"]["overhead_ms_per_token"]
    rows = []
    for name, row in settings.items():
        if row["kind"] != "ours":
            continue
        counterpart = row.get("counterpart")
        anchor = settings[counterpart] if counterpart else None
        rows.append(
            Row(
                f"{name}: added ms/token in generate at context {context} (goal <= 0.25; anchor: "
                f"{counterpart or 'RepetitionPenalty'})",
                fmt(anchor["overhead_ms_per_token"] if anchor else baseline, 2),
                fmt(row["overhead_ms_per_token"], 2),
                ratio(row["overhead_ms_per_token"], anchor["overhead_ms_per_token"]) if anchor else "",
            )
        )
    repro = load("examples/results/noloop_peoples_daily.json")
    results, seed = repro["results"], str(repro["settings"]["seed"])
    cap = repro["settings"]["cap"]
    for ours, anchor in (
        ("greedy+noloop (dry+loop_stop+floor)", "greedy"),
        ("greedy+noloop (dry+loop_stop+floor)", "greedy+repetition_penalty=1.2"),
        ("greedy+noloop (dry+loop_stop+floor)", "greedy+no_repeat_ngram_size=3"),
        ("beam4+dry", "beam4"),
    ):
        a, o = results[anchor], results[ours]
        rows.append(
            Row(
                f"char LM, {ours} vs {anchor}: non-termination at {cap} / rep-4 / distinct-2 / perplexity",
                f"{fmt(a['non_termination'])} / {fmt(a['rep_4'])} / {fmt(a['distinct_2'])} / {a['perplexity']:.1f}",
                f"{fmt(o['non_termination'])} / {fmt(o['rep_4'])} / {fmt(o['distinct_2'])} / {o['perplexity']:.1f}",
                "",
                seed,
            )
        )
    return rows


SECTIONS: list[Section] = [
    Section(
        "demo",
        "The demo pipeline (`make demo`)",
        (("-m", "demo", "--no-progress", "--output-dir", "runs/report-demo"), ("scripts/demo_numerics.py",)),
        demo_rows,
        "One run of the quick preset; the anchor column is the comparison model of the same run.",
    ),
    Section(
        "adversarial",
        "hfplug-adversarial: adversarial training on embeddings",
        (
            ("plugins/adversarial/bench/bench_step_time.py",),
            ("examples/adversarial_snownlp.py", "--scale-eps"),
        ),
        adversarial_rows,
        "Step times are CPU-time ratios to a plain Trainer step in the same run (BERT h256 L4, batch 32 x 128).",
    ),
    Section(
        "imbalance",
        "hfplug-imbalance: losses for class imbalance",
        (
            ("plugins/imbalance/bench/bench_losses.py",),
            ("examples/imbalance_digits_longtail.py",),
            ("examples/imbalance_snownlp_longtail.py",),
        ),
        imbalance_rows,
        "Loss timings: medians of per-round ratios to F.cross_entropy on the same logits (forward + backward). "
        "Anchor for the reproductions: Menon et al. 2021 report logit adjustment above cross-entropy on long-tailed data.",
    ),
    Section(
        "favor",
        "hfplug-favor: FAVOR+ attention",
        (
            ("plugins/favor/bench/bench_favor.py", "--full"),
            ("examples/favor_error_vs_m.py",),
            ("examples/favor_finetune_after_swap.py",),
        ),
        favor_rows,
        "Timings: batch 1, 8 heads, head dim 64, one torch thread, medians of interleaved repeats.",
    ),
    Section(
        "noloop",
        "hfplug-noloop: generation that cannot loop forever",
        (
            (
                "plugins/noloop/bench/bench_overhead.py",
                "--contexts",
                "256",
                "1024",
                "--repeats",
                "15",
                "12",
                "--name",
                "overhead_256_1024",
            ),
            ("examples/noloop_peoples_daily.py",),
        ),
        noloop_rows,
        "Overheads: medians over repeats of paired per-step differences against a generate() without processors "
        "(batch 8, vocabulary 21,128, tiny GPT-2, one thread); the ratio is ours / the transformers counterpart. "
        "Reproduction: a 2-layer character LM on People's Daily, 200 held-out openings.",
    ),
    Section(
        "theseus",
        "hfplug-theseus: BERT-of-Theseus",
        (("plugins/theseus/bench/bench_theseus.py",), ("examples/theseus_snownlp.py",)),
        theseus_rows,
    ),
    Section(
        "wobert",
        "hfplug-wobert: the WoBERT tokenizer",
        (("plugins/wobert/bench/bench_tokenizers.py",), ("examples/wobert_snownlp.py",)),
        wobert_rows,
    ),
]


# --- running and rendering ------------------------------------------------------------------------------


def run_jobs(section: Section) -> None:
    for job in section.jobs:
        command = [sys.executable, *job]
        print(f"[report] {section.name}: {' '.join(job)}", flush=True)
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"[report] {section.name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    if section.name == "demo":  # the demo writes into runs/ (ignored by git): keep its JSON with the others
        shutil.copy(ROOT / "runs/report-demo/results.json", ROOT / "examples/results/demo.json")


def render_section(section: Section) -> str:
    commands = "\n".join(f"    python {' '.join(job)}" for job in section.jobs)
    lines = [f"## {section.title}", "", "Reproduce:", "", commands, ""]
    try:
        rows = section.rows()
    except FileNotFoundError as error:
        return "\n".join(
            [*lines, f"*Not run yet* ({Path(error.filename).relative_to(ROOT)} is missing).", ""]
        )
    if section.note:
        lines += [section.note, ""]
    lines += ["| claim | anchor | ours | ratio | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {r.claim} | {r.anchor} | {r.ours} | {r.ratio} | {r.seeds} |" for r in rows]
    return "\n".join([*lines, ""])


def render(sections: list[Section]) -> str:
    header = [
        "# Results",
        "",
        "Generated by `make report` (`scripts/report.py`) from the JSON that each benchmark and reproduction",
        "writes; do not edit by hand. Numbers come from a 2-core CPU machine: timing ratios are from methods run",
        "side by side in one process; see each plugin's page for the full tables and conditions.",
        "",
    ]
    return "\n".join(header + [render_section(section) for section in sections])


def demo_table_block() -> str:
    """The demo's own printed tables for docs/demo.md, with the conditions its JSON recorded."""
    r = load("examples/results/demo.json")
    env = r["environment"]
    conditions = (
        f"seed {r['seed']}, {r['preset']} preset, {r['attention']} attention; {env['threads']} thread, "
        f"{env['cpu_capability']} kernels, torch {env['torch']}; {r['seconds']:.0f} s on {env['cpu']} "
        f"({env['cores']} cores, load {env['load_average'][0]:.1f} at the start), {env['date'][:10]}"
    )
    return f"```text\n{render_demo_table(r)}\n```\n\n{conditions}.\n"


def demo_numerics_block() -> str:
    """One row per run of scripts/demo_numerics.py (numerics, time, headline numbers), then what each run is."""
    runs = load("examples/results/demo_numerics.json")["runs"]
    lines = [
        "| run | threads | kernels | wall s | load | CE | FGM + LA | Theseus | greedy: non-term. / rep-4 "
        "| no-loop: non-term. / rep-4 | same numbers as `default` |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        env, acc = run["environment"], run["balanced_accuracy"]
        stops, rep = run["non_termination"], run["rep_4"]
        cells = [
            f"`{run['name']}`",
            str(env["threads"]),
            env["cpu_capability"],
            f"{run['wall_seconds']:.0f}",
            f"{env['load_average'][0]:.1f} → {env['load_average_end'][0]:.1f}",
            *(fmt(acc[key]) for key in ("cross_entropy", "fgm_logit_adjusted", "theseus")),
            *(f"{fmt(stops[key], 2)} / {fmt(rep[key])}" for key in ("plain", "noloop")),
            "yes" if run["repeats_default"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"- `{run['name']}`: {run['label']}" for run in runs)]
    return "\n".join(lines) + "\n"


def fill_generated_blocks(page: Path, blocks: dict[str, Callable[[], str]]) -> None:
    """Replace each ``<!-- generated: NAME -->`` ... ``<!-- end generated -->`` block of ``page``."""
    text = page.read_text()
    for name, make in blocks.items():
        start, end = f"<!-- generated: {name} -->\n", "<!-- end generated -->"
        head, found, rest = text.partition(start)
        if not found:
            raise SystemExit(f"{page.relative_to(ROOT)} has no block {start.strip()}")
        text = head + start + make() + rest[rest.index(end) :]
    page.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SECTIONS], help="run only these jobs")
    parser.add_argument("--render-only", action="store_true", help="do not run anything, only render")
    args = parser.parse_args()
    if not args.render_only:
        for section in SECTIONS:
            if args.only is None or section.name in args.only:
                run_jobs(section)
    RESULTS_PAGE.write_text(render(SECTIONS))
    fill_generated_blocks(DEMO_PAGE, {"demo-table": demo_table_block, "demo-numerics": demo_numerics_block})
    print(
        f"[report] wrote {RESULTS_PAGE.relative_to(ROOT)} and the generated blocks of {DEMO_PAGE.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
