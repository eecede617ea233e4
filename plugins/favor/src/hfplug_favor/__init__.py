"""hfplug-favor: FAVOR+ (Performer) attention as the transformers attention backend ``"favor"``.

import hfplug
model = AutoModel.from_pretrained(path, attn_implementation=hfplug.use_attention("favor"))
hfplug_favor.set_favor_config(model, hfplug_favor.FavorConfig(nb_features=256))
model.generate(**inputs)  # a FavorCache by default: O(1) work per generated token
"""

from .attention import FavorState, favor_attention, favor_attention_forward, register_favor
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
    "register_favor",
    "set_favor_config",
]
