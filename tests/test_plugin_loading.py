"""Discovery through real entry points of distributions installed into a temporary folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import hfplug
from hfplug import DuplicateComponentError, InvalidComponentError, PluginLoadError, UnknownComponentError
from hfplug.registry import KNOWN_PROVIDERS


def test_complete_plugin_registers_every_kind(fake_plugins):
    fake_plugins.add("fake-complete", "complete", version="1.2.3")
    fake_plugins.select("fake-complete")

    from transformers import BertTokenizer, LogitsProcessor, TrainerCallback

    callback = hfplug.get_callback("counting", every=3)
    assert isinstance(callback, TrainerCallback) and callback.every == 3
    assert hfplug.get_loss("scaled_ce", scale=2.0) is not None
    assert isinstance(hfplug.get_logits_processor("ban_token", token_id=5), LogitsProcessor)
    assert issubclass(hfplug.get_tokenizer_class("shouting"), BertTokenizer)

    (listing,) = hfplug.list_plugins()
    assert listing["name"] == "fake-complete" and listing["version"] == "1.2.3"
    assert listing["entry_point"] == "fake-complete" and listing["module"] == "fake_complete_hooks"
    assert listing["error"] is None
    assert listing["hooks"] == sorted(
        [
            "register_attention_backends",
            "register_callbacks",
            "register_logits_processors",
            "register_losses",
            "register_tokenizers",
        ]
    )
    assert listing["registered"] == {
        "attention backend": ["counted_sdpa"],
        "callback": ["counting"],
        "logits processor": ["ban_token"],
        "loss": ["scaled_ce"],
        "tokenizer": ["shouting"],
    }


def test_env_var_empty_loads_none(fake_plugins):
    fake_plugins.add("fake-complete", "complete")
    fake_plugins.select()  # HFPLUG_PLUGINS=""
    assert hfplug.list_plugins() == []
    with pytest.raises(UnknownComponentError):
        hfplug.get_loss("scaled_ce")


def test_env_var_selects_only_listed_distributions(fake_plugins):
    fake_plugins.add("fake-complete", "complete")
    fake_plugins.add("fake-focal", "focal_loss")
    fake_plugins.select("fake-focal")
    assert [p["name"] for p in hfplug.list_plugins()] == ["fake-focal"]
    fake_plugins.select("fake_complete", "fake-focal")  # underscores normalise like pip names
    assert [p["name"] for p in hfplug.list_plugins()] == ["fake-complete", "fake-focal"]


def test_env_var_naming_a_missing_distribution_is_an_error(fake_plugins):
    fake_plugins.add("fake-focal", "focal_loss")
    fake_plugins.select("fake-focal", "hfplug-nonexistent")
    with pytest.raises(PluginLoadError, match="HFPLUG_PLUGINS names hfplug-nonexistent"):
        hfplug.load_plugins()


def test_broken_import_names_distribution_version_entry_point_and_module(fake_plugins):
    fake_plugins.add("fake-broken", "broken_import", version="0.9")
    fake_plugins.add("fake-focal", "focal_loss")
    fake_plugins.select("fake-broken", "fake-focal")
    assert hfplug.get_loss("focal") is not None  # a broken plugin leaves the others usable
    with pytest.raises(PluginLoadError) as info:
        hfplug.load_plugins()
    message = str(info.value)
    for part in ("fake-broken", "0.9", "'fake-broken'", "fake_broken_hooks", "this_module_does_not_exist"):
        assert part in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)

    listing = {p["name"]: p for p in hfplug.list_plugins()}
    assert listing["fake-focal"]["error"] is None
    assert listing["fake-focal"]["registered"] == {"loss": ["focal"]}
    assert "this_module_does_not_exist" in listing["fake-broken"]["error"]


def test_misspelled_hook_fails_loudly(fake_plugins):
    fake_plugins.add("fake-typo", "misspelled_hook")
    fake_plugins.select("fake-typo")
    with pytest.raises(PluginLoadError, match=r"(?s)fake-typo.*register_loss") as info:
        hfplug.load_plugins()
    assert "register_losses" in str(info.value)  # the valid hooks are listed


def test_hookimpl_with_argument_not_in_spec_fails(fake_plugins):
    fake_plugins.add("fake-wrongarg", "wrong_argument")
    fake_plugins.select("fake-wrongarg")
    with pytest.raises(PluginLoadError, match=r"(?s)fake-wrongarg.*extra"):
        hfplug.load_plugins()


def test_duplicate_names_name_both_distributions(fake_plugins):
    fake_plugins.add("fake-focal-a", "focal_loss")
    fake_plugins.add("fake-focal-b", "focal_loss")
    fake_plugins.select("fake-focal-a", "fake-focal-b")
    with pytest.raises(DuplicateComponentError, match=r"'focal'.*fake-focal-a.*fake-focal-b"):
        hfplug.get_loss("focal")


def test_unknown_name_suggests_close_matches_and_lists_installed(fake_plugins):
    fake_plugins.add("fake-complete", "complete")
    fake_plugins.select("fake-complete")
    with pytest.raises(UnknownComponentError) as info:
        hfplug.get_loss("scaled_cee")
    message = str(info.value)
    assert "no loss named 'scaled_cee'" in message
    assert "Did you mean 'scaled_ce'?" in message
    assert "scaled_ce (fake-complete)" in message


def test_unknown_first_party_name_says_what_to_install(fake_plugins, monkeypatch):
    monkeypatch.setitem(KNOWN_PROVIDERS["loss"], "focal", "hfplug-not-installed")
    monkeypatch.setitem(KNOWN_PROVIDERS["attention backend"], "favor", "hfplug-not-installed")
    fake_plugins.select()
    with pytest.raises(
        UnknownComponentError, match="'focal' is provided by hfplug-not-installed: pip install"
    ):
        hfplug.get_loss("focal")
    with pytest.raises(UnknownComponentError, match="pip install hfplug-not-installed"):
        hfplug.use_attention("favor")


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("invalid_callback", "not_a_callback.*TrainerCallback"),
        ("invalid_attention", "no_mask.*mask_fn must be callable"),
        ("invalid_on_use", "bad_on_use.*on_use must be a callable"),
        ("invalid_processor", "not_a_processor.*LogitsProcessor or transformers.StoppingCriteria"),
        ("invalid_tokenizer", "not_a_tokenizer.*PreTrainedTokenizerBase"),
        ("invalid_loss", "not_callable.*callable loss factory"),
    ],
)
def test_registration_is_validated(fake_plugins, source, pattern):
    name = "fake-" + source.replace("_", "-")
    fake_plugins.add(name, source)
    fake_plugins.select(name)
    with pytest.raises(InvalidComponentError, match=f"{name}.*{pattern}"):
        hfplug.load_plugins()


def _cli(fake_plugins, *args, select):
    return fake_plugins.run("-m", "hfplug", "plugins", *args, select=select)


def test_cli_json_lists_the_rest_when_one_plugin_is_broken(fake_plugins):
    fake_plugins.add("fake-broken", "broken_import")
    fake_plugins.add("fake-complete", "complete")
    result = _cli(fake_plugins, "--json", select="fake-broken,fake-complete")
    assert result.returncode == 1  # a broken plugin is reported, the listing still completes
    listing = {p["name"]: p for p in json.loads(result.stdout)}
    assert listing["fake-complete"]["registered"]["loss"] == ["scaled_ce"]
    assert "fake-broken" in listing["fake-broken"]["error"]


def test_cli_table(fake_plugins):
    fake_plugins.add("fake-complete", "complete", version="2.0")
    result = _cli(fake_plugins, select="fake-complete")
    assert result.returncode == 0, result.stderr
    assert "fake-complete 2.0" in result.stdout
    assert "loss: scaled_ce" in result.stdout
    empty = _cli(fake_plugins, select="")
    assert "No hfplug plugins installed" in empty.stdout


def _load_lazy(fake_plugins, distribution: str, source: str, module: str) -> dict[str, list[str]]:
    """Install ``distribution`` (hooks from ``source``) and ``tests/fake_plugins/<module>.py`` beside it, load it
    alone, check that loading imported nothing behind its references, and return what it registered."""
    fake_plugins.add(distribution, source)
    (fake_plugins.root / f"{module}.py").write_text(
        (Path(__file__).parent / "fake_plugins" / f"{module}.py").read_text()
    )
    fake_plugins.modules.append(module)
    fake_plugins.select(distribution)
    hfplug.load_plugins()
    registered = hfplug.list_plugins()[0]["registered"]
    assert module not in sys.modules  # loading and listing plugins imported nothing behind the references
    return registered


def test_lazy_tokenizer_reference_is_imported_on_first_lookup(fake_plugins):
    module = "fake_lazy_tokenization"
    registered = _load_lazy(fake_plugins, "fake-lazy-tokenizer", "lazy_tokenizer", module)
    assert registered == {"tokenizer": ["lazy_bert", "lazy_missing", "lazy_not_a_tokenizer"]}
    cls = hfplug.get_tokenizer_class("lazy_bert")
    assert cls.__name__ == "LazyBertTokenizer" and cls.__module__ == module
    assert hfplug.get_tokenizer_class("lazy_bert") is cls
    with pytest.raises(InvalidComponentError, match=r"fake-lazy-tokenizer.*lazy_missing.*cannot be imported"):
        hfplug.get_tokenizer_class("lazy_missing")
    with pytest.raises(InvalidComponentError, match=r"lazy_not_a_tokenizer.*PreTrainedTokenizerBase"):
        hfplug.get_tokenizer_class("lazy_not_a_tokenizer")


def test_lazy_references_of_every_kind_are_imported_on_first_lookup(fake_plugins):
    from transformers import AttentionInterface, LogitsProcessor, StoppingCriteria, TrainerCallback
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    module = "fake_lazy_components"
    assert _load_lazy(fake_plugins, "fake-lazy-components", "lazy_components", module) == {
        "attention backend": ["lazy_missing_mask", "lazy_sdpa"],
        "callback": ["lazy_counting", "lazy_not_a_callback"],
        "logits processor": ["lazy_ban_token", "lazy_stop_at"],
        "loss": ["lazy_scaled_ce"],
        "tokenizer": ["lazy_shouting"],
    }

    callback = hfplug.get_callback("lazy_counting", every=3)
    fake = sys.modules[module]
    assert type(callback) is fake.CountingCallback and isinstance(callback, TrainerCallback)
    assert callback.every == 3
    logits = torch.zeros(1, 4)
    loss = hfplug.get_loss("lazy_scaled_ce", scale=2.0)({"logits": logits}, torch.tensor([1]))
    torch.testing.assert_close(loss, 2.0 * torch.log(torch.tensor(4.0)))
    processor = hfplug.get_logits_processor("lazy_ban_token", token_id=2)
    assert isinstance(processor, LogitsProcessor) and processor(None, logits)[0, 2] == -float("inf")
    stop = hfplug.get_logits_processor("lazy_stop_at", length=3)
    assert isinstance(stop, StoppingCriteria) and stop(torch.zeros(2, 3), logits).tolist() == [True, True]
    assert hfplug.get_tokenizer_class("lazy_shouting") is fake.ShoutingTokenizer

    assert hfplug.use_attention("lazy_sdpa") == "lazy_sdpa"
    assert AttentionInterface._global_mapping["lazy_sdpa"] is fake.counted_sdpa
    assert AttentionMaskInterface._global_mapping["lazy_sdpa"] is sdpa_mask
    assert fake.USES == [0]

    with pytest.raises(
        InvalidComponentError,
        match=r"fake-lazy-components.*lazy_not_a_callback.*transformers\.TrainerCallback",
    ):
        hfplug.get_callback("lazy_not_a_callback")
    with pytest.raises(
        InvalidComponentError,
        match=r"lazy_missing_mask.*'fake_lazy_components:no_such_mask'.*cannot be imported",
    ):
        hfplug.use_attention("lazy_missing_mask")
    assert "lazy_missing_mask" not in AttentionInterface._global_mapping  # nothing half-registered


@pytest.mark.parametrize(
    ("source", "call", "malformed"),
    [
        ("invalid_tokenizer", 'register("not_a_tokenizer", str)', 'register("bad", "no colon here")'),
        ("invalid_callback", 'register("not_a_callback", object)', 'register("bad", "a.b:c:d")'),
        (
            "invalid_attention",
            'register("no_mask", lambda *a, **k: None, None)',
            'register("bad", "a.b:attention", "sdpa_mask")',
        ),
    ],
)
def test_malformed_lazy_reference_fails_at_registration(fake_plugins, source, call, malformed):
    fake_plugins.add("fake-bad-reference", source)
    hooks = fake_plugins.root / "fake_bad_reference_hooks.py"
    hooks.write_text(hooks.read_text().replace(call, malformed))
    fake_plugins.select("fake-bad-reference")
    with pytest.raises(
        InvalidComponentError, match=r"fake-bad-reference.*'package\.module:(ClassName|function)' string"
    ):
        hfplug.load_plugins()
