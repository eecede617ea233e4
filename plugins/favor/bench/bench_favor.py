"""FAVOR+ vs torch SDPA vs performer-pytorch FastAttention on CPU (fp32, batch 1, 8 heads, head dim 64, m=256).

Times forward (inference_mode) and forward+backward, non-causal and causal, interleaving the methods per
repeat and reporting medians; peak extra RSS of one call in a fresh process; relative error against exact
attention (and the error of uniform attention, the trivial output FAVOR+ must beat); decode-step latency
against context length (favor with a FavorCache: O(1) state vs SDPA over the full KV cache).

    python plugins/favor/bench/bench_favor.py                          # everything, L = 512..4096
    python plugins/favor/bench/bench_favor.py --full --only causal_fwd # one part, L = 512..16384

Parts (``--only``, repeatable): noncausal_fwd, noncausal_fwd_bwd, causal_fwd, causal_fwd_bwd, errors,
decode. Each run merges its rows into bench/results/favor_bench.json (same length/mode replaced), records the
load average, and redraws favor_bench.png. The machine is shared: treat <10% as noise.
performer-pytorch's causal path runs on CPU through a path that keeps an (L, m, d) tensor per head: it is
timed up to PERFORMER_CAUSAL_MAX (forward) / PERFORMER_CAUSAL_BWD_MAX (forward+backward) only, beyond that it
needs > 10 GiB or > 20 s per call on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hfplug_favor import (
    FavorCacheLayer,
    FavorConfig,
    favor_attention,
    favor_attention_forward,
    gaussian_projection,
)

HEADS, HEAD_DIM, FEATURES = 8, 64, 256
RESULTS = Path(__file__).parent / "results"
METHODS = ("sdpa", "favor", "performer")
SLOW_LIMIT_S = 20.0  # performer only: a warm-up call slower than this drops it for longer lengths
MEMORY_LENGTHS = (1024, 4096)  # fresh-process memory probes of the default sweep (--full: every length)
PERFORMER_CAUSAL_MAX = 8192
PERFORMER_CAUSAL_BWD_MAX = 4096
PARTS = ("noncausal_fwd", "noncausal_fwd_bwd", "causal_fwd", "causal_fwd_bwd", "errors", "decode")


def make_method(name: str, causal: bool):
    if name == "sdpa":
        return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if name == "favor":
        W = gaussian_projection(FEATURES, HEAD_DIM, seed=0)
        return lambda q, k, v: favor_attention(q, k, v, W, causal=causal, shift_keys=not causal)[0]
    if name == "performer":
        from performer_pytorch import FastAttention

        torch.manual_seed(0)
        module = FastAttention(dim_heads=HEAD_DIM, nb_features=FEATURES, causal=causal)
        return lambda q, k, v: module(q, k, v)
    raise ValueError(name)


def make_inputs(length: int, grad: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(1, HEADS, length, HEAD_DIM, generator=g) for _ in range(4)]
    for t in tensors[:3]:
        t.requires_grad_(grad)
    return tensors


def run_once(fn, inputs, backward: bool) -> None:
    q, k, v, upstream = inputs
    if backward:
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(upstream)
    else:
        with torch.inference_mode():
            fn(q, k, v)


def peak_memory_mib(method: str, length: int, causal: bool, backward: bool) -> float | None:
    """Peak extra RSS (MiB) of one call, measured in a fresh process."""
    command = [
        sys.executable,
        __file__,
        "--memory-probe",
        method,
        str(length),
        str(int(causal)),
        str(int(backward)),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in result.stdout.splitlines() if line.startswith("PEAK_MIB")]
    return float(lines[-1].split()[1]) if lines else None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(method: str, length: int, causal: bool, backward: bool) -> None:
    """Peak RSS above the resident set just before the call (Linux: VmHWM reset through clear_refs)."""
    fn = make_method(method, causal)
    inputs = make_inputs(length, backward)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    before = _status_kib("VmRSS")
    run_once(fn, inputs, backward)
    print("PEAK_MIB", (_status_kib("VmHWM") - before) / 1024)


def relative_errors(length: int, causal: bool) -> dict[str, float]:
    q, k, v, _ = make_inputs(length, grad=False, seed=1)
    with torch.inference_mode():
        exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        errors = {
            name: float((make_method(name, causal)(q, k, v) - exact).norm() / exact.norm())
            for name in ("favor", "performer")
            if name == "favor" or performer_allowed(length, causal, backward=False)
        }
        uniform = torch.nn.functional.scaled_dot_product_attention(
            torch.zeros_like(q), k, v, is_causal=causal
        )
        errors["uniform"] = float((uniform - exact).norm() / exact.norm())
    return errors


def performer_allowed(length: int, causal: bool, backward: bool) -> bool:
    return not causal or length <= (PERFORMER_CAUSAL_BWD_MAX if backward else PERFORMER_CAUSAL_MAX)


def time_config(length: int, causal: bool, backward: bool, skip: set[str]) -> dict[str, float | None]:
    if not performer_allowed(length, causal, backward):
        skip.add("performer")
    methods = {name: make_method(name, causal) for name in METHODS if name not in skip}
    inputs = make_inputs(length, backward)
    repeats = 5 if length <= 1024 else 3 if length <= 4096 else 2
    times: dict[str, list[float]] = {name: [] for name in methods}
    for name, fn in list(methods.items()):  # warm-up; drop performer if a single call is too slow
        start = time.perf_counter()
        run_once(fn, inputs, backward)
        if name == "performer" and time.perf_counter() - start > SLOW_LIMIT_S:
            skip.add(name)
            methods.pop(name)
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            run_once(fn, inputs, backward)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: (statistics.median(times[name]) if times.get(name) else None) for name in METHODS}


class _DecodeModule(torch.nn.Module):
    is_causal = True
    layer_idx = 0

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"favor": FavorConfig().to_dict()})()


def decode_latency(contexts: list[int], steps: int = 20) -> list[dict[str, float]]:
    """ms per decode step of one attention layer after a prefill of L tokens: favor through a FavorCache layer
    (the state only), SDPA of the new query over the L cached keys (no cache-append cost counted)."""
    rows = []
    module = _DecodeModule().eval()
    for length in contexts:
        q, k, v, _ = make_inputs(length + steps, grad=False)
        timings: dict[str, list[float]] = {"sdpa": [], "favor": []}
        layer = FavorCacheLayer()
        with torch.inference_mode():
            keys, values = layer.update(k[:, :, :length], v[:, :, :length])
            favor_attention_forward(module, q[:, :, :length], keys, values, None)  # prefill
            for t in range(length, length + steps):
                start = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(
                    q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1]
                )
                timings["sdpa"].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                keys, values = layer.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
                favor_attention_forward(module, q[:, :, t : t + 1], keys, values, None)
                timings["favor"].append((time.perf_counter() - start) * 1000)
        rows.append({"context": length, **{name: statistics.median(t) for name, t in timings.items()}})
        print(
            f"decode L={length}: sdpa {rows[-1]['sdpa']:.3f} ms, favor {rows[-1]['favor']:.3f} ms", flush=True
        )
    return rows


def crossover(rows: list[dict], baseline: str, method: str) -> int | None:
    """The smallest measured L from which ``method`` is faster than ``baseline`` at every longer L."""
    found = None
    for row in sorted(rows, key=lambda row: row["length"], reverse=True):
        if row[baseline] is None or row[method] is None or row[method] >= row[baseline]:
            break
        found = row["length"]
    return found


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for col, backward in enumerate((False, True)):
        mode = "forward+backward" if backward else "forward"
        for causal, style in ((False, "-"), (True, "--")):
            rows = [r for r in results["timings"] if r["causal"] == causal and r["backward"] == backward]
            for name in METHODS:
                points = [(r["length"], r["ms"][name]) for r in rows if r["ms"][name] is not None]
                if points:
                    axes[0, col].plot(
                        *zip(*points, strict=True),
                        style,
                        marker="o",
                        label=f"{name}{' causal' if causal else ''}",
                    )
                mem = [
                    (r["length"], r["peak_mib"][name]) for r in rows if r["peak_mib"].get(name) is not None
                ]
                if mem:
                    axes[1, col].plot(
                        *zip(*mem, strict=True),
                        style,
                        marker="o",
                        label=f"{name}{' causal' if causal else ''}",
                    )
        for row, ylabel in ((0, "median time (ms)"), (1, "peak extra RSS (MiB)")):
            axes[row, col].set(
                xscale="log", yscale="log", xlabel="sequence length L", ylabel=ylabel, title=mode
            )
            axes[row, col].legend(fontsize=7)
    fig.suptitle("CPU fp32, batch 1, 8 heads, head dim 64, m=256 (shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _merge(old: list[dict], new: list[dict], keys: tuple[str, ...]) -> list[dict]:
    fresh = {tuple(row[k] for k in keys) for row in new}
    rows = [row for row in old if tuple(row[k] for k in keys) not in fresh] + new
    return sorted(rows, key=lambda row: tuple(row[k] for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="lengths up to 16384")
    parser.add_argument("--lengths", type=int, nargs="+", help="explicit lengths (overrides --full)")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts (repeatable)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory pass")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every method (default 1)")
    parser.add_argument("--memory-probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        method, length, causal, backward = args.memory_probe
        memory_probe(method, int(length), bool(int(causal)), bool(int(backward)))
        return

    parts = args.only or list(PARTS)
    lengths = args.lengths or [512, 1024, 2048, 4096] + ([8192, 16384] if args.full else [])
    contexts = [1024, 4096, 16384] if args.full else [1024, 4096, 8192]
    path = RESULTS / "favor_bench.json"
    results: dict = json.loads(path.read_text()) if path.exists() else {"timings": [], "errors": []}
    results["setup"] = {
        "dtype": "float32",
        "batch": 1,
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "nb_features": FEATURES,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "note": "shared 2-core CPU machine; medians of interleaved repeats; memory = one call, fresh process",
    }
    run = {"parts": parts, "lengths": lengths, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load": _load()}
    timings = []
    for part in parts:
        if part in ("errors", "decode"):
            continue
        causal, backward = part.startswith("causal"), part.endswith("fwd_bwd")
        skip: set[str] = set()
        for length in lengths:
            ms = time_config(length, causal, backward, skip)
            peak = {}
            if not args.no_memory and (args.full or length in MEMORY_LENGTHS):
                peak = {name: peak_memory_mib(name, length, causal, backward) for name in METHODS if ms[name]}
            row = {"length": length, "causal": causal, "backward": backward, "ms": ms, "peak_mib": peak}
            row["speedup_vs_sdpa"] = {
                name: (ms["sdpa"] / ms[name] if ms[name] else None) for name in ("favor", "performer")
            }
            row["favor_vs_performer"] = ms["performer"] / ms["favor"] if ms["performer"] else None
            row["load"] = _load()
            timings.append(row)
            print(json.dumps(row), flush=True)
    results["timings"] = _merge(results.get("timings", []), timings, ("causal", "backward", "length"))
    if "errors" in parts:
        errors = [
            {"length": length, "causal": causal, **relative_errors(length, causal)}
            for causal in (False, True)
            for length in lengths
        ]
        print(json.dumps(errors), flush=True)
        results["errors"] = _merge(results.get("errors", []), errors, ("causal", "length"))
    if "decode" in parts:
        results["decode"] = decode_latency(contexts)
    results["crossover"] = {}
    for causal in (False, True):
        for backward in (False, True):
            rows = [r for r in results["timings"] if r["causal"] == causal and r["backward"] == backward]
            flat = [{"length": r["length"], **r["ms"]} for r in rows]
            key = f"{'causal' if causal else 'non_causal'}_{'fwd_bwd' if backward else 'fwd'}"
            results["crossover"][key] = crossover(flat, "sdpa", "favor")
    run["load_after"] = _load()
    results["runs"] = [*results.get("runs", []), run]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / "favor_bench.png")
    print("crossover (first L where favor beats sdpa):", results["crossover"])


if __name__ == "__main__":
    main()
