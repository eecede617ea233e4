"""Run each plugin's tests in a fresh venv that holds only the core and that plugin.

The heavy third-party packages come from a hard-linked copy of .venv's site-packages with every hfplug
distribution removed, so a plugin that silently imports another plugin (or relies on one being installed)
fails here. Usage: python scripts/test_isolated.py plugins/NAME [plugins/NAME ...]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".venv-isolated"


def _is_hfplug(entry: Path) -> bool:
    name = entry.name.lower()
    return name.startswith(("hfplug", "_hfplug", "__editable__.hfplug", "__editable___hfplug"))


def build_base() -> Path:
    """Hard-linked copy of the current site-packages without any hfplug distribution."""
    base = WORK / "base-site-packages"
    if base.exists():
        shutil.rmtree(base)
    WORK.mkdir(exist_ok=True)
    source = Path(sysconfig.get_paths()["purelib"])
    subprocess.run(["cp", "-al", str(source), str(base)], check=True)
    for entry in base.iterdir():
        if _is_hfplug(entry):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return base


def run_plugin(plugin_dir: Path, base: Path) -> tuple[bool, str]:
    name = plugin_dir.name
    env_dir = WORK / name
    if env_dir.exists():
        shutil.rmtree(env_dir)
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "hfplug_isolated_base.pth").write_text(f"{base}\n")
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    subprocess.run([*install, "--no-build-isolation", "-e", str(ROOT), "-e", str(plugin_dir)], check=True)

    listing = subprocess.run(
        [python, "-m", "hfplug", "plugins", "--json"], capture_output=True, text=True, cwd=ROOT
    )
    plugins = json.loads(listing.stdout or "[]")
    names = [p["name"] for p in plugins]
    if names != [f"hfplug-{name}"] or listing.returncode != 0:
        return False, f"expected exactly hfplug-{name} to load, got {names}: {listing.stderr[-2000:]}"

    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin_dir)], cwd=ROOT
    )
    return tests.returncode == 0, f"pytest exit code {tests.returncode}"


def main(argv: list[str]) -> int:
    if not argv:
        print("no plugin folders under plugins/: nothing to isolate")
        return 0
    base = build_base()
    failures = []
    for arg in argv:
        plugin_dir = (ROOT / arg).resolve()
        print(f"=== isolated: {plugin_dir.name} (core + this plugin only)", flush=True)
        ok, detail = run_plugin(plugin_dir, base)
        print(f"=== {plugin_dir.name}: {'ok' if ok else 'FAILED'} ({detail})", flush=True)
        if not ok:
            failures.append(plugin_dir.name)
    if failures:
        print(f"isolated test runs failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"isolated test runs passed: {len(argv)} plugins")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
