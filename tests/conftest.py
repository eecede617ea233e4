from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hfplug.plugins
from hfplug.testing import write_plugin_distribution

FAKE_PLUGINS = Path(__file__).parent / "fake_plugins"


class FakePlugins:
    """Builds installed-looking plugin distributions in a temporary folder on sys.path."""

    def __init__(self, root, monkeypatch):
        self.root = root
        self.monkeypatch = monkeypatch
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def add(self, name: str, source: str, version: str = "0.0.1", entry_point: str | None = None) -> str:
        """Install distribution ``name`` whose entry point loads ``tests/fake_plugins/<source>.py``."""
        module = name.replace("-", "_") + "_hooks"
        code = (FAKE_PLUGINS / f"{source}.py").read_text(encoding="utf-8")
        write_plugin_distribution(self.root, name, {module: code}, {entry_point or name: module}, version)
        self.modules.append(module)
        importlib.invalidate_caches()
        return module

    def select(self, *names: str) -> None:
        self.monkeypatch.setenv("HFPLUG_PLUGINS", ",".join(names))
        hfplug.plugins.reset()

    @property
    def pythonpath(self) -> str:
        return str(self.root)

    def run(self, *args: str, select: str) -> subprocess.CompletedProcess:
        """Run ``python *args`` in a new process that sees these distributions, with ``HFPLUG_PLUGINS=select``."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([self.pythonpath, os.environ.get("PYTHONPATH", "")]),
            "HFPLUG_PLUGINS": select,
        }
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    hfplug.plugins.reset()
    plugins = FakePlugins(tmp_path, monkeypatch)
    yield plugins
    for module in plugins.modules:
        sys.modules.pop(module, None)
    hfplug.plugins.reset()
