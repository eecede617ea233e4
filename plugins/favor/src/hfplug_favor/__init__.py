"""hfplug-favor: FAVOR+ (Performer) attention as the transformers attention backend ``"favor"``.

import hfplug
model = AutoModel.from_pretrained(path, attn_implementation=hfplug.use_attention("favor"))
hfplug_favor.set_favor_config(model, hfplug_favor.FavorConfig(nb_features=256))
model.generate(**inputs, past_key_values=hfplug_favor.FavorCache())  # O(1) work per generated token

Names load on first access (:func:`hfplug.lazy.lazy_exports`), so loading plugins imports neither torch nor
transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfplug.lazy import lazy_exports

if TYPE_CHECKING:
    from .attention import FavorState, favor_attention, favor_attention_forward
    from .cache import FavorCache, FavorCacheLayer
    from .callbacks import FeatureRedrawCallback
    from .configuration_favor import (
        FavorConfig,
        attach_favor_state,
        check_favor_support,
        get_favor_config,
        set_favor_config,
    )
    from .feature_maps import gaussian_projection
    from .report import favor_report

__all__ = [
    "FavorCache",
    "FavorCacheLayer",
    "FavorConfig",
    "FavorState",
    "FeatureRedrawCallback",
    "attach_favor_state",
    "check_favor_support",
    "favor_attention",
    "favor_attention_forward",
    "favor_report",
    "gaussian_projection",
    "get_favor_config",
    "set_favor_config",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["FavorState", "favor_attention", "favor_attention_forward"], "attention"),
        **dict.fromkeys(["FavorCache", "FavorCacheLayer"], "cache"),
        "FeatureRedrawCallback": "callbacks",
        **dict.fromkeys(
            [
                "FavorConfig",
                "attach_favor_state",
                "check_favor_support",
                "get_favor_config",
                "set_favor_config",
            ],
            "configuration_favor",
        ),
        "gaussian_projection": "feature_maps",
        "favor_report": "report",
    },
)
