"""Lazy package exports (PEP 562): a plugin package names what it exports and imports each name on first use.

A plugin's ``_hooks`` module is imported whenever hfplug loads plugins, and importing it imports its package's
``__init__``; a lazy ``__init__`` keeps that free of torch and transformers. In the package ``__init__``::

    __getattr__, __dir__ = lazy_exports(__name__, {"FGM": "callbacks", "metrics": "metrics"})

``from package import FGM`` then imports ``package.callbacks`` on first access; a name mapped to itself is the
submodule of that name. Keep an ``if TYPE_CHECKING:`` block with the same imports and an ``__all__`` so type
checkers and IDEs see the names.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, where public name ``name`` lives in
    submodule ``exports[name]`` (the submodule itself when ``exports[name] == name``).

    A name is imported once, then kept on the package. An unknown name raises ``AttributeError``, so
    ``hasattr`` and ``from package import unknown`` (``ImportError``) behave as for an eager package.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f".{exports[name]}", package)
        value = module if exports[name] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
