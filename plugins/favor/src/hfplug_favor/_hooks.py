"""hfplug hook implementations of hfplug-favor, as lazy references: loading plugins imports nothing, and
``hfplug.use_attention("favor")`` imports the attention function, its mask function and ``on_use``."""

from __future__ import annotations

from hfplug import hookimpl
from hfplug.hookspecs import RegisterAttentionBackend, RegisterCallback


@hookimpl
def register_attention_backends(register: RegisterAttentionBackend) -> None:
    register("favor", "hfplug_favor:favor_attention_forward", "transformers.masking_utils:sdpa_mask")


@hookimpl
def register_callbacks(register: RegisterCallback) -> None:
    register("feature_redraw", "hfplug_favor:FeatureRedrawCallback")
