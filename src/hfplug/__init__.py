"""hfplug: plugins for Hugging Face transformers, discovered through the ``hfplug`` entry-point group.

Importing this package is cheap: plugins load on the first lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

from .api import (
    get_callback,
    get_logits_processor,
    get_loss,
    get_tokenizer_class,
    list_plugins,
    load_plugins,
    use_attention,
)
from .errors import (
    DuplicateComponentError,
    HfplugError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from .hookspecs import PROJECT_NAME

__version__ = "0.1.0"

_F = TypeVar("_F", bound=Callable[..., Any])

hookimpl: Callable[[_F], _F] = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations in a plugin's ``_hooks`` module: ``@hfplug.hookimpl``."""

__all__ = [
    "DuplicateComponentError",
    "HfplugError",
    "InvalidComponentError",
    "PluginLoadError",
    "UnknownComponentError",
    "__version__",
    "get_callback",
    "get_logits_processor",
    "get_loss",
    "get_tokenizer_class",
    "hookimpl",
    "list_plugins",
    "load_plugins",
    "use_attention",
]
