"""WoBERT vocabulary: simplified BERT vocabulary, special tokens first, then the most frequent words.

Recipe of ZhuiyiTechnology/WoBERT ``train.py`` (bert4keras ``load_vocab(simplified=True, startswith=...)``):
a base token of length > 1 whose stem (``##`` removed) contains a CJK or punctuation character is dropped
(the character-splitting tokenizer can never produce it); then words are appended by descending
frequency, skipping words already present, until ``num_words`` were added.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from .normalization import is_cjk_or_punctuation
from .tokenization_wobert import load_vocab_file

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_redundant(token: str) -> bool:
    stem = token[2:] if token.startswith("##") else token
    return len(token) > 1 and any(is_cjk_or_punctuation(char) for char in stem)


def _base_tokens(base_vocab: Mapping[str, int] | str | os.PathLike | Iterable[str]) -> list[str]:
    if isinstance(base_vocab, (str, os.PathLike)):
        path = Path(base_vocab)
        path = path / "vocab.txt" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(
                f"base_vocab {str(path)!r} does not exist (pass vocab.txt, its folder or a dict)"
            )
        base_vocab = load_vocab_file(path)
    if isinstance(base_vocab, Mapping):
        return sorted(base_vocab, key=base_vocab.__getitem__)
    if isinstance(base_vocab, Iterable):
        return list(base_vocab)
    raise TypeError(
        f"base_vocab must be a path, a {{token: id}} dict or a token list, got {type(base_vocab).__name__}"
    )


def jieba_word_frequencies(path: str | os.PathLike | None = None) -> dict[str, int]:
    """Words and frequencies of a jieba dictionary (default: jieba's own ``dict.txt``).

    The order is jieba's ``FREQ`` order (a word first seen as a prefix of an earlier word keeps that
    position), so ties sort as in the reference ``sorted(jieba.dt.FREQ.items(), key=lambda s: -s[1])``.
    """
    if path is None:
        from hfplug.data import jieba_dict_path

        path = jieba_dict_path()
    freq: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(
                    f"{path} line {line_number}: expected 'word frequency [tag]', got {line.strip()!r}"
                )
            word = parts[0]
            freq[word] = int(parts[1])
            for end in range(1, len(word)):
                freq.setdefault(word[:end], 0)
    return {word: count for word, count in freq.items() if count > 0}


def corpus_word_frequencies(texts: Iterable[str], segmenter: str = "rjieba") -> dict[str, int]:
    """Word counts over ``texts`` as the default WoBertTokenizer segments them (normalised, HMM off)."""
    from .normalization import normalize
    from .segmentation import load_segmenter

    cut = load_segmenter(segmenter, False, ()).cut
    counts: Counter[str] = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"corpus items must be str, got {type(text).__name__}")
        counts.update(word for word in cut(normalize(text, True, True)[0]) if not word.isspace())
    return dict(counts)


def build_wobert_vocab(
    base_vocab: Mapping[str, int] | str | os.PathLike | Iterable[str],
    num_words: int = 20000,
    words: Mapping[str, int] | str | os.PathLike | Iterable[str] | None = None,
) -> dict[str, int]:
    """The WoBERT vocabulary ``{token: id}``.

    Args:
        base_vocab: the character-level BERT vocabulary (``vocab.txt``, its folder, a dict or a token list).
        num_words: how many new words to append (the post uses 20,000).
        words: where words come from: ``None`` = jieba's dictionary frequencies; a ``{word: frequency}``
            mapping; a path to a jieba-format dictionary; or an iterable of raw texts, segmented and counted
            as the tokenizer would segment them.
    """
    if not isinstance(num_words, int) or isinstance(num_words, bool) or num_words < 0:
        raise ValueError(f"num_words must be a non-negative int, got {num_words!r}")
    base = _base_tokens(base_vocab)
    missing = [token for token in SPECIAL_TOKENS if token not in base]
    if missing:
        raise ValueError(f"base_vocab lacks the special tokens {missing}")
    if words is None or isinstance(words, (str, os.PathLike)):
        frequencies = jieba_word_frequencies(words)
    elif isinstance(words, Mapping):
        frequencies = dict(words)
    elif isinstance(words, Iterable):
        frequencies = corpus_word_frequencies(words)
    else:
        raise TypeError(
            f"words must be None, a mapping, a path or an iterable of texts, got {type(words).__name__}"
        )

    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *(t for t in base if not _is_redundant(t))):
        vocab.setdefault(token, len(vocab))
    added = 0
    for word, _ in sorted(frequencies.items(), key=lambda item: -item[1]):
        if added == num_words:
            break
        if word not in vocab:
            vocab[word] = len(vocab)
            added += 1
    return vocab
