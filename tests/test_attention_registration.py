"""use_attention: the function AND its mask function reach transformers under one name, and the backend's
on_use hook runs on every use_attention call, never at load time."""

from __future__ import annotations

import copy
import importlib

import torch
from transformers import AttentionInterface, AutoModel
from transformers.masking_utils import AttentionMaskInterface

import hfplug
from hfplug.testing import tiny_config


def test_use_attention_registers_function_and_mask_and_is_idempotent(fake_plugins):
    fake_plugins.add("fake-complete", "complete")
    fake_plugins.select("fake-complete")
    assert "counted_sdpa" not in AttentionInterface._global_mapping  # nothing registered at load time
    hfplug.load_plugins()
    hooks = importlib.import_module("fake_complete_hooks")
    assert "counted_sdpa" not in AttentionInterface._global_mapping
    assert hooks.USES == []

    assert hfplug.use_attention("counted_sdpa") == "counted_sdpa"
    assert hfplug.use_attention("counted_sdpa") == "counted_sdpa"
    assert "counted_sdpa" in AttentionInterface._global_mapping
    assert "counted_sdpa" in AttentionMaskInterface._global_mapping
    assert hooks.USES == [0, 1]

    calls = hooks.CALLS
    config = tiny_config("bert")
    torch.manual_seed(0)
    reference = AutoModel.from_config(copy.deepcopy(config), attn_implementation="sdpa").eval()
    model = AutoModel.from_config(copy.deepcopy(config), attn_implementation="counted_sdpa").eval()
    model.load_state_dict(reference.state_dict())

    input_ids = torch.randint(5, 1000, (2, 9))
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 5:] = 0  # right padding: wrong outputs if the mask were silently dropped
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        got = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert calls == [True, True]  # both layers dispatched to the plugin, each with a mask
    valid = attention_mask.bool()
    torch.testing.assert_close(got[valid], expected[valid])
