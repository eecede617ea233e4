"""The demo's CPU numerics: fixed kernels and a fixed thread count, so that a seed gives one table.

Floating-point addition is not associative. torch splits reductions and matrix products across its threads,
and picks kernels by CPU: ATen's vectorised loops (AVX2 or AVX-512), oneDNN's JIT code, MKL. Each choice
rounds differently, and after 300 training steps and greedy decoding one ulp at the first step is a different
table. On this project's 2-core machines the gradient of one tiny BERT step already differs bit-wise between
1 and 2 threads, and between ATen's AVX2 and AVX-512 kernels.

``pin_cpu_kernels`` caps ATen, oneDNN and MKL at AVX2, which every x86-64 server CPU of the last decade has
(they read these variables when their first kernel runs, so ``main`` calls it before anything computes); the
thread count is ``--threads``. Variables already set in the environment win, and ``environment()`` records
what was in force in ``results.json``.
"""

from __future__ import annotations

import datetime
import os
import platform

PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def pin_cpu_kernels() -> None:
    """Default ``PINNED_KERNELS`` into ``os.environ`` on x86-64; effective only before torch's first kernel."""
    if platform.machine().lower() in {"x86_64", "amd64"}:
        for name, value in PINNED_KERNELS.items():
            os.environ.setdefault(name, value)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def environment() -> dict:
    """What decides the numbers (torch, kernels, threads) and the timings (CPU, load), for ``results.json``."""
    import torch

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_env": {name: os.environ.get(name) for name in PINNED_KERNELS},
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
