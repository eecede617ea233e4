"""BERT's character classes and the WoBERT text normalisation, with an alignment back to the input.

Character classes follow google-research/bert ``tokenization.py``: CJK = the CJK Unified Ideograph
blocks, punctuation = ASCII 33-47, 58-64, 91-96, 123-126 or any Unicode ``P*`` category, whitespace =
space, tab, newline, carriage return, ``Zs``, ``Zl`` or ``Zp`` (what ``str.split`` splits on); control characters (``C*``), NUL and U+FFFD are dropped.
"""

from __future__ import annotations

import unicodedata

import regex

CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_CJK = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in CJK_RANGES)
_PUNCT = r"!-/:-@\[-`{-~\p{P}"
_DROPPED = r" \t\n\r\p{Zs}\p{Zl}\p{Zp}\p{C}\ufffd"

BASIC_PIECES = regex.compile(rf"[{_CJK}{_PUNCT}]|[^{_CJK}{_PUNCT}{_DROPPED}]+")
"""BERT basic tokenisation as one pattern: each CJK or punctuation character alone, else runs of other
characters; whitespace and control characters separate pieces and never appear in one."""

_CJK_OR_PUNCT = regex.compile(rf"[{_CJK}{_PUNCT}]")
# Characters written without spaces around them: CJK ideographs, CJK symbols and punctuation, kana,
# full-width forms.
_UNSPACED = regex.compile(rf"[{_CJK}\u3000-\u30ff\uff00-\uffef]")
_NONSPACING_MARKS = regex.compile(r"\p{Mn}+")
_SURROGATE = regex.compile(r"[\ud800-\udfff]")


def check_text(name: str, text: object) -> str:
    """``text`` if it is a ``str`` of valid Unicode; a lone surrogate (``"\\ud800"``, e.g. from bytes decoded with
    ``errors="surrogateescape"``) has no UTF-8 form, so no segmenter or Rust tokenizer can take it.

    Raises TypeError for a non-string and ValueError naming the position of the first surrogate.
    """
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            raise ValueError(
                f"{name} holds the lone surrogate {found.group()!r} at position {found.start()}, which is not "
                "valid Unicode text; decode the bytes with errors='replace' (or drop the surrogates) first"
            )
    return text


def is_cjk_or_punctuation(char: str) -> bool:
    """True for a CJK ideograph or a punctuation character (BERT's definitions)."""
    return _CJK_OR_PUNCT.fullmatch(char) is not None


def is_unspaced(char: str) -> bool:
    """True for characters that are written without surrounding spaces (CJK, kana, full-width forms)."""
    return _UNSPACED.fullmatch(char) is not None


def normalize_text(text: str, lowercase: bool, strip_accents: bool) -> str:
    """``lower(strip_accents(NFD(text)))`` without the alignment (each step only when its flag is set)."""
    if strip_accents:
        text = _NONSPACING_MARKS.sub("", unicodedata.normalize("NFD", text))
    return text.lower() if lowercase else text


def normalize(text: str, lowercase: bool, strip_accents: bool) -> tuple[str, list[int] | None]:
    """WoBERT's pre-segmentation normalisation: NFD and drop ``Mn`` marks (``strip_accents``), then lower-case.

    Returns ``(normalized, alignment)``: ``alignment[j]`` is the index in ``text`` of the character that
    produced ``normalized[j]``; ``None`` when every character maps to exactly one character (identity).
    """
    out = normalize_text(text, lowercase, strip_accents)
    same_length = len(out) == len(text)
    if same_length and (
        not strip_accents
        or (unicodedata.is_normalized("NFD", text) and _NONSPACING_MARKS.search(text) is None)
    ):
        return out, None
    # Character by character the lengths add up to len(out): lower() differs from the whole-string result only
    # in the same-length final sigma, NFD only in the order of combining marks. ``out`` stays the whole-string
    # result so the ids never depend on whether offsets were asked for.
    parts = [normalize_text(char, lowercase, strip_accents) for char in text]
    return out, [i for i, part in enumerate(parts) for _ in part]
