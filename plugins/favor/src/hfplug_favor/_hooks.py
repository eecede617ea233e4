"""hfplug hook implementations of hfplug-favor (nothing heavy at import time)."""

from __future__ import annotations

from hfplug import hookimpl


@hookimpl
def register_attention_backends(register):
    from transformers.masking_utils import sdpa_mask

    from .attention import favor_attention_forward

    register("favor", favor_attention_forward, sdpa_mask)


@hookimpl
def register_callbacks(register):
    from .callbacks import FeatureRedrawCallback

    register("feature_redraw", FeatureRedrawCallback)
