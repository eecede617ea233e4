"""Stage 1: build the WoBERT vocabulary and measure how many tokens each tokenizer spends per character."""

from __future__ import annotations

from pathlib import Path

from hfplug_wobert import build_wobert_vocab
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

import hfplug
from hfplug.data import bert_chinese_vocab_dir


def build_word_tokenizer(num_words: int, out_dir: Path) -> PreTrainedTokenizerBase:
    """WoBERT vocabulary = bert-base-chinese vocabulary (simplified) + the ``num_words`` most frequent jieba
    words; saved to ``out_dir`` and loaded back through ``AutoTokenizer`` as a user would."""
    tokenizer_class = hfplug.get_tokenizer_class("wobert")  # registry lookup: AutoTokenizer knows the class
    vocab = build_wobert_vocab(bert_chinese_vocab_dir(), num_words=num_words)
    tokenizer_class(vocab=vocab).save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    if not isinstance(tokenizer, tokenizer_class):
        raise TypeError(
            f"AutoTokenizer returned {type(tokenizer).__name__}, expected {tokenizer_class.__name__}"
        )
    return tokenizer


def char_tokenizer() -> PreTrainedTokenizerBase:
    """The character-level bert-base-chinese tokenizer (21,128 entries), for comparison."""
    return BertTokenizer.from_pretrained(bert_chinese_vocab_dir())


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokens_per_char(ids: list[list[int]], texts: list[str]) -> float:
    return sum(map(len, ids)) / sum(map(len, texts))
