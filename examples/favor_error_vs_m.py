"""FAVOR+ approximation error against the number of random features m.

1. Random inputs (L=512, head dim 64) at several peakedness levels (q and k scaled by s; reported as the mean
   max attention weight of exact attention): relative error ||favor - exact|| / ||exact|| for m = 64..1024,
   orthogonal vs iid features, plus the variance-reduction options (quasi-uniform radii, hyperbolic features,
   the key shift c = mean(k) + mean(q)), beside the error of uniform attention (mean of the values), the trivial baseline.
2. The pretrained MiniLM-L6 (hfplug.data.minilm_dir()): the same on its own queries/keys/values, captured
   from each of its 6 layers on real English sentences, and favor_report (hidden-state cosine) for m=256.

    python examples/favor_error_vs_m.py           # default, a few minutes of CPU
    python examples/favor_error_vs_m.py --full    # more seeds and lengths

Writes examples/results/favor_error_vs_m.json and .png.

``--base zh-bert``: the same sweep on the project's pretrained Chinese BERT (``hfplug.data.zh_bert_dir("char")``,
4 layers, 4 heads, d = 64), on its own q/k/v captured from each layer on held-out People's Daily text (the last
10% of the lines, which its pretraining never saw, cut into [CLS] ... [SEP] rows of 128 tokens as in its
pretraining; the first 16 rows), 5 feature draws per m, plus favor_report (hidden-state cosine, m = 256).
No random-input part. About 1-2 min of CPU; writes examples/results/favor_error_vs_m_zh_bert.json and .png.

    python examples/favor_error_vs_m.py --base zh-bert
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from hfplug_favor import FavorConfig, favor_attention, favor_report, gaussian_projection, set_favor_config

import hfplug
from hfplug.data import load_peoples_daily, minilm_dir, zh_bert_dir, zh_bert_record

RESULTS = Path(__file__).parent / "results"
MS = (64, 128, 256, 512, 1024)
VARIANTS = {
    "iid": dict(orthogonal=False),
    "orthogonal": dict(orthogonal=True),
    "orthogonal+quasi_uniform": dict(orthogonal=True, radii="quasi_uniform"),
    "orthogonal+hyperbolic": dict(orthogonal=True, hyperbolic=True),
}
SENTENCES = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Transformers compute attention between every pair of tokens, which is quadratic in the sequence length.",
    "Random feature methods approximate the softmax kernel with positive features and linear time.",
    "A man is eating food in a small restaurant near the train station on a rainy afternoon.",
    "The stock market fell sharply today after the central bank raised interest rates again.",
    "She planted tomatoes, beans and basil in the garden behind the old stone house.",
    "Researchers measured the error of the approximation as the number of features grew.",
    "The museum opens at nine in the morning and closes at five in the evening on weekdays.",
]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def exact_attention(q, k, v, valid=None):
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if valid is not None:
        logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
    weights = logits.softmax(-1)
    return weights @ v, float(weights.amax(-1).mean())


def uniform_attention(v, valid=None):
    if valid is None:
        return v.mean(-2, keepdim=True).expand_as(v)
    w = valid[:, None, :, None].to(v.dtype)
    return ((v * w).sum(-2, keepdim=True) / w.sum(-2, keepdim=True)).expand_as(v)


def sweep(q, k, v, valid, seeds) -> dict:
    exact, max_weight = exact_attention(q, k, v, valid)
    row = {
        "mean_max_weight": max_weight,
        "uniform": relative(uniform_attention(v, valid), exact),
        "favor": {},
    }
    for name, options in VARIANTS.items():
        for shift in (False, True):
            label = name + ("+shifted" if shift else "")
            errors = []
            for m in MS:
                runs = [
                    relative(
                        favor_attention(
                            q,
                            k,
                            v,
                            gaussian_projection(m, q.shape[-1], seed=s, **options),
                            key_padding_mask=valid,
                            shift_keys=shift,
                        )[0],
                        exact,
                    )
                    for s in range(seeds)
                ]
                errors.append(sum(runs) / len(runs))
            row["favor"][label] = dict(zip(MS, errors, strict=True))
    return row


def random_inputs(length: int, scale: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 8, length, 64, generator=g) for _ in range(3))
    return q * scale, k * scale, v


def capture_qkv(model, batch) -> list[tuple[torch.Tensor, ...]]:
    """(q, k, v, mask) of every layer, recorded through a pass-through attention backend."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    captured = []

    def record(module, query, key, value, attention_mask, **kwargs):
        captured.append((query, key, value))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("favor_capture", record)
    AttentionMaskInterface.register("favor_capture", sdpa_mask)
    model.set_attn_implementation("favor_capture")
    with torch.no_grad():
        model(**batch)
    model.set_attn_implementation("sdpa")
    return captured


def real_model_errors(model, batch: dict, seeds: int, name: str) -> dict:
    """The sweep on each layer's own q/k/v, its mean over layers, and favor_report (m = 256) per variant."""
    valid = batch["attention_mask"].bool()
    layers = []
    for index, (q, k, v) in enumerate(capture_qkv(model, batch)):
        row = {"layer": index, **sweep(q, k, v, valid, seeds)}
        layers.append(row)
        print(
            f"{name} layer {index}: max weight {row['mean_max_weight']:.3f}, uniform {row['uniform']:.3f}, "
            f"orthogonal m=256 {row['favor']['orthogonal'][256]:.3f}, "
            f"orthogonal+shifted m=256 {row['favor']['orthogonal+shifted'][256]:.3f}",
            flush=True,
        )
    mean = {
        "mean_max_weight": sum(r["mean_max_weight"] for r in layers) / len(layers),
        "uniform": sum(r["uniform"] for r in layers) / len(layers),
        "favor": {
            label: {m: sum(r["favor"][label][m] for r in layers) / len(layers) for m in MS}
            for label in layers[0]["favor"]
        },
    }
    hfplug.use_attention("favor")
    reports = {}
    for label, config in (
        ("orthogonal", FavorConfig(shift_keys=False)),
        ("orthogonal+shifted", FavorConfig()),
        ("orthogonal+hyperbolic+shifted", FavorConfig(hyperbolic=True)),
    ):
        set_favor_config(model, config)
        report = favor_report(model, dict(batch))
        reports[label] = report
        print(f"favor_report {name} m=256 {label}: hidden cosine {report['hidden_cosine']:.3f}", flush=True)
    return {"layers": layers, "mean": mean, "favor_report_m256": reports}


def held_out_blocks(tokenizer, rows: int, width: int = 128) -> dict:
    """The first ``rows`` [CLS] ... [SEP] rows of ``width`` tokens of the zh-bert base's held-out People's Daily
    text (its pretraining's last 10% of the lines, joined with [SEP], as its pretraining cut them)."""
    lines = load_peoples_daily()
    held = lines[len(lines) - len(lines) // 10 :]
    stream = [
        t
        for ids in tokenizer(held, add_special_tokens=False)["input_ids"]
        for t in (*ids, tokenizer.sep_token_id)
    ]
    step = width - 2
    ids = torch.tensor(
        [
            [tokenizer.cls_token_id, *stream[i * step : (i + 1) * step], tokenizer.sep_token_id]
            for i in range(rows)
        ]
    )
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def main_zh_bert(rows: int, seeds: int) -> None:
    from transformers import AutoModel, AutoTokenizer

    base = zh_bert_dir("char")
    load_start, date, cpu = (
        os.getloadavg(),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        time.process_time(),
    )
    model = AutoModel.from_pretrained(base, attn_implementation="sdpa").eval()
    batch = held_out_blocks(AutoTokenizer.from_pretrained(base), rows)
    errors = real_model_errors(model, batch, seeds, "zh-bert")
    config = model.config
    results = {
        "base": zh_bert_record("char"),
        "setup": {
            "seeds": seeds,
            "ms": list(MS),
            "text": "People's Daily held-out lines (the last 10%), [CLS] ... [SEP] rows as in the base's pretraining",
            "rows": rows,
            "length": batch["input_ids"].shape[1],
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "head_dim": config.hidden_size // config.num_attention_heads,
        },
        "zh_bert": errors,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_seconds": time.process_time() - cpu,
            "load_average_start_end": [load_start, os.getloadavg()],
            "date": date,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "favor_error_vs_m_zh_bert.json").write_text(json.dumps(results, indent=1))
    panels = [
        (f"zh-bert layer {r['layer']}, max weight {r['mean_max_weight']:.3f}", r) for r in errors["layers"]
    ]
    panels.append((f"zh-bert own q/k (mean of {len(errors['layers'])} layers)", errors["mean"]))
    plot(panels, RESULTS / "favor_error_vs_m_zh_bert.png")
    print("wrote", RESULTS / "favor_error_vs_m_zh_bert.json")


def plot(panels: list[tuple[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), sharey=False)
    for ax, (title, row) in zip(axes, panels, strict=True):
        for label in ("iid", "orthogonal", "orthogonal+shifted", "orthogonal+hyperbolic+shifted"):
            errors = row["favor"][label]
            ax.plot(list(errors), list(errors.values()), marker="o", label=label)
        ax.axhline(row["uniform"], color="k", linestyle="--", label="uniform attention")
        ax.set(xscale="log", yscale="log", xlabel="m (random features)", title=title)
        ax.set_xticks(MS, [str(m) for m in MS])
    axes[0].set_ylabel("relative error vs exact softmax attention")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="5 seeds and L=1024 instead of 2 seeds, L=512")
    parser.add_argument("--base", choices=("scratch", "zh-bert"), default="scratch")
    parser.add_argument("--rows", type=int, default=16, help="--base zh-bert: held-out rows of 128 tokens")
    parser.add_argument("--seeds", type=int, default=5, help="--base zh-bert: feature draws per m")
    args = parser.parse_args()
    if args.base == "zh-bert":
        main_zh_bert(args.rows, args.seeds)
        return
    seeds, length = (5, 1024) if args.full else (2, 512)
    torch.manual_seed(0)
    results: dict = {"setup": {"seeds": seeds, "length": length, "heads": 8, "head_dim": 64, "ms": list(MS)}}

    results["random"] = []
    for scale in (0.5, 0.75, 1.0, 1.5):
        q, k, v = random_inputs(length, scale, seed=0)
        row = {"scale": scale, **sweep(q, k, v, None, seeds)}
        results["random"].append(row)
        print(
            f"random scale={scale}: max weight {row['mean_max_weight']:.3f}, uniform {row['uniform']:.3f}, "
            f"orthogonal m=256 {row['favor']['orthogonal'][256]:.3f}, "
            f"best m=256 {min(e[256] for e in row['favor'].values()):.3f}",
            flush=True,
        )

    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    results["minilm"] = real_model_errors(model, batch, seeds, "MiniLM")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "favor_error_vs_m.json").write_text(json.dumps(results, indent=1))
    panels = [(f"random, mean max weight {r['mean_max_weight']:.3f}", r) for r in results["random"]]
    panels.append(("MiniLM-L6 own q/k (mean of 6 layers)", results["minilm"]["mean"]))
    plot(panels, RESULTS / "favor_error_vs_m.png")
    print("wrote", RESULTS / "favor_error_vs_m.json")


if __name__ == "__main__":
    main()
