"""hfplug-wobert: the WoBERT word-level Chinese tokenizer for transformers 5.

Names load on first access (:func:`hfplug.lazy.lazy_exports`), so importing the package (or its ``_hooks``
module) touches neither transformers nor AutoTokenizer. Importing ``WoBertTokenizer`` (directly, or through
``hfplug.get_tokenizer_class("wobert")``) lets ``AutoTokenizer`` resolve saved WoBERT folders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfplug.lazy import lazy_exports

if TYPE_CHECKING:
    from .tokenization_wobert import WoBertTokenizer
    from .vocabulary import build_wobert_vocab
    from .word_embeddings import init_word_embeddings

__all__ = ["WoBertTokenizer", "build_wobert_vocab", "init_word_embeddings"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "WoBertTokenizer": "tokenization_wobert",
        "build_wobert_vocab": "vocabulary",
        "init_word_embeddings": "word_embeddings",
    },
)
