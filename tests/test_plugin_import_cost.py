"""Loading the first-party plugins imports neither torch nor transformers; each check runs in a new process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from hfplug.plugins import SELECT_ENV_VAR
from hfplug.registry import KNOWN_PROVIDERS

PLUGINS = ["adversarial", "favor", "imbalance", "noloop", "theseus", "wobert"]
HEAVY = ("torch", "transformers")

# what each plugin registers, from the core's table of first-party names (not from the plugins' hooks)
EXPECTED = {
    plugin: {
        label: sorted(name for name, provider in names.items() if provider == f"hfplug-{plugin}")
        for label, names in KNOWN_PROVIDERS.items()
        if f"hfplug-{plugin}" in names.values()
    }
    for plugin in PLUGINS
}


def _python(*args: str, select: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != SELECT_ENV_VAR}
    if select is not None:
        env[SELECT_ENV_VAR] = select
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def _run(code: str, select: str | None = None) -> dict:
    """Run ``code`` in a new Python process; it prints one JSON line, returned parsed."""
    return json.loads(_python("-c", code, select=select).stdout.splitlines()[-1])


REPORT_HEAVY = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_importing_a_plugin_package_and_hooks_imports_neither_torch_nor_transformers(plugin):
    assert _run(f"import json, sys, hfplug_{plugin}, hfplug_{plugin}._hooks; {REPORT_HEAVY}") == []


@pytest.mark.parametrize("plugin", PLUGINS)
def test_loading_one_plugin_imports_neither_torch_nor_transformers(plugin):
    code = (
        "import json, sys, hfplug; hfplug.load_plugins(); listing = hfplug.list_plugins(); "
        f"print(json.dumps([sorted(m for m in {HEAVY!r} if m in sys.modules), listing]))"
    )
    heavy, listing = _run(code, select=plugin)
    assert heavy == []
    (info,) = listing
    assert info["name"] == f"hfplug-{plugin}" and info["error"] is None
    assert info["registered"] == EXPECTED[plugin]


def test_load_plugins_loads_all_six_without_torch_or_transformers():
    code = (
        "import json, sys, hfplug; hfplug.load_plugins(); "
        f"print(json.dumps([sorted(m for m in {HEAVY!r} if m in sys.modules), hfplug.list_plugins()]))"
    )
    heavy, listing = _run(code)
    assert heavy == []
    loaded = {info["name"]: info for info in listing}
    for plugin in PLUGINS:
        assert loaded[f"hfplug-{plugin}"]["error"] is None
        assert loaded[f"hfplug-{plugin}"]["registered"] == EXPECTED[plugin]


def test_cli_plugins_json_imports_neither_torch_nor_transformers():
    # the console script's function, run as `hfplug plugins --json` runs it; an atexit hook reports sys.modules
    code = (
        "import atexit, sys; "
        f"atexit.register(lambda: sys.stderr.write(repr(sorted(m for m in {HEAVY!r} if m in sys.modules)))); "
        "from hfplug.cli import main; sys.exit(main(['plugins', '--json']))"
    )
    result = _python("-c", code)
    assert result.stderr.splitlines()[-1] == "[]"
    listing = {info["name"]: info for info in json.loads(result.stdout)}
    assert all(listing[f"hfplug-{plugin}"]["registered"] == EXPECTED[plugin] for plugin in PLUGINS)


def test_use_attention_favor_registers_the_backend_after_a_light_load():
    code = (
        "import json, sys, hfplug; hfplug.load_plugins(); "
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules); "
        "name = hfplug.use_attention('favor'); "
        "from transformers import AttentionInterface; "
        "from transformers.masking_utils import AttentionMaskInterface, sdpa_mask; "
        "from hfplug_favor import favor_attention_forward; "
        "print(json.dumps([heavy, name, AttentionInterface._global_mapping[name] is favor_attention_forward, "
        "AttentionMaskInterface._global_mapping[name] is sdpa_mask]))"
    )
    assert _run(code) == [[], "favor", True, True]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_public_name_imports_from_the_package(plugin):
    package = importlib.import_module(f"hfplug_{plugin}")
    assert set(package.__all__) <= set(dir(package))
    for name in (n for n in package.__all__ if not n.startswith("__")):
        value = getattr(package, name)
        home = getattr(value, "__module__", None) or value.__name__  # a class or function, or a submodule
        assert home.startswith(f"hfplug_{plugin}"), (name, home)
    with pytest.raises(AttributeError, match=f"hfplug_{plugin}.*no_such_name"):
        package.no_such_name  # noqa: B018
