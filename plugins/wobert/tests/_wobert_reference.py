"""An independent implementation of the published WoBERT algorithm, for the tests (not the plugin's code).

Reference (bert4keras ``Tokenizer(pre_tokenize=lambda s: jieba.cut(s, HMM=False))`` as used by WoBERT):
lower-case + strip accents, ``jieba.cut(HMM=False)`` (the jieba package), keep in-vocabulary words, otherwise
Google BERT's BasicTokenizer + WordpieceTokenizer, written here character by character.
"""

from __future__ import annotations

import functools
import unicodedata

import jieba

CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def ref_normalize(text: str) -> str:
    text = unicodedata.normalize("NFD", text)
    return "".join(c for c in text if unicodedata.category(c) != "Mn").lower()


def is_punctuation(c: str) -> bool:
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_control(c: str) -> bool:
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def _is_whitespace(c: str) -> bool:
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def basic_tokenize(text: str) -> list[str]:
    out = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or _is_control(c):
            continue
        if _is_whitespace(c):
            out.append(" ")
        elif any(lo <= cp <= hi for lo, hi in CJK) or is_punctuation(c):
            out.append(f" {c} ")
        else:
            out.append(c)
    return "".join(out).split()


def wordpiece(word: str, vocab: dict[str, int], max_chars: int = 100) -> list[str]:
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, current = len(word), None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                current = sub
                break
            end -= 1
        if current is None:
            return ["[UNK]"]
        pieces.append(current)
        start = end
    return pieces


def make_reference(vocab: dict[str, int]):
    """The reference tokenizer for ``vocab``: text -> token strings."""

    @functools.cache
    def fallback(word: str) -> tuple[str, ...]:
        return tuple(t for piece in basic_tokenize(ref_normalize(word)) for t in wordpiece(piece, vocab))

    def tokenize(text: str) -> list[str]:
        tokens = []
        for word in jieba.cut(ref_normalize(text), HMM=False):
            tokens.extend([word] if word in vocab else fallback(word))
        return tokens

    return tokenize
