"""The hfplug demo: one pipeline through every plugin on bundled real data, then a results table.

1. The WoBERT tokenizer (bert-base-chinese + jieba words) vs char level on People's Daily and the reviews.
2. The pretrained base: zh-bert word level (4 x 256, masked LM on People's Daily; hfplug.data.zh_bert_dir).
3. Fine-tuning it on long-tailed review sentiment: cross-entropy vs FGM + logit-adjusted loss.
4. BERT-of-Theseus compression to half the depth; export; latency vs the predecessor.
5. A causal LM on People's Daily sentences; greedy decoding with and without the no-loop processors.

    python -m demo                      # quick preset, < 10 min on 2 CPU cores
    python -m demo --preset full        # bigger models and data (not part of CI)
    torchrun --nproc_per_node 2 -m demo # training stages on two processes (gloo on CPU)

One thread and AVX2 kernels by default, so the same seed gives the same table (see numerics.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers

from hfplug.data import load_peoples_daily, long_tailed_reviews

from . import base, compress, finetune, generation, numerics, vocabulary
from .settings import ATTENTION_CHOICES, PRESETS, preset
from .table import render
from .training import finish, is_main_process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="sizes of every stage")
    parser.add_argument("--full", action="store_true", help="same as --preset full")
    parser.add_argument(
        "--attention", choices=ATTENTION_CHOICES, default="favor", help="attention of the causal LM"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads per process (default 1; the table is the same for the same seed and thread count)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("runs/demo"), help="models, tokenizer, results.json"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.full:
        args.preset = "full"
    return args


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def log(message: str) -> None:
    if is_main_process():
        print(f"[demo] {message}", flush=True)


def run(args: argparse.Namespace) -> dict:
    settings = preset(args.preset)
    out, seed, progress = args.output_dir, args.seed, not args.no_progress
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    results: dict = {"preset": args.preset, "attention": args.attention, "seed": seed}
    results["environment"] = numerics.environment()

    log("1/5 WoBERT tokenizer and tokenization")
    word_tok = vocabulary.word_tokenizer()
    char_tok = vocabulary.char_tokenizer()
    lines = load_peoples_daily()[: settings.corpus_lines]
    held_out = len(lines) // 10  # the last 10% of People's Daily gives the generation prompts
    train_lines, test_lines = lines[:-held_out], lines[-held_out:]
    train_pairs, test_pairs = long_tailed_reviews(
        seed, settings.n_head, settings.imbalance, settings.n_test // 2
    )
    review_texts = [text for text, _ in train_pairs + test_pairs]
    results["tokenizers"] = {}
    for key, tok in (("char", char_tok), ("word", word_tok)):
        results["tokenizers"][key] = {
            "vocab_size": len(tok),
            "peoples_daily": vocabulary.tokens_per_char(vocabulary.encode(tok, lines), lines),
            "reviews": vocabulary.tokens_per_char(vocabulary.encode(tok, review_texts), review_texts),
        }

    log("2/5 pretrained base: zh-bert, word level")
    base_dir, results["base"] = base.pretrained_base()

    log("3/5 fine-tuning on long-tailed reviews")
    train_ds = finetune.review_dataset(train_pairs, word_tok, settings.max_length)
    test_ds = finetune.review_dataset(test_pairs, word_tok, settings.max_length)
    results["data"] = {
        "train_counts": [train_ds["label"].count(0), train_ds["label"].count(1)],
        "test_size": len(test_ds),
    }
    classifiers, models = {}, {}
    for method in finetune.METHODS:
        models[method], classifiers[method] = finetune.finetune(
            method,
            base_dir,
            word_tok,
            train_ds,
            test_ds,
            settings,
            seed,
            out / method,
            progress,
        )
        classifiers[method]["layers"] = results["base"]["layers"]

    log(f"4/5 Theseus compression to {results['base']['layers'] // 2} blocks")
    predecessor = models["fgm_logit_adjusted"]
    successor, classifiers["theseus"] = compress.compress(
        predecessor, word_tok, train_ds, test_ds, settings, seed, out / "theseus", progress
    )
    for key, model in (("fgm_logit_adjusted", predecessor), ("theseus", successor)):
        classifiers[key]["latency_ms"] = compress.latency_ms(
            model, word_tok, test_ds, settings.latency_repeats
        )
    results["classifiers"] = classifiers

    log(f"5/5 causal LM ({settings.lm_steps} steps) and generation")
    sentences = generation.split_sentences(train_lines)
    lm, results["language_model"] = generation.train_lm(
        word_tok, vocabulary.encode(word_tok, sentences), settings, args.attention, seed, out / "lm", progress
    )
    prompt_ids = [
        ids
        for ids in vocabulary.encode(word_tok, generation.split_sentences(test_lines))
        if len(ids) > settings.prompt_tokens
    ]
    prompts = [ids[: settings.prompt_tokens] for ids in prompt_ids[: settings.num_prompts]]
    results["generation"] = {"prompts": len(prompts), "max_new_tokens": settings.max_new_tokens}
    for key, noloop in (("plain", False), ("noloop", True)):
        results["generation"][key] = generation.generation_metrics(lm, word_tok, prompts, settings, noloop)
    results["seconds"] = time.perf_counter() - started
    results["environment"]["load_average_end"] = numerics.load_average()
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    numerics.pin_cpu_kernels()  # before the first kernel runs
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results = run(args)
    if is_main_process():
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        print()
        print(render(results))
        env = results["environment"]
        print(
            f"\nseed {args.seed}, preset {args.preset}, {args.attention} attention in the LM, {results['seconds']:.0f} s, "
            f"{env['threads']} thread(s), {env['cpu_capability']} kernels; latency is measured, every other number "
            f"is the same for the same seed, threads and kernels; details in {args.output_dir / 'results.json'}"
        )
    finish()


if __name__ == "__main__":
    main()
