"""Long-tailed scikit-learn digits (imbalance ratio 100, exponential profile) with a small MLP.

Compares cross-entropy, weighted CE, focal, logit-adjusted loss, post-hoc logit adjustment, balanced
softmax and LDAM-DRW over several seeds on a balanced test set: balanced accuracy, macro-F1, head recall
(3 most frequent classes) and tail recall (3 rarest), mean +- std. Writes
examples/results/imbalance_digits_longtail.json and .png.

    python examples/imbalance_digits_longtail.py             # 5 seeds, ~1 minute of CPU
    python examples/imbalance_digits_longtail.py --full      # 10 seeds, ratios 10, 50 and 100
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hfplug_imbalance import (
    BalancedSoftmaxLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    WeightedCrossEntropyLoss,
    class_counts,
    post_hoc_logit_adjust,
)
from sklearn.datasets import load_digits
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

RESULTS = Path(__file__).with_name("results")
TEST_PER_CLASS = 50
METHODS = ("ce", "weighted_ce", "focal", "logit_adjusted", "post_hoc", "balanced_softmax", "ldam_drw")


def long_tail_split(ratio: float, seed: int) -> tuple[np.ndarray, ...]:
    """Balanced test set (50 per class); training counts n_c = n_max * ratio**(-c / 9) for class c."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test_idx.extend(idx[:TEST_PER_CLASS])
        pool = idx[TEST_PER_CLASS:]
        n_max = min(len(np.flatnonzero(y == k)) for k in range(10)) - TEST_PER_CLASS
        keep = max(1, round(n_max * ratio ** (-c / 9)))
        train_idx.extend(pool[:keep])
    mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 1e-6
    return (x[train_idx] - mean) / std, y[train_idx], (x[test_idx] - mean) / std, y[test_idx]


class NormedLinear(torch.nn.Module):
    """Cosine classifier (LDAM-DRW's NormedLinear): logits in [-1, 1], as LDAM's scale s = 30 assumes."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(
            torch.empty(d_in, d_out).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


def mlp(cosine: bool) -> torch.nn.Module:
    head = NormedLinear(128, 10) if cosine else torch.nn.Linear(128, 10)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(), head
    )


def make_loss(method: str, counts: torch.Tensor):
    if method in ("ce", "post_hoc"):
        return WeightedCrossEntropyLoss(weights=torch.ones(10))
    if method == "weighted_ce":
        return WeightedCrossEntropyLoss(counts, "effective_number", beta=0.99)
    if method == "focal":
        return FocalLoss(gamma=2.0)
    if method == "logit_adjusted":
        return LogitAdjustedLoss(counts, tau=1.0)
    if method == "balanced_softmax":
        return BalancedSoftmaxLoss(counts)
    return LDAMLoss(counts, max_margin=0.5, scale=30.0, drw_beta=0.99)


def train_and_predict(method: str, data: tuple[np.ndarray, ...], seed: int, epochs: int) -> np.ndarray:
    x_tr, y_tr, x_te, _ = data
    counts = class_counts(y_tr.tolist(), num_classes=10)
    torch.manual_seed(seed)
    model = mlp(cosine=method == "ldam_drw")
    loss = make_loss(method, counts)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        if method == "ldam_drw":  # deferred re-weighting for the last 20% of training, as in the paper
            loss.reweight = epoch >= int(0.8 * epochs)
        for batch in torch.randperm(len(x), generator=g).split(32):
            opt.zero_grad()
            loss(model(x[batch]), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        logits = model(torch.tensor(x_te, dtype=torch.float32))
    if method == "post_hoc":
        logits = post_hoc_logit_adjust(logits, counts, tau=1.0)
    return logits.argmax(-1).numpy()


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    recall = recall_score(y_true, y_pred, labels=list(range(10)), average=None, zero_division=0)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "head_recall": float(recall[:3].mean()),  # classes 0-2 are the most frequent
        "tail_recall": float(recall[-3:].mean()),  # classes 7-9 are the rarest
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        key: {"mean": statistics.mean(r[key] for r in runs), "std": statistics.pstdev(r[key] for r in runs)}
        for key in runs[0]
    }


def plot(summary: dict, path: Path, title: str = "digits long-tail, ratio ") -> None:
    """Grouped bars (balanced accuracy, macro-F1, head and tail recall) per method, one panel per ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = list(summary)
    methods = list(next(iter(summary.values())))
    fig, axes = plt.subplots(1, len(ratios), figsize=(6 * len(ratios), 4), squeeze=False)
    keys = ("balanced_accuracy", "macro_f1", "head_recall", "tail_recall")
    for ax, ratio in zip(axes[0], ratios, strict=True):
        width = 0.8 / len(keys)
        for k, key in enumerate(keys):
            means = [summary[ratio][m][key]["mean"] for m in methods]
            stds = [summary[ratio][m][key]["std"] for m in methods]
            ax.bar(np.arange(len(methods)) + k * width, means, width, yerr=stds, capsize=2, label=key)
        ax.set_xticks(np.arange(len(methods)) + 0.3, methods, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}{ratio} (mean ± std over seeds)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="10 seeds and ratios 10, 50, 100")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(args.seeds or (10 if args.full else 5))
    ratios = (10, 50, 100) if args.full else (100,)
    summary, raw = {}, {}
    for ratio in ratios:
        per_method: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for seed in seeds:
            data = long_tail_split(ratio, seed)
            for method in METHODS:
                per_method[method].append(
                    metrics(data[3], train_and_predict(method, data, seed, args.epochs))
                )
        summary[str(ratio)] = {m: summarise(runs) for m, runs in per_method.items()}
        raw[str(ratio)] = per_method
        counts = class_counts(long_tail_split(ratio, 0)[1].tolist(), num_classes=10).int().tolist()
        print(f"ratio {ratio}: train counts {counts}, test 50 per class, {len(seeds)} seeds")
        for method in METHODS:
            s = summary[str(ratio)][method]
            print(
                f"  {method:<17} bal.acc {s['balanced_accuracy']['mean']:.3f}±{s['balanced_accuracy']['std']:.3f}  "
                f"macro-F1 {s['macro_f1']['mean']:.3f}±{s['macro_f1']['std']:.3f}  "
                f"head {s['head_recall']['mean']:.3f}  tail {s['tail_recall']['mean']:.3f}"
            )
    RESULTS.mkdir(exist_ok=True)
    name = "imbalance_digits_longtail" + ("_full" if args.full else "")
    report = {
        "setup": {
            "data": "sklearn digits, balanced test set of 50 per class, training counts n_max * ratio**(-c/9)",
            "model": "MLP 64-128-128-10 (cosine head for LDAM-DRW), SGD lr 0.1 momentum 0.9 wd 5e-4, batch 32",
            "epochs": args.epochs,
            "seeds": list(seeds),
            "losses": {
                "weighted_ce": "effective number, beta 0.99",
                "focal": "gamma 2",
                "logit_adjusted": "tau 1",
                "post_hoc": "CE model, logits - log prior",
                "ldam_drw": "max margin 0.5, s 30, DRW (beta 0.99) from 80% of epochs",
            },
        },
        "summary": summary,
        "runs": raw,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(summary, RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / name}.json and .png")


if __name__ == "__main__":
    main()
