"""FAVOR+ vs its arithmetic floor vs torch SDPA vs performer-pytorch FastAttention on CPU (fp32, batch 1,
8 heads, head dim 64, m=256).

Times forward (inference_mode) and forward+backward, non-causal and causal, interleaving the methods per
repeat and reporting medians and quartiles of the CPU time of each call (one torch thread: the calling
thread's CPU time is the call's cost, and it barely moves when other processes share the cores; wall medians
are recorded too); peak extra RSS of one call in a fresh process; relative error against exact attention (and
the error of uniform attention, the trivial output FAVOR+ must beat); decode-step latency against context
length (favor with a FavorCache: O(1) state vs SDPA over the full KV cache).

The floor is what FAVOR+ cannot avoid, with nothing else: q and k times the projection, the exponentials,
the key norms (folded into the values as exp(-|k|²/2)), k'ᵀ[v, 1] (numerator and normaliser in one
product), q'(k'ᵀ[v, 1]) and the division; causal: the same in chunks of C = 128 (k'ᵀ[v, 1] per chunk, their
prefix sums over chunks, the masked in-chunk products). No stabilisers, masks, checks or key shift. "floor"
runs each op once on the full (1, 8, L, ·) tensors; "floor_blocked" runs the same ops in the blocks FAVOR+
uses (non-causal: row blocks of about 2^18 feature entries; causal: one head at a time), which keeps the
features in cache. Forward+backward of a floor = the autograd of the same ops. Every run first checks that
both floors give favor_attention's output (shift_keys off) to float rounding.

    python plugins/favor/bench/bench_favor.py                          # everything, L = 512..4096
    python plugins/favor/bench/bench_favor.py --full --only causal_fwd # one part, L = 512..16384

Parts (``--only``, repeatable): noncausal_fwd, noncausal_fwd_bwd, causal_fwd, causal_fwd_bwd, errors,
decode. Each run merges its rows into bench/results/favor_bench.json (same length/mode replaced; peak memory
of methods not probed in this run (``--memory-methods``) is kept from the replaced row), records the load
average, and redraws favor_bench.png. SDPA and performer calls slower than SLOW_CALL_S get fewer repeats
(about SLOW_BUDGET_S of CPU per configuration; their warm-up call counts as a sample); favor and the floors
always get ``--repeats``.
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

HEADS, HEAD_DIM, FEATURES, CHUNK = 8, 64, 256, 128
RESULTS = Path(__file__).parent / "results"
METHODS = ("sdpa", "favor", "performer", "floor", "floor_blocked")
BASELINES = ("sdpa", "performer")  # the only methods whose repeats shrink when one call is slow
SLOW_LIMIT_S = 20.0  # performer only: a warm-up call of more CPU seconds drops it for longer lengths
SLOW_CALL_S, SLOW_BUDGET_S = 1.0, 3.0  # CPU seconds
BLOCK_FEATURES = 1 << 18  # the non-causal row blocks of hfplug_favor.attention (_BLOCK_FEATURES)
MEMORY_METHODS = ("sdpa", "favor", "performer")
MEMORY_LENGTHS = (1024, 4096)  # fresh-process memory probes of the default sweep (--full: every length)
PERFORMER_CAUSAL_MAX = 8192
PERFORMER_CAUSAL_BWD_MAX = 4096
PARTS = ("noncausal_fwd", "noncausal_fwd_bwd", "causal_fwd", "causal_fwd_bwd", "errors", "decode")


def _features(x: torch.Tensor, projection_t: torch.Tensor) -> torch.Tensor:
    return (x @ projection_t).exp_()


def _weighted_values(key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
    """[v, 1]·exp(-scaling |k|²/2): the key features' offset folded into the values (O(L·d), not O(L·m))."""
    weight = torch.exp(key.pow(2).sum(-1, keepdim=True).mul_(-0.5 * scaling))
    return torch.cat([value, torch.ones_like(weight)], -1).mul_(weight)


def _divide(numerator_and_denominator: torch.Tensor) -> torch.Tensor:
    return numerator_and_denominator[..., :-1] / numerator_and_denominator[..., -1:]


def floor_noncausal(q, k, v, projection_t: torch.Tensor, scaling: float, rows: int) -> torch.Tensor:
    """out = phi(q) (phi(k)ᵀ [v, 1]), divided; keys and queries in blocks of ``rows`` rows."""
    sums = sum(
        _features(k_block, projection_t).transpose(-2, -1) @ _weighted_values(k_block, v_block, scaling)
        for k_block, v_block in zip(k.split(rows, 2), v.split(rows, 2), strict=True)
    )
    return torch.cat([_divide(_features(q_block, projection_t) @ sums) for q_block in q.split(rows, 2)], 2)


def floor_causal(q, k, v, projection_t: torch.Tensor, scaling: float) -> torch.Tensor:
    """Chunks of CHUNK rows: masked in-chunk products plus q' times the prefix sums of earlier chunks."""
    B, H, L, _ = q.shape
    q_f, k_f = (_features(x, projection_t).view(B, H, L // CHUNK, CHUNK, -1) for x in (q, k))
    values = _weighted_values(k, v, scaling).view(B, H, L // CHUNK, CHUNK, -1)
    out = (q_f @ k_f.transpose(-2, -1)).tril_() @ values
    totals = (k_f.transpose(-2, -1) @ values).cumsum(2)  # inclusive prefix sums over chunks
    out[:, :, 1:] += q_f[:, :, 1:] @ totals[:, :, :-1]
    return _divide(out.view(B, H, L, -1))


def make_floor(causal: bool, blocked: bool):
    projection = gaussian_projection(FEATURES, HEAD_DIM, seed=0)
    scaling = HEAD_DIM**-0.5
    projection_t = (projection * scaling**0.5).T.contiguous()
    if causal:
        if not blocked:
            return lambda q, k, v: floor_causal(q, k, v, projection_t, scaling)
        return lambda q, k, v: torch.cat(
            [
                floor_causal(*heads, projection_t, scaling)
                for heads in zip(q.split(1, 1), k.split(1, 1), v.split(1, 1), strict=True)
            ],
            1,
        )

    def floor(q, k, v):
        rows = max(128, BLOCK_FEATURES // (q.shape[0] * q.shape[1] * FEATURES)) if blocked else q.shape[2]
        return floor_noncausal(q, k, v, projection_t, scaling, rows)

    return floor


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
    if name in ("floor", "floor_blocked"):
        return make_floor(causal, blocked=name == "floor_blocked")
    raise ValueError(name)


def check_floors(length: int = 1024) -> dict[str, float]:
    """Relative difference of each floor to favor_attention (same projection, shift_keys off): the floors
    compute FAVOR+'s output, so their times are a floor of the same computation."""
    q, k, v, _ = make_inputs(length, grad=False, seed=2)
    W = gaussian_projection(FEATURES, HEAD_DIM, seed=0)
    differences = {}
    with torch.inference_mode():
        for causal in (False, True):
            ours = favor_attention(q, k, v, W, causal=causal)[0]
            for blocked in (False, True):
                floor = make_floor(causal, blocked)(q, k, v)
                key = f"{'causal' if causal else 'non_causal'}_{'floor_blocked' if blocked else 'floor'}"
                differences[key] = float((floor - ours).norm() / ours.norm())
    if max(differences.values()) > 1e-4:
        raise RuntimeError(f"a floor does not compute FAVOR+'s output: relative differences {differences}")
    return differences


def make_inputs(length: int, grad: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(1, HEADS, length, HEAD_DIM, generator=g) for _ in range(4)]
    for t in tensors[:3]:
        t.requires_grad_(grad)
    return tensors


def run_once(fn, inputs, backward: bool) -> tuple[float, float]:
    """(wall ms, CPU ms) of one call."""
    q, k, v, upstream = inputs
    wall, cpu = time.perf_counter(), time.process_time()
    if backward:
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(upstream)
    else:
        with torch.inference_mode():
            fn(q, k, v)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


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


def _quartiles(values: list[float]) -> list[float]:
    return [values[0]] * 2 if len(values) == 1 else [statistics.quantiles(values, n=4)[i] for i in (0, 2)]


def time_config(length: int, causal: bool, backward: bool, skip: set[str], repeats: int) -> dict[str, dict]:
    """Per method: wall and CPU medians (ms), CPU quartiles and the number of calls timed."""
    if not performer_allowed(length, causal, backward):
        skip.add("performer")
    methods = {name: make_method(name, causal) for name in METHODS if name not in skip}
    inputs = make_inputs(length, backward)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    wanted = dict.fromkeys(methods, repeats)
    for name, fn in list(methods.items()):  # warm-up; drop performer if a single call is too slow
        wall, cpu = run_once(fn, inputs, backward)
        if name == "performer" and cpu > SLOW_LIMIT_S * 1000:
            skip.add(name)
            methods.pop(name)
        elif name in BASELINES and cpu > SLOW_CALL_S * 1000:  # first-call costs are noise at this size
            samples[name].append((wall, cpu))
            wanted[name] = max(1, min(repeats, int(SLOW_BUDGET_S * 1000 / cpu)))
    while any(len(samples[name]) < wanted[name] for name in methods):  # interleaved rounds
        for name, fn in methods.items():
            if len(samples[name]) < wanted[name]:
                samples[name].append(run_once(fn, inputs, backward))
    stats: dict[str, dict] = {"ms": {}, "cpu_ms": {}, "cpu_quartiles_ms": {}, "calls": {}}
    for name in METHODS:
        timed = samples.get(name) or []
        cpu = sorted(c for _, c in timed)
        stats["ms"][name] = statistics.median(w for w, _ in timed) if timed else None
        stats["cpu_ms"][name] = statistics.median(cpu) if timed else None
        stats["cpu_quartiles_ms"][name] = _quartiles(cpu) if timed else None
        stats["calls"][name] = len(timed)
    return stats


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

    colors = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "black", "tab:gray"), strict=True))
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for col, backward in enumerate((False, True)):
        mode = "forward+backward" if backward else "forward"
        for causal, style in ((False, "-"), (True, "--")):
            rows = [r for r in results["timings"] if r["causal"] == causal and r["backward"] == backward]
            for name in METHODS:
                points = [(r["length"], r["cpu_ms"][name]) for r in rows if r["cpu_ms"][name] is not None]
                if points:
                    axes[0, col].plot(
                        *zip(*points, strict=True),
                        style,
                        color=colors[name],
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
                        color=colors[name],
                        marker="o",
                        label=f"{name}{' causal' if causal else ''}",
                    )
        for row, ylabel in ((0, "median CPU time per call (ms)"), (1, "peak extra RSS (MiB)")):
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
    parser.add_argument(
        "--memory-methods",
        nargs="+",
        choices=MEMORY_METHODS,
        default=list(MEMORY_METHODS),
        help="methods whose peak memory is probed (the others keep the replaced row's value)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method and configuration")
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
        "note": "shared 2-core CPU machine; medians of interleaved repeats; ratios from CPU time per call; "
        "memory = one call, fresh process",
    }
    run = {
        "parts": parts,
        "lengths": lengths,
        "repeats": args.repeats,
        "memory_methods": [] if args.no_memory else args.memory_methods,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load": _load(),
    }
    if any(part.endswith(("fwd", "fwd_bwd")) for part in parts):
        results["floor_check"] = check_floors()
        print("floors vs favor_attention, relative difference:", results["floor_check"], flush=True)
    old_rows = {(r["causal"], r["backward"], r["length"]): r for r in results.get("timings", [])}
    timings = []
    for part in parts:
        if part in ("errors", "decode"):
            continue
        causal, backward = part.startswith("causal"), part.endswith("fwd_bwd")
        skip: set[str] = set()
        for length in lengths:
            stats = time_config(length, causal, backward, skip, args.repeats)
            cpu = stats["cpu_ms"]
            peak = dict(old_rows.get((causal, backward, length), {}).get("peak_mib", {}))
            if not args.no_memory and (args.full or length in MEMORY_LENGTHS):
                for name in args.memory_methods:
                    peak[name] = peak_memory_mib(name, length, causal, backward) if cpu[name] else None
            row = {"length": length, "causal": causal, "backward": backward, **stats, "peak_mib": peak}
            row["speedup_vs_sdpa"] = {
                name: (cpu["sdpa"] / cpu[name] if cpu[name] else None) for name in ("favor", "performer")
            }
            row["favor_vs_performer"] = cpu["performer"] / cpu["favor"] if cpu["performer"] else None
            row["favor_vs_floor"] = {name: cpu["favor"] / cpu[name] for name in ("floor", "floor_blocked")}
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
            flat = [{"length": r["length"], **r["cpu_ms"]} for r in rows]
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
