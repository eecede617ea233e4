"""hfplug-wobert: the WoBERT word-level Chinese tokenizer for transformers 5.

Names load on first access, so importing the package (or its ``_hooks`` module) touches neither
transformers nor AutoTokenizer. Importing ``WoBertTokenizer`` (directly, or through
``hfplug.get_tokenizer_class("wobert")``) lets ``AutoTokenizer`` resolve saved WoBERT folders.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .modeling_utils import init_word_embeddings
    from .tokenization_wobert import WoBertTokenizer
    from .vocabulary import build_wobert_vocab

_EXPORTS = {
    "WoBertTokenizer": "tokenization_wobert",
    "build_wobert_vocab": "vocabulary",
    "init_word_embeddings": "modeling_utils",
}

__all__ = ["WoBertTokenizer", "build_wobert_vocab", "init_word_embeddings"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
