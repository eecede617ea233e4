"""How the demo's table moves with the CPU numerics: the quick preset under several thread counts, kernel sets
and machine loads, each in its own process, compared with the default run value by value.

    python scripts/demo_numerics.py        # about 30 minutes on 2 cores; writes examples/results/demo_numerics.json

Runs: the default (1 thread, AVX2 kernels); the default again with a busy-loop process holding one core; 2
threads; and the CPU's native kernels (the AVX2 cap lifted). A run "repeats the default" when every number of
its results.json except timings, date and load equals the default run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.numerics import PINNED_KERNELS  # noqa: E402

OUT = ROOT / "examples" / "results" / "demo_numerics.json"
VOLATILE = {"seconds", "train_seconds", "latency_ms", "date", "load_average", "load_average_end"}
NATIVE = {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"}

RUNS = [
    ("default", "1 thread, AVX2 kernels (the defaults)", [], {}, False),
    ("busy_core", "the defaults, another process busy on one core", [], {}, True),
    ("two_threads", "2 threads, AVX2 kernels", ["--threads", "2"], {}, False),
    ("native_kernels", "1 thread, the CPU's own kernels (AVX-512 here)", [], NATIVE, False),
]


def stable(value):
    """``value`` without what is measured or depends on the moment (timings, date, load)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    return value


def headline(results: dict) -> dict:
    clf, gen = results["classifiers"], results["generation"]
    return {
        "balanced_accuracy": {key: clf[key]["balanced_accuracy"] for key in clf},
        "non_termination": {key: gen[key]["non_termination"] for key in ("plain", "noloop")},
        "rep_4": {key: gen[key]["rep_4"] for key in ("plain", "noloop")},
    }


def run_demo(name: str, argv: list[str], env_update: dict, busy: bool) -> dict:
    out_dir = ROOT / "runs" / "demo-numerics" / name
    env = {k: v for k, v in os.environ.items() if k not in PINNED_KERNELS} | env_update
    command = [sys.executable, "-m", "demo", "--no-progress", "--output-dir", str(out_dir), *argv]
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    start = time.perf_counter()
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        if competitor is not None:
            competitor.kill()
    wall = time.perf_counter() - start
    results = json.loads((out_dir / "results.json").read_text())
    return {"results": results, "wall_seconds": wall}


def main() -> None:
    runs, default = [], None
    for name, label, argv, env_update, busy in RUNS:
        print(f"[demo-numerics] {name}: {label}", flush=True)
        done = run_demo(name, argv, env_update, busy)
        results = done["results"]
        default = default or results
        runs.append(
            {
                "name": name,
                "label": label,
                "argv": argv,
                "env": env_update,
                "busy_core": busy,
                "wall_seconds": round(done["wall_seconds"], 1),
                "pipeline_seconds": round(results["seconds"], 1),
                "environment": results["environment"],
                "repeats_default": stable(results) == stable(default),
                **headline(results),
            }
        )
        print(
            f"[demo-numerics] {name}: {runs[-1]['wall_seconds']:.0f} s, repeats default: {runs[-1]['repeats_default']}"
        )
    OUT.write_text(json.dumps({"command": "python scripts/demo_numerics.py", "runs": runs}, indent=2) + "\n")
    print(f"[demo-numerics] wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
