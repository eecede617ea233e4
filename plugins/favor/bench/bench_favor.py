"""FAVOR+ vs torch SDPA vs performer-pytorch FastAttention on CPU (fp32, batch 1, 8 heads, head dim 64, m=256).

Times forward (inference_mode) and forward+backward, non-causal and causal, interleaving the methods per
repeat and reporting medians; peak extra RSS of one call in a fresh process; relative error against exact
attention (and the error of uniform attention, the trivial output FAVOR+ must beat); decode-step latency
against context length (favor's recurrent state vs SDPA over the KV cache).

    python plugins/favor/bench/bench_favor.py            # L = 512..4096, memory at 1024 and 4096
    python plugins/favor/bench/bench_favor.py --full     # L = 512..16384 (long; performer causal needs GiBs)

Writes bench/results/favor_bench.json and favor_bench.png. The machine is shared: treat <10% as noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hfplug_favor import FavorConfig, favor_attention, favor_attention_forward, gaussian_projection

HEADS, HEAD_DIM, FEATURES = 8, 64, 256
RESULTS = Path(__file__).parent / "results"
METHODS = ("sdpa", "favor", "performer")
SLOW_LIMIT_S = 20.0
MEMORY_LENGTHS = (1024, 4096)  # fresh-process memory probes of the default sweep (--full: every length)


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
        }
        uniform = torch.nn.functional.scaled_dot_product_attention(
            torch.zeros_like(q), k, v, is_causal=causal
        )
        errors["uniform"] = float((uniform - exact).norm() / exact.norm())
    return errors


def time_config(length: int, causal: bool, backward: bool, skip: set[str]) -> dict[str, float | None]:
    methods = {name: make_method(name, causal) for name in METHODS if name not in skip}
    inputs = make_inputs(length, backward)
    repeats = 5 if length <= 1024 else 3
    times: dict[str, list[float]] = {name: [] for name in methods}
    for name, fn in list(methods.items()):  # warm-up; drop a method whose single call is too slow
        start = time.perf_counter()
        run_once(fn, inputs, backward)
        if time.perf_counter() - start > SLOW_LIMIT_S:
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
    """ms per decode step of one attention layer at context length L (favor: module path, recurrent state)."""
    rows = []
    module = _DecodeModule().eval()
    for length in contexts:
        q, k, v, _ = make_inputs(length + steps, grad=False)
        timings: dict[str, list[float]] = {"sdpa": [], "favor": []}
        with torch.inference_mode():
            favor_attention_forward(
                module, q[:, :, :length], k[:, :, :length], v[:, :, :length], None
            )  # prefill
            for t in range(length, length + steps):
                start = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(
                    q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1]
                )
                timings["sdpa"].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                favor_attention_forward(module, q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1], None)
                timings["favor"].append((time.perf_counter() - start) * 1000)
        rows.append({"context": length, **{name: statistics.median(t) for name, t in timings.items()}})
        print(
            f"decode L={length}: sdpa {rows[-1]['sdpa']:.3f} ms, favor {rows[-1]['favor']:.3f} ms", flush=True
        )
    return rows


def crossover(rows: list[dict], baseline: str, method: str) -> int | None:
    for row in rows:
        if row[baseline] is not None and row[method] is not None and row[method] < row[baseline]:
            return row["length"]
    return None


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="lengths up to 16384")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory pass")
    parser.add_argument("--decode-only", action="store_true", help="re-measure decode latency into the JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every method (default 1)")
    parser.add_argument("--memory-probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        method, length, causal, backward = args.memory_probe
        memory_probe(method, int(length), bool(int(causal)), bool(int(backward)))
        return

    contexts = [1024, 4096, 16384] if args.full else [1024, 4096, 8192]
    if args.decode_only:
        path = RESULTS / "favor_bench.json"
        results = json.loads(path.read_text())
        results["decode"] = decode_latency(contexts)
        path.write_text(json.dumps(results, indent=1))
        return
    lengths = [512, 1024, 2048, 4096] + ([8192, 16384] if args.full else [])
    results: dict = {
        "setup": {
            "dtype": "float32",
            "batch": 1,
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "nb_features": FEATURES,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "note": "shared 2-core CPU machine; medians of interleaved repeats; memory = one call, fresh process",
        },
        "timings": [],
        "errors": [],
        "decode": [],
    }
    for causal in (False, True):
        for backward in (False, True):
            skip: set[str] = set()
            for length in lengths:
                ms = time_config(length, causal, backward, skip)
                peak = {}
                if not args.no_memory and (args.full or length in MEMORY_LENGTHS):
                    peak = {
                        name: peak_memory_mib(name, length, causal, backward) for name in METHODS if ms[name]
                    }
                row = {"length": length, "causal": causal, "backward": backward, "ms": ms, "peak_mib": peak}
                row["speedup_vs_sdpa"] = {
                    name: (ms["sdpa"] / ms[name] if ms[name] else None) for name in ("favor", "performer")
                }
                results["timings"].append(row)
                print(json.dumps(row), flush=True)
    for causal in (False, True):
        for length in lengths:
            results["errors"].append({"length": length, "causal": causal, **relative_errors(length, causal)})
            print(json.dumps(results["errors"][-1]), flush=True)
    results["decode"] = decode_latency(contexts)
    results["crossover"] = {}
    for causal in (False, True):
        for backward in (False, True):
            rows = [r for r in results["timings"] if r["causal"] == causal and r["backward"] == backward]
            flat = [{"length": r["length"], **r["ms"]} for r in rows]
            key = f"{'causal' if causal else 'non_causal'}_{'fwd_bwd' if backward else 'fwd'}"
            results["crossover"][key] = crossover(flat, "sdpa", "favor")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "favor_bench.json").write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / "favor_bench.png")
    print("crossover (first L where favor beats sdpa):", results["crossover"])


if __name__ == "__main__":
    main()
