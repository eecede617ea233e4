"""Stage 6: the demo's results table (every number comes from the run's results dict)."""

from __future__ import annotations


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        cell.ljust(width) if i == 0 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    )


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, rule, _row(header, widths), rule, *(_row(r, widths) for r in rows), rule])


def render(results: dict) -> str:
    """The three tables: tokenizers, classifiers (with latency), generation."""
    tok = results["tokenizers"]
    tokenizers = _table(
        "Tokenizers (tokens per character, no special tokens)",
        ["tokenizer", "vocab", "People's Daily", "reviews"],
        [
            [
                name,
                f"{tok[key]['vocab_size']:,}",
                f"{tok[key]['peoples_daily']:.3f}",
                f"{tok[key]['reviews']:.3f}",
            ]
            for name, key in (("char (bert-base-chinese)", "char"), ("word (WoBERT)", "word"))
        ],
    )
    clf = results["classifiers"]
    base = results["base"]
    classifiers = _table(
        f"Long-tailed review sentiment (train {results['data']['train_counts']} neg/pos, "
        f"test {results['data']['test_size']} balanced), fine-tuned from {base['checkpoint']} "
        f"({base['layers']} x {base['hidden_size']}, {base['pretraining_steps']:,} MLM steps, held-out masked-token "
        f"accuracy {base['held_out_mlm']['accuracy']:.3f})",
        ["model", "layers", "accuracy", "balanced acc", "macro-F1", "tail recall", "latency ms"],
        [
            [
                name,
                str(clf[key]["layers"]),
                f"{clf[key]['accuracy']:.4f}",
                f"{clf[key]['balanced_accuracy']:.4f}",
                f"{clf[key]['macro_f1']:.4f}",
                f"{clf[key]['tail_recall']:.4f}",
                f"{clf[key]['latency_ms']:.1f}" if "latency_ms" in clf[key] else "",
            ]
            for name, key in (
                ("cross-entropy", "cross_entropy"),
                ("FGM + logit-adjusted (predecessor)", "fgm_logit_adjusted"),
                ("Theseus successor", "theseus"),
            )
        ],
    )
    gen = results["generation"]
    generation = _table(
        f"Greedy generation ({gen['prompts']} held-out prompts, cap {gen['max_new_tokens']} new tokens)",
        ["decoding", "non-termination", "rep-4", "distinct-2", "mean length"],
        [
            [
                name,
                f"{gen[key]['non_termination']:.3f}",
                f"{gen[key]['rep_4']:.3f}",
                f"{gen[key]['distinct_2']:.3f}",
                f"{gen[key]['mean_length']:.1f}",
            ]
            for name, key in (("greedy", "plain"), ("greedy + no-loop", "noloop"))
        ],
    )
    return "\n\n".join([tokenizers, classifiers, generation])
