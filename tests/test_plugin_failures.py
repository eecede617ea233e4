"""A broken plugin is reported by distribution, version and entry point, keeps nothing registered and takes
down neither the host process nor the lookups of healthy plugins."""

from __future__ import annotations

import json

import pytest

import hfplug
import hfplug.cli
import hfplug.plugins
from hfplug import DuplicateComponentError, InvalidComponentError, PluginLoadError, UnknownComponentError
from hfplug.registry import KNOWN_PROVIDERS
from hfplug.testing import write_plugin_distribution

LOOKUPS = """
import hfplug
processor = hfplug.get_logits_processor("ban_token", token_id=5)
print(type(processor).__module__, type(processor).__name__)
try:
    hfplug.get_loss("nope")
except hfplug.UnknownComponentError as exc:
    print(exc)
"""


def _listing() -> dict[str, dict]:
    return {p["name"]: p for p in hfplug.list_plugins()}


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("exit_at_import", "failed to import: SystemExit: 7"),
        ("exit_in_hook", "raised in register_losses: SystemExit: 7"),
        ("base_exception_in_hook", "raised in register_losses: PluginAbort: gave up"),
    ],
)
def test_base_exception_is_reported_and_never_ends_the_process(fake_plugins, source, what):
    fake_plugins.add("fake-exit", source, version="0.3")
    fake_plugins.add("fake-complete", "complete")
    select = "fake-exit,fake-complete"
    expected = f"fake-exit 0.3 (entry point 'fake-exit' -> module 'fake_exit_hooks') {what}"

    cli = fake_plugins.run("-m", "hfplug", "plugins", "--json", select=select)
    assert cli.returncode == 1, cli.stderr  # the status for "a plugin is broken", not the plugin's 7
    listing = {p["name"]: p for p in json.loads(cli.stdout)}
    assert listing["fake-exit"]["error"] == expected
    assert listing["fake-exit"]["registered"] == {}
    assert listing["fake-complete"]["error"] is None

    lookups = fake_plugins.run("-c", LOOKUPS, select=select)
    assert lookups.returncode == 0, lookups.stderr
    healthy, unknown = lookups.stdout.splitlines()
    assert healthy == "fake_complete_hooks BanToken"
    assert unknown.startswith("no loss named 'nope'.") and expected in unknown


def test_keyboard_interrupt_propagates_and_the_next_lookup_loads_again(fake_plugins):
    fake_plugins.add("fake-interrupt", "interrupt_in_hook")
    fake_plugins.select("fake-interrupt")
    with pytest.raises(KeyboardInterrupt):
        hfplug.list_plugins()
    with pytest.raises(KeyboardInterrupt):  # not a half-loaded listing
        hfplug.list_plugins()


def test_healthy_lookups_work_while_another_plugin_is_broken(fake_plugins):
    fake_plugins.add("fake-broken", "broken_import", version="0.9")
    fake_plugins.add("fake-complete", "complete")
    fake_plugins.select("fake-broken", "fake-complete")

    processor = hfplug.get_logits_processor("ban_token", token_id=5)
    assert (type(processor).__module__, type(processor).__name__) == ("fake_complete_hooks", "BanToken")
    assert type(hfplug.get_callback("counting")).__name__ == "CountingCallback"

    with pytest.raises(UnknownComponentError) as info:
        hfplug.get_loss("nope")
    message = str(info.value)
    assert (
        "fake-broken 0.9 (entry point 'fake-broken' -> module 'fake_broken_hooks') failed to import"
        in message
    )
    assert "this_module_does_not_exist" in message
    with pytest.raises(PluginLoadError, match=r"fake-broken 0\.9"):
        hfplug.load_plugins()  # still strict when asked


def test_lookup_of_a_broken_plugins_own_name_blames_it(fake_plugins):
    fake_plugins.add("fake-half", "fails_after_register", version="1.5")
    fake_plugins.select("fake-half")
    with pytest.raises(PluginLoadError) as info:
        hfplug.get_loss("half_loss")
    assert str(info.value).startswith(
        "loss 'half_loss' is provided by fake-half 1.5, which failed to load: "
        "fake-half 1.5 (entry point 'fake-half' -> module 'fake_half_hooks') raised in register_losses: "
        "RuntimeError: boom after register"
    )
    assert isinstance(info.value.__cause__, PluginLoadError)


def test_lookup_of_a_known_name_of_a_plugin_that_failed_to_import_blames_it(fake_plugins, monkeypatch):
    monkeypatch.setitem(KNOWN_PROVIDERS["loss"], "focal", "fake-broken")
    fake_plugins.add("fake-broken", "broken_import", version="0.9")
    fake_plugins.select("fake-broken")
    with pytest.raises(PluginLoadError, match=r"^loss 'focal' is provided by fake-broken 0\.9, which failed"):
        hfplug.get_loss("focal")


def test_registration_is_all_or_nothing(fake_plugins):
    fake_plugins.add("fake-half", "fails_after_register")
    fake_plugins.add("fake-focal", "focal_loss")
    fake_plugins.select("fake-half", "fake-focal")
    registry = hfplug.plugins.get_system().registry
    hfplug.list_plugins()
    assert registry.names("callback") == []  # registered by fake-half's first hook, before the second raised
    assert registry.names("loss") == ["focal"]
    assert _listing()["fake-half"]["registered"] == {}
    with pytest.raises(PluginLoadError, match="'half_callback' is provided by fake-half"):
        hfplug.get_callback("half_callback")


@pytest.mark.parametrize("shadow", ["aaa-shadow", "zzz-shadow"])  # loads before, or after, fake-complete
def test_duplicate_name_blames_both_distributions_and_keeps_the_rest(fake_plugins, capsys, shadow):
    fake_plugins.add("fake-complete", "complete", version="1.0")
    fake_plugins.add(shadow, "shadowing_loss", version="2.0")
    fake_plugins.select("fake-complete", shadow)

    with pytest.raises(DuplicateComponentError) as info:
        hfplug.get_loss("scaled_ce")
    both = " and ".join(sorted(["fake-complete 1.0", f"{shadow} 2.0"]))
    assert str(info.value).startswith(f"loss 'scaled_ce' is registered by {both}; neither is used")
    assert hfplug.get_loss("own_loss") is not None
    assert type(hfplug.get_callback("counting")).__name__ == "CountingCallback"

    listing = _listing()
    assert listing["fake-complete"]["error"] is None and listing[shadow]["error"] is None
    assert listing["fake-complete"]["conflicts"] == [f"loss 'scaled_ce' is also registered by {shadow} 2.0"]
    assert listing[shadow]["conflicts"] == ["loss 'scaled_ce' is also registered by fake-complete 1.0"]
    assert "loss" not in listing["fake-complete"]["registered"]
    assert listing[shadow]["registered"] == {"loss": ["own_loss"]}
    with pytest.raises(DuplicateComponentError):
        hfplug.load_plugins()

    assert hfplug.cli.main(["plugins"]) == 1
    table = capsys.readouterr().out
    assert f"CONFLICT: loss 'scaled_ce' is also registered by {shadow} 2.0" in table
    assert "CONFLICT: loss 'scaled_ce' is also registered by fake-complete 1.0" in table


def test_a_plugin_registering_one_name_twice_is_broken(fake_plugins):
    fake_plugins.add("fake-twice", "registers_twice")
    fake_plugins.select("fake-twice")
    with pytest.raises(
        DuplicateComponentError, match=r"^fake-twice 0\.0\.1 .* registers loss 'twice' twice$"
    ):
        hfplug.load_plugins()


def test_selection_matches_distribution_names_not_entry_point_names(fake_plugins):
    fake_plugins.add("hfplug-shout", "focal_loss", entry_point="shout")
    fake_plugins.add("acme-tools", "complete", entry_point="shout")
    for select, expected in [
        ("shout", ["hfplug-shout"]),  # short for hfplug-shout; acme-tools' entry point name does not count
        ("hfplug-shout", ["hfplug-shout"]),
        ("acme-tools", ["acme-tools"]),
        ("Acme.Tools,HFPLUG_SHOUT", ["acme-tools", "hfplug-shout"]),  # compared as pip compares names
    ]:
        fake_plugins.select(select)
        assert list(_listing()) == expected, select


def test_an_entry_point_name_alone_selects_nothing(fake_plugins):
    fake_plugins.add("acme-tools", "complete", entry_point="tools")
    fake_plugins.select("tools")
    with pytest.raises(PluginLoadError, match="HFPLUG_PLUGINS names tools, which is not an installed"):
        hfplug.load_plugins()
    assert "acme-tools" not in _listing()


def test_a_short_name_that_is_also_a_distribution_name_is_ambiguous(fake_plugins):
    fake_plugins.add("hfplug-shout", "focal_loss")
    fake_plugins.add("shout", "complete")
    fake_plugins.select("shout")
    (entry,) = hfplug.list_plugins()
    assert entry["error"] == (
        "HFPLUG_PLUGINS names shout, which is both the distribution shout and short for hfplug-shout; "
        "write the full name"
    )


@pytest.mark.parametrize(
    ("getter", "plural"), [("get_loss", "losses"), ("use_attention", "attention backends")]
)
def test_unknown_name_lists_installed_components_under_the_plural(fake_plugins, getter, plural):
    fake_plugins.add("fake-focal", "focal_loss")
    fake_plugins.select("fake-focal")
    with pytest.raises(UnknownComponentError) as info:
        getattr(hfplug, getter)("nope")
    installed = "focal (fake-focal)" if plural == "losses" else "none"
    assert f" Installed {plural}: {installed}." in str(info.value)


def test_malformed_entry_point_value_is_reported(fake_plugins):
    write_plugin_distribution(fake_plugins.root, "fake-badvalue", {}, {"bad": "not a module!"})
    fake_plugins.add("fake-focal", "focal_loss")
    fake_plugins.select("fake-badvalue", "fake-focal")
    listing = _listing()
    assert listing["fake-badvalue"]["error"] == (
        "fake-badvalue 0.0.1 (entry point 'bad' -> module 'not a module!'): the entry point's value is not "
        "'module' or 'module:attribute'"
    )
    assert listing["fake-focal"]["registered"] == {"loss": ["focal"]}


def test_two_entry_points_loading_one_module_are_reported(fake_plugins):
    fake_plugins.add("fake-complete", "complete")
    write_plugin_distribution(fake_plugins.root, "fake-alias", {}, {"alias": "fake_complete_hooks"})
    fake_plugins.select("fake-alias", "fake-complete")
    listing = _listing()  # fake-alias loads first (distributions load sorted by name)
    assert listing["fake-complete"]["error"] == (
        "fake-complete 0.0.1 (entry point 'fake-complete' -> module 'fake_complete_hooks'): this module is "
        "already loaded by fake-alias 0.0.1 (entry point 'alias' -> module 'fake_complete_hooks')"
    )
    assert listing["fake-alias"]["error"] is None
    assert type(hfplug.get_callback("counting")).__name__ == "CountingCallback"


@pytest.mark.parametrize(
    ("source", "pattern", "error"),
    [
        (
            "no_hooks",
            r"implements no hfplug hook \(is each hook decorated with @hfplug\.hookimpl\?\)$",
            PluginLoadError,
        ),
        (
            "returns_value",
            r"register_losses returned \[\('returned', .*\]: hooks call register\(\.\.\.\) and return None$",
            PluginLoadError,
        ),
        (
            "missing_argument",
            r"register_losses takes register\(name, factory\): missing a required argument: 'factory'$",
            InvalidComponentError,
        ),
    ],
)
def test_hooks_that_register_nothing_usable_are_reported(fake_plugins, source, pattern, error):
    name = "fake-" + source.replace("_", "-")
    fake_plugins.add(name, source, version="3.1")
    fake_plugins.select(name)
    with pytest.raises(error, match=rf"^{name} 3\.1 \(entry point '{name}' -> module '.*'\):? {pattern}"):
        hfplug.load_plugins()


def test_a_plugin_that_swallows_its_own_registration_error_is_still_broken(fake_plugins):
    fake_plugins.add("fake-swallow", "swallows_register_error", version="1.2")
    fake_plugins.select("fake-swallow")
    with pytest.raises(InvalidComponentError, match=r"^fake-swallow 1\.2 .*'bad_loss'.*callable"):
        hfplug.load_plugins()
    assert _listing()["fake-swallow"]["registered"] == {}
    with pytest.raises(
        PluginLoadError, match=r"loss 'kept_loss' is provided by fake-swallow 1\.2, which failed"
    ):
        hfplug.get_loss("kept_loss")


def test_register_called_after_its_hook_returned_is_an_error(fake_plugins):
    module = fake_plugins.add("fake-later", "registers_later", version="0.9")
    fake_plugins.select("fake-later")
    hfplug.load_plugins()
    import sys

    with pytest.raises(
        PluginLoadError, match=r"^fake-later 0\.9 .*'late_loss' after register_losses has returned"
    ):
        sys.modules[module].register_late()
    with pytest.raises(UnknownComponentError):
        hfplug.get_loss("late_loss")
    assert hfplug.get_loss("early_loss") is None


def test_unknown_name_of_an_installed_but_unselected_plugin_says_so(fake_plugins, monkeypatch):
    fake_plugins.add("fake-complete", "complete")
    fake_plugins.select("fake-complete")
    with pytest.raises(UnknownComponentError) as info:
        hfplug.get_loss("focal")
    message = str(info.value)
    assert (
        "hfplug-imbalance, which is installed but HFPLUG_PLUGINS='fake-complete' does not select it"
        in message
    )
    assert "pip install" not in message
