"""Word segmenters with jieba semantics: rjieba (Rust, default) or the jieba package, each with its own dictionary.

Both load jieba's default dictionary into a private instance (jieba's global tokenizer is never touched),
add the user words in order (``freq=None`` lets the engine suggest a frequency that keeps the word whole,
as ``jieba.add_word`` does) and cut with the HMM off unless asked. Neither reads or writes a cache file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from hfplug.validation import check_int

from .normalization import check_text

SEGMENTERS = ("rjieba", "jieba")

UserWords = tuple[tuple[str, "int | None"], ...]
MAX_FREQUENCY = 2**53
"""Largest user-word frequency (jieba's default dictionary totals about 6e7; jieba-rs sums them in 64 bits)."""


class Segmenter(Protocol):
    def cut(self, text: str) -> list[str]:
        """Words of ``text`` in order; their concatenation is ``text``."""
        ...


class RJiebaSegmenter:
    """jieba-rs through rjieba: about 10x the jieba package."""

    def __init__(self, hmm: bool, user_words: UserWords) -> None:
        import rjieba

        self.hmm = hmm
        self._jieba = rjieba.Jieba()
        for word, freq in user_words:
            self._jieba.add_word(word, freq, None)

    def cut(self, text: str) -> list[str]:
        return self._jieba.cut(text, self.hmm)


class JiebaSegmenter:
    """The jieba package (pure Python), through a private ``jieba.Tokenizer``."""

    def __init__(self, hmm: bool, user_words: UserWords) -> None:
        try:
            import jieba
        except ImportError as exc:
            raise ImportError(
                'segmenter="jieba" needs the jieba package: pip install "hfplug-wobert[jieba]"'
            ) from exc
        self.hmm = hmm
        self._jieba = jieba.Tokenizer()
        # jieba's initialize() loads the prefix dictionary from a marshal cache at tempfile.gettempdir()/jieba.cache,
        # a world-writable place, without checking who wrote it, and writes one there. Build it from the package's
        # dict.txt instead: no faster with the cache (0.83 s vs 0.76 s median, docs/plugins/wobert.md).
        self._jieba.FREQ, self._jieba.total = self._jieba.gen_pfdict(self._jieba.get_dict_file())
        self._jieba.initialized = True
        for word, freq in user_words:
            self._jieba.add_word(word, freq)

    def cut(self, text: str) -> list[str]:
        return list(self._jieba.cut(text, HMM=self.hmm))


@functools.lru_cache(maxsize=16)
def load_segmenter(name: str, hmm: bool, user_words: UserWords) -> Segmenter:
    """A segmenter, cached per process (the dictionary loads once even after unpickling in workers)."""
    if name == "rjieba":
        return RJiebaSegmenter(hmm, user_words)
    if name == "jieba":
        return JiebaSegmenter(hmm, user_words)
    raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {name!r}")


def _entry(item: Any, where: str) -> tuple[str, int | None]:
    """``(word, freq or None)`` of a ``"word [freq] [tag]"`` line or a ``(word,)`` / ``(word, freq)`` pair."""
    if isinstance(item, str):
        check_text(f"user_dict {where}", item)
        parts = item.split()
        if not parts:
            raise ValueError(f"user_dict has an empty entry ({where})")
        word, freq = parts[0], None
        if len(parts) > 1 and not (len(parts) == 2 and parts[1].isalpha()):  # "word tag" has no frequency
            if not parts[1].isdecimal():
                raise ValueError(
                    f"user_dict frequency of {word!r} ({where}) must be an integer in [1, {MAX_FREQUENCY}], "
                    f"got {parts[1]!r}"
                )
            freq = int(parts[1])
    elif isinstance(item, (list, tuple)) and len(item) in (1, 2) and isinstance(item[0], str):
        word, freq = check_text(f"user_dict {where} word", item[0]), (item[1] if len(item) == 2 else None)
    else:
        raise TypeError(
            f"user_dict entries must be 'word [freq]' strings or (word, freq) pairs, got {item!r} ({where})"
        )
    if not word or any(char.isspace() for char in word):
        raise ValueError(f"user_dict word {word!r} ({where}) must be non-empty and contain no whitespace")
    if freq is not None:
        freq = check_int(f"user_dict frequency of {word!r} ({where})", freq, minimum=1, maximum=MAX_FREQUENCY)
    return word, freq


def parse_user_dict(user_dict: str | os.PathLike | Iterable[Any] | None) -> UserWords:
    """User words as ``((word, freq or None), ...)``.

    ``user_dict`` is ``None``, a path to a jieba-format file (``word [freq] [tag]`` per line), or an
    iterable of words, ``"word freq"`` strings or ``(word, freq)`` pairs.
    """
    if user_dict is None:
        return ()
    if isinstance(user_dict, (str, os.PathLike)):
        path = Path(user_dict)
        if not path.is_file():
            raise ValueError(f"user_dict file {str(path)!r} does not exist (pass a path or a list of words)")
        lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
        return tuple(_entry(line, f"{path.name} line {i + 1}") for i, line in enumerate(lines))
    if not isinstance(user_dict, Iterable):
        raise TypeError(
            f"user_dict must be None, a path or an iterable of words, got {type(user_dict).__name__}"
        )
    return tuple(_entry(item, f"entry {i}") for i, item in enumerate(user_dict))
