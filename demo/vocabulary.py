"""Stage 1: the two tokenizers of the pretrained base, and how many tokens each spends per character."""

from __future__ import annotations

from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

import hfplug
from hfplug.data import bert_chinese_vocab_dir, zh_bert_dir


def word_tokenizer() -> PreTrainedTokenizerBase:
    """The word-level base's WoBERT tokenizer (bert-base-chinese vocabulary, simplified, + 20,000 jieba words),
    loaded through ``AutoTokenizer`` as a user would."""
    tokenizer_class = hfplug.get_tokenizer_class("wobert")  # registry lookup: AutoTokenizer knows the class
    tokenizer = AutoTokenizer.from_pretrained(zh_bert_dir("word"))
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
