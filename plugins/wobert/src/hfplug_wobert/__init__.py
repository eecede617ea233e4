"""hfplug-wobert: the WoBERT word-level Chinese tokenizer for transformers 5.

Importing this package lets ``AutoTokenizer`` resolve saved WoBERT tokenizers (``tokenizer_class:
"WoBertTokenizer"``); ``hfplug.get_tokenizer_class("wobert")`` does the same through the plugin hook.
"""

from .modeling_utils import init_word_embeddings
from .tokenization_wobert import WoBertTokenizer, register_auto_tokenizer
from .vocabulary import build_wobert_vocab

register_auto_tokenizer()

__all__ = ["WoBertTokenizer", "build_wobert_vocab", "init_word_embeddings", "register_auto_tokenizer"]
