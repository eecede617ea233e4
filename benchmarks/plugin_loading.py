"""Cold start of ``hfplug plugins``: wall and CPU time of a new process, before and after lazy plugin loading.

Each run is ``python -m hfplug plugins --json`` in a new interpreter whose ``PYTHONPATH`` puts one source tree's
core and plugin sources first (the installed distributions only provide the entry points). The trees alternate
run by run, so a change in machine load hits both alike. ``python -c "import hfplug"`` in the same tree is the
floor (interpreter start plus the core). Each tree also reports which of torch and transformers loading every
plugin imported.

    python benchmarks/plugin_loading.py                        # before = BEFORE_REVISION, after = this tree
    python benchmarks/plugin_loading.py --before <rev> --runs 21

Writes examples/results/plugin_loading.json.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.numerics import cpu_model, load_average  # noqa: E402

RESULTS = ROOT / "examples" / "results" / "plugin_loading.json"
BEFORE_REVISION = "3c04f75"  # the last commit whose plugin packages imported torch when plugins loaded
PLUGINS = ("adversarial", "favor", "imbalance", "noloop", "theseus", "wobert")
HEAVY = ("torch", "transformers")
COMMANDS = {
    "hfplug plugins --json": ["-m", "hfplug", "plugins", "--json"],
    "import hfplug (floor)": ["-c", "import hfplug"],
}
HEAVY_PROBE = (
    "import json, sys, hfplug; hfplug.load_plugins(); "
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
)


def source_path(tree: Path) -> str:
    """``PYTHONPATH`` for ``tree``: its core and plugin sources."""
    return os.pathsep.join(str(tree / part) for part in ["src", *(f"plugins/{p}/src" for p in PLUGINS)])


def tree_env(tree: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "HFPLUG_PLUGINS"}  # load every plugin
    return {**env, "PYTHONPATH": source_path(tree)}


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system) of ``python *args`` in a new process, and its stdout."""
    cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_end.ru_utime - cpu_start.ru_utime + cpu_end.ru_stime - cpu_start.ru_stime
    return wall, cpu, done.stdout


def extract(revision: str, into: Path) -> Path:
    """The files of ``revision`` of this repository, written under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def summary(seconds: list[float]) -> dict:
    return {
        "median": round(statistics.median(seconds), 4),
        "min": round(min(seconds), 4),
        "max": round(max(seconds), 4),
        "runs": [round(s, 4) for s in seconds],
    }


def measure(trees: dict[str, Path], runs: int) -> dict:
    envs = {label: tree_env(tree) for label, tree in trees.items()}
    for env in envs.values():  # warm the file cache and bytecode of both trees once, untimed
        run(COMMANDS["hfplug plugins --json"], env)
    times = {label: {c: ([], []) for c in COMMANDS} for label in trees}  # (wall, cpu) seconds
    for _ in range(runs):
        for command, args in COMMANDS.items():
            for label, env in envs.items():
                wall, cpu, _ = run(args, env)
                times[label][command][0].append(wall)
                times[label][command][1].append(cpu)
    result = {}
    for label, env in envs.items():
        listing = json.loads(run(COMMANDS["hfplug plugins --json"], env)[2])
        result[label] = {
            "heavy_modules_after_loading": json.loads(run(["-c", HEAVY_PROBE], env)[2]),
            "plugins_loaded": sorted(p["name"] for p in listing if p["error"] is None),
            **{
                command: {"wall_s": summary(wall), "cpu_s": summary(cpu)}
                for command, (wall, cpu) in times[label].items()
            },
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE_REVISION, help="git revision measured as 'before'")
    parser.add_argument(
        "--runs", type=int, default=15, help="timed runs per command and tree (median reported)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    environment = {
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "transformers": metadata.version("transformers"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": extract(args.before, Path(tmp)), "after": ROOT}
        results = measure(trees, args.runs)
    environment["load_average_end"] = load_average()
    command = "hfplug plugins --json"
    report = {
        "what": "wall and CPU time of a new process running `python -m hfplug plugins --json` (all six "
        "plugins), before and after lazy plugin loading; `import hfplug` is the floor",
        "before_revision": args.before,
        "runs": args.runs,
        "environment": environment,
        "results": results,
        "after_over_before": {
            unit: round(
                results["after"][command][unit]["median"] / results["before"][command][unit]["median"], 3
            )
            for unit in ("wall_s", "cpu_s")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for label, row in results.items():
        timed, floor = row[command], row["import hfplug (floor)"]
        print(
            f"{label:6s} {command}: median wall {timed['wall_s']['median']:.3f} s, CPU {timed['cpu_s']['median']:.3f} s "
            f"(floor: {floor['wall_s']['median']:.3f} s, {floor['cpu_s']['median']:.3f} s); loading imports "
            f"{', '.join(row['heavy_modules_after_loading']) or 'neither torch nor transformers'}"
        )
    ratios = report["after_over_before"]
    print(f"after / before: wall {ratios['wall_s']:.3f}, CPU {ratios['cpu_s']:.3f}  -> {args.out}")


if __name__ == "__main__":
    main()
