"""hfplug hook implementations of hfplug-favor (nothing heavy at import time)."""

from __future__ import annotations

from hfplug import hookimpl


@hookimpl
def register_attention_backends(register):
    from transformers.masking_utils import sdpa_mask

    from .attention import favor_attention_forward
    from .cache import install_generate_default

    # hfplug.use_attention("favor") runs on_use: plain generate() on a favor decoder then gets a FavorCache
    register("favor", favor_attention_forward, sdpa_mask, on_use=install_generate_default)


@hookimpl
def register_callbacks(register):
    from .callbacks import FeatureRedrawCallback

    register("feature_redraw", FeatureRedrawCallback)
