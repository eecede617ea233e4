"""WoBERT vocabulary: simplified BERT vocabulary, special tokens first, then the most frequent words.

Recipe of ZhuiyiTechnology/WoBERT ``train.py`` (bert4keras ``load_vocab(simplified=True, startswith=...)``):
a base token of length > 1 whose stem (``##`` removed) contains a CJK or punctuation character is dropped
(the character-splitting tokenizer can never produce it); then words are appended by descending
frequency, skipping words already present, until ``num_words`` were added. Words the tokenizer can never
produce are skipped too (not in the recipe): a word ``w`` is kept only if tokenizing ``w`` alone gives ``[w]``,
i.e. ``normalize(w) == w`` and the segmenter cuts ``w`` whole. Since jieba's HMM-off segmentation maximises a
product of word probabilities, a word it splits when alone it splits in every context (``不在`` -> ``不 在``);
a word with upper-case letters (``T恤``), accents, inner whitespace or control characters, or ``""``, never
survives the normalisation or the segmenter. Words made only of characters BERT drops (a lone control or
zero-width character, which jieba does yield) are skipped as well.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hfplug.validation import check_bool, check_float, check_int

from .normalization import BASIC_PIECES, check_text, is_cjk_or_punctuation, normalize_text
from .segmentation import Segmenter, load_segmenter, parse_user_dict
from .tokenization_wobert import check_vocab, load_vocab_file

logger = logging.getLogger(__name__)

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
        checked = check_vocab("base_vocab", base_vocab)
        return sorted(checked, key=checked.__getitem__)
    if isinstance(base_vocab, Iterable):
        return [check_text(f"base_vocab[{i}]", token) for i, token in enumerate(base_vocab)]
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


def _segmenter(do_lower_case: bool, accents: bool, hmm: bool, user_dict: Any) -> Segmenter:
    """The segmenter of ``WoBertTokenizer(do_lower_case=..., hmm=..., user_dict=...)`` (user words normalised)."""
    user_words = tuple(
        (normalize_text(word, do_lower_case, accents), freq) for word, freq in parse_user_dict(user_dict)
    )
    return load_segmenter("rjieba", hmm, user_words)


def corpus_word_frequencies(
    texts: Iterable[str],
    do_lower_case: bool = True,
    strip_accents: bool | None = None,
    hmm: bool = False,
    user_dict: Any = None,
) -> dict[str, int]:
    """Word counts over ``texts`` segmented as ``WoBertTokenizer`` with these settings segments them
    (normalised first; defaults as the tokenizer's)."""
    accents = _check_settings(do_lower_case, strip_accents, hmm)
    cut = _segmenter(do_lower_case, accents, hmm, user_dict).cut
    counts: Counter[str] = Counter()
    for index, text in enumerate(texts):
        text = check_text(f"words[{index}]", text)
        counts.update(
            word for word in cut(normalize_text(text, do_lower_case, accents)) if not word.isspace()
        )
    return dict(counts)


def _check_settings(do_lower_case: Any, strip_accents: Any, hmm: Any) -> bool:
    """Validate the tokenizer settings; return whether accents are stripped."""
    check_bool("do_lower_case", do_lower_case)
    check_bool("hmm", hmm)
    return do_lower_case if strip_accents is None else check_bool("strip_accents", strip_accents)


def _checked_frequencies(words: Mapping[Any, Any]) -> dict[str, float]:
    """A ``{word: frequency}`` mapping with str words and finite frequencies >= 0 (ints or floats)."""
    return {
        check_text(f"words key {word!r}", word): check_float(f"words[{word!r}]", freq, minimum=0)
        for word, freq in words.items()
    }


def build_wobert_vocab(
    base_vocab: Mapping[str, int] | str | os.PathLike | Iterable[str],
    num_words: int = 20000,
    words: Mapping[str, float] | str | os.PathLike | Iterable[str] | None = None,
    *,
    do_lower_case: bool = True,
    strip_accents: bool | None = None,
    hmm: bool = False,
    user_dict: str | os.PathLike | Iterable[Any] | None = None,
) -> dict[str, int]:
    """The WoBERT vocabulary ``{token: id}``: special tokens, the simplified base, then up to ``num_words``
    words by descending frequency that the tokenizer can produce (tokenizing the word alone gives it back).

    Args:
        base_vocab: the character-level BERT vocabulary (``vocab.txt``, its folder, a dict or a token list).
        num_words: how many new words to append (the post uses 20,000).
        words: where words come from: ``None`` = jieba's dictionary frequencies; a ``{word: frequency}``
            mapping (finite frequencies >= 0); a path to a jieba-format dictionary; or an iterable of raw texts,
            segmented and counted as the tokenizer would segment them.
        do_lower_case: as in the ``WoBertTokenizer`` that will use the vocabulary (default ``True``).
        strip_accents: as there (default ``None``: follows ``do_lower_case``).
        hmm: as there (default ``False``).
        user_dict: as there (default ``None``). These four settings decide which words it can produce.

    Skipped words are logged (``logging``, INFO) with their count and the first few.
    """
    num_words = check_int("num_words", num_words, minimum=0)
    accents = _check_settings(do_lower_case, strip_accents, hmm)
    base = _base_tokens(base_vocab)
    missing = [token for token in SPECIAL_TOKENS if token not in base]
    if missing:
        raise ValueError(f"base_vocab lacks the special tokens {missing}")
    if isinstance(words, (str, os.PathLike)) and not Path(words).is_file():
        raise ValueError(
            f"words file {str(words)!r} does not exist (pass a jieba-format dictionary, a {{word: frequency}} "
            "mapping, texts, or None for jieba's dictionary)"
        )
    if words is None or isinstance(words, (str, os.PathLike)):
        frequencies: Mapping[str, float] = jieba_word_frequencies(words)
    elif isinstance(words, Mapping):
        frequencies = _checked_frequencies(words)
    elif isinstance(words, Iterable):
        frequencies = corpus_word_frequencies(words, do_lower_case, strip_accents, hmm, user_dict)
    else:
        raise TypeError(
            f"words must be None, a mapping, a path or an iterable of texts, got {type(words).__name__}"
        )
    cut = _segmenter(do_lower_case, accents, hmm, user_dict).cut

    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *(t for t in base if not _is_redundant(t))):
        vocab.setdefault(token, len(vocab))
    added, skipped = 0, []
    for word, _ in sorted(frequencies.items(), key=lambda item: -item[1]):
        if added == num_words:
            break
        if word in vocab:
            continue
        if (
            normalize_text(word, do_lower_case, accents) == word
            and cut(word) == [word]
            and BASIC_PIECES.search(word)
        ):
            vocab[word] = len(vocab)
            added += 1
        else:
            skipped.append(word)
    if skipped:
        logger.info(
            "build_wobert_vocab skipped %d words the tokenizer never produces, e.g. %r",
            len(skipped),
            skipped[:10],
        )
    return vocab
