"""WoBertTokenizer: jieba word segmentation, in-vocabulary words kept whole, BERT basic + WordPiece otherwise.

For a text ``s`` (Su Jianlin, "WoBERT", kexue.fm/archives/7758; bert4keras ``Tokenizer(pre_tokenize=...)``):

    s' = lower(strip_accents(NFD(s)))                      # before segmentation (WoBERT's order)
    w_1..w_n = jieba.cut(s', HMM=False)
    tokens = concat_i ( [w_i] if w_i in vocab else WordPiece(BERT basic split(w_i)) )

Segmentation and the vocabulary test run in Python (rjieba by default; each word's pieces are cached). The
pieces of a text go to the Rust backend as one string, joined by a private-use character absent from the
vocabulary, which the backend's ``Split`` pre-tokenizer removes; WordPiece then runs on each piece, and padding,
truncation, tensors and special tokens are the usual transformers machinery. The backend holds no Python
component, so the tokenizer pickles as is. ``encode_ids`` skips the backend: per-word ids cached in Python
(WordPiece written out), the same ids without Rust encodings.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate, chain
from typing import Any

import regex
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers.tokenization_utils_base import BatchEncoding, TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils.generic import PaddingStrategy, to_py_obj

from hfplug.validation import check_bool, check_choice, check_int, check_int_list

from .normalization import BASIC_PIECES, check_text, is_unspaced, normalize, normalize_text
from .segmentation import SEGMENTERS, Segmenter, load_segmenter, parse_user_dict

VOCAB_FILES_NAMES = {"vocab_file": "vocab.txt", "tokenizer_file": "tokenizer.json"}
PRIVATE_USE = range(0xE000, 0xF900)


def pick_separator(vocab: Iterable[str]) -> str:
    """The first private-use character (U+E000..U+F8FF) that no vocabulary token contains.

    BERT's basic tokenisation drops private-use characters (category ``Co``), so a piece contains the
    separator only if a vocabulary word kept whole does, which this choice rules out.
    """
    used = set("".join(vocab))
    for code in PRIVATE_USE:
        if chr(code) not in used:
            return chr(code)
    raise ValueError(
        "the vocabulary uses every private-use character U+E000..U+F8FF; none is free as separator"
    )


class _Protected:
    """The added tokens a text is cut at, in the Rust backend's order: the special tokens first, then the other
    added tokens in the text between them (an added token that spans a special token never matches); each
    set longest first."""

    def __init__(self, special: list[str], added: list[str]) -> None:
        self.special, self.added = (
            regex.compile("|".join(map(regex.escape, contents))) if contents else None
            for contents in (special, added)
        )
        # one set only (usually the special tokens): one regex scan, as with a single pattern
        self.only = self.added if self.special is None else self.special if self.added is None else None

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of each protected token of ``text``, in order."""
        if self.only is not None:
            return (match.span() for match in self.only.finditer(text))
        return self._two_passes(text)

    def _two_passes(self, text: str) -> Iterator[tuple[int, int]]:
        pos = 0
        for match in self.special.finditer(text):
            start, end = match.span()
            yield from (m.span() for m in self.added.finditer(text, pos, start))
            yield start, end
            pos = end
        yield from (m.span() for m in self.added.finditer(text, pos))

    def search(self, text: str) -> bool:
        """Whether ``text`` holds a protected token (without a special token, the other added tokens are
        looked for in the whole text)."""
        if self.only is not None:
            return self.only.search(text) is not None
        return self.special.search(text) is not None or self.added.search(text) is not None


class _WordCache(dict):
    """``word -> compute(word)``, computed on first lookup; emptied when it holds ``maxsize`` words. ``key``
    records what the values depend on (settings, vocabulary, added tokens)."""

    def __init__(self, compute: Callable[[str], Any], key: tuple, maxsize: int = 1 << 17) -> None:
        super().__init__()
        self.compute, self.key, self.maxsize = compute, key, maxsize

    def __missing__(self, word: str) -> Any:
        if len(self) >= self.maxsize:
            self.clear()
        value = self[word] = self.compute(word)
        return value


def word_pieces(word: str, vocab: Mapping[str, int], normalize_word: tuple[bool, bool] | None) -> list[str]:
    """The WordPiece inputs of a segmented word: the word itself when it is in the vocabulary, else its BERT
    basic pieces. ``normalize_word = (lowercase, strip_accents)`` normalises the word first (normalisation
    after segmentation)."""
    if normalize_word is not None:
        word = normalize_text(word, *normalize_word)
    return [word] if word in vocab else BASIC_PIECES.findall(word)


def wordpiece_ids(piece: str, vocab: Mapping[str, int], unk_id: int, max_chars: int) -> list[int]:
    """BERT's WordPiece on one piece: greedy longest prefix, continuations as ``##`` + rest; the unknown id for
    the whole piece when a part matches nothing or the piece is longer than ``max_chars`` characters."""
    if len(piece) > max_chars:
        return [unk_id]
    ids, start = [], 0
    while start < len(piece):
        for end in range(len(piece), start, -1):
            index = vocab.get(piece[start:end] if start == 0 else "##" + piece[start:end])
            if index is not None:
                ids.append(index)
                start = end
                break
        else:
            return [unk_id]
    return ids


def load_vocab_file(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt`` (one token per line, id = line number) as ``{token: id}``; a token on two lines is a
    ValueError naming both lines (one of them would leave its id without a token)."""
    with open(path, encoding="utf-8") as handle:
        tokens = handle.read().split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            raise ValueError(
                f"{path} lists the token {token!r} on lines {vocab[token] + 1} and {index + 1}; a token's id is "
                "its line number, so each token must appear once"
            )
        vocab[token] = index
    return vocab


def check_vocab(name: str, vocab: Any) -> dict[str, int]:
    """``vocab`` as a ``{token: id}`` dict whose ids are ``0..n-1``, each used once (the line numbers of
    ``vocab.txt``).

    A shared id decodes to only one of its tokens; a gap is handed to the next added token although a higher
    id of the vocabulary already holds it. TypeError for a non-str token or non-int id, ValueError otherwise.
    """
    if not isinstance(vocab, Mapping):
        raise TypeError(
            f"{name} must be a {{token: id}} mapping or a vocab.txt path, got {type(vocab).__name__}"
        )
    if not vocab:
        raise ValueError(f"{name} is empty: it needs at least the unknown token")
    size, owners, checked = len(vocab), {}, {}
    for token, index in vocab.items():
        check_text(f"{name} token {token!r}", token)
        index = check_int(f"{name}[{token!r}]", index)
        if not 0 <= index < size:
            raise ValueError(
                f"{name}[{token!r}] = {index} is outside 0..{size - 1}: the ids of {size} tokens must be 0..{size - 1}"
            )
        if index in owners:
            raise ValueError(
                f"{name} gives the id {index} to both {owners[index]!r} and {token!r}; every token needs its own id"
            )
        owners[index], checked[token] = token, index
    return checked


NO_TRUNCATION = TruncationStrategy.DO_NOT_TRUNCATE


def _layout_in_python(kwargs: Mapping[str, Any]) -> bool:
    """Whether a call on single sequences can be laid out from the id cache: it asks for nothing that needs
    the Rust encodings (offsets, overflowing windows, a stride), and truncation, if any, keeps room for
    the special tokens (transformers' backend ignores a ``max_length`` below that)."""
    needs_backend = (
        "return_offsets_mapping",
        "return_overflowing_tokens",
        "stride",
        "sanitize_control_tokens",
    )
    if any(kwargs.get(name) for name in needs_backend):
        return False
    strategy = TruncationStrategy(kwargs.get("truncation_strategy", NO_TRUNCATION))
    if strategy == NO_TRUNCATION:
        return True
    max_length, special = kwargs.get("max_length"), 2 if kwargs.get("add_special_tokens", True) else 0
    return (
        strategy != TruncationStrategy.ONLY_SECOND
        and max_length is not None
        and max_length >= max(special, 1)
    )


def _wanted(kwargs: Mapping[str, Any], name: str, default: bool) -> bool:
    """A ``return_*`` flag of the call, ``default`` (from ``model_input_names``) when not given."""
    value = kwargs.get(name)
    return default if value is None else bool(value)


def _drop_batch_axis(data: dict[str, Any]) -> dict[str, Any]:
    """The output for one text without tensors, as transformers gives it: each list of rows becomes its one row
    (``length`` stays a one-element list)."""
    return {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}


class LazyEncodingsBatch(BatchEncoding):
    """A ``BatchEncoding`` whose Rust encodings (``encodings``, ``word_ids()``, ``tokens()``, ``char_to_token()``,
    indexing by int, pickling) are built by ``build()`` on first use; ids, masks and lengths are there from the
    start. ``is_fast`` is ``True`` without building them."""

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        encoding: Any = None,
        tensor_type: Any = None,
        prepend_batch_axis: bool = False,
        n_sequences: int | None = None,
        build: Callable[[], list[Any]] | None = None,
    ) -> None:
        super().__init__(data, encoding, tensor_type, prepend_batch_axis, n_sequences)
        self.__dict__["_build"] = build

    @property
    def _encodings(self) -> list[Any] | None:
        build = self.__dict__.pop("_build", None)
        if build is not None:
            self.__dict__["_built"] = build()
        return self.__dict__.get("_built")

    @_encodings.setter
    def _encodings(self, value: list[Any] | None) -> None:
        self.__dict__.pop("_build", None)
        self.__dict__["_built"] = value

    @property
    def is_fast(self) -> bool:
        return self.__dict__.get("_build") is not None or self.__dict__.get("_built") is not None


class WoBertTokenizer(TokenizersBackend):
    r"""WoBERT word-level Chinese tokenizer (transformers 5, tokenizers-backed).

    Args:
        vocab: ``{token: id}`` with the ids ``0..n-1``, each once, or a path to ``vocab.txt``.
            ``from_pretrained(dir)`` fills it from ``tokenizer.json`` or ``vocab.txt``.
        vocab_file: path to ``vocab.txt`` (used when ``vocab`` is not given).
        do_lower_case: lower-case the text (default ``True``).
        strip_accents: NFD + drop non-spacing marks; ``None`` (default) follows ``do_lower_case``, as in BERT.
        normalize_before_segmentation: normalise the whole text before segmenting (default ``True``,
            WoBERT's order); ``False`` segments the raw text and normalises each word (transformers 4's Python
            RoFormerTokenizer).
        segmenter: ``"rjieba"`` (default) or ``"jieba"``; both give the same words with ``hmm=False``.
        hmm: jieba's HMM for unseen words (default ``False``, as WoBERT was pre-trained).
        user_dict: extra segmenter words: a jieba-format file or an iterable of words / ``(word, freq)``;
            stored in the saved config. With normalisation before segmentation the words are normalised too.
        max_input_chars_per_word: longer WordPiece inputs become the unknown token (BERT: 100).

    Special and added tokens are cut out of the text before anything else and never reach the segmenter.
    ``is_split_into_words=True`` is not supported (segmentation would ignore the caller's word boundaries).
    ``encode_ids(texts)`` returns only the ids, several times faster than calling the tokenizer.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # noqa: RUF012 (transformers API)
    model = WordPiece

    def __init__(
        self,
        vocab: Mapping[str, int] | str | os.PathLike | None = None,
        vocab_file: str | os.PathLike | None = None,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        normalize_before_segmentation: bool = True,
        segmenter: str = "rjieba",
        hmm: bool = False,
        user_dict: str | os.PathLike | Iterable[Any] | None = None,
        max_input_chars_per_word: int = 100,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        **kwargs: Any,
    ) -> None:
        if vocab is None and vocab_file is not None:
            vocab = vocab_file
        if vocab is None:
            raise ValueError(
                "WoBertTokenizer needs a vocabulary: vocab={token: id}, vocab='vocab.txt', vocab_file='vocab.txt' "
                "or WoBertTokenizer.from_pretrained(folder)"
            )
        if isinstance(vocab, (str, os.PathLike)):
            if not os.path.isfile(vocab):
                raise ValueError(f"vocab file {str(vocab)!r} does not exist")
            vocab = load_vocab_file(vocab)
        vocab = check_vocab("vocab", vocab)
        if str(unk_token) not in vocab:
            raise ValueError(f"unk_token {str(unk_token)!r} is not in the vocabulary")
        check_choice("segmenter", segmenter, SEGMENTERS)
        check_int("max_input_chars_per_word", max_input_chars_per_word, minimum=1)
        if strip_accents is not None:
            check_bool("strip_accents", strip_accents)
        self.do_lower_case = check_bool("do_lower_case", do_lower_case)
        self.strip_accents = strip_accents
        self.normalize_before_segmentation = check_bool(
            "normalize_before_segmentation", normalize_before_segmentation
        )
        self.segmenter = segmenter
        self.hmm = check_bool("hmm", hmm)
        self._accents = do_lower_case if strip_accents is None else strip_accents
        user_words = parse_user_dict(user_dict)
        if normalize_before_segmentation:
            user_words = tuple((self._normalize(word)[0], freq) for word, freq in user_words)
        self.user_dict = user_words
        self._vocab = vocab
        self._separator = pick_separator(self._vocab)
        self.cache: dict[str, Any] = {}  # see _caches

        self._tokenizer = Tokenizer(
            WordPiece(
                self._vocab, unk_token=str(unk_token), max_input_chars_per_word=max_input_chars_per_word
            )
        )
        self._tokenizer.pre_tokenizer = pre_tokenizers.Split(self._separator, "removed")
        self._tokenizer.decoder = decoders.WordPiece(prefix="##")
        super().__init__(
            do_lower_case=do_lower_case,
            strip_accents=strip_accents,
            normalize_before_segmentation=normalize_before_segmentation,
            segmenter=segmenter,
            hmm=hmm,
            user_dict=[list(entry) for entry in user_words],
            max_input_chars_per_word=max_input_chars_per_word,
            unk_token=unk_token,
            sep_token=sep_token,
            pad_token=pad_token,
            cls_token=cls_token,
            mask_token=mask_token,
            **kwargs,
        )
        cls, sep = str(self.cls_token), str(self.sep_token)
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, self.cls_token_id), (sep, self.sep_token_id)],
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["cache"] = {}  # refilled on use; keeps pickles (Dataset.map workers) small
        return state

    # -- segmentation --------------------------------------------------------------------------------------
    def _normalize(self, text: str) -> tuple[str, list[int] | None]:
        return normalize(text, self.do_lower_case, self._accents)

    def _protected_pattern(self, split_special_tokens: bool) -> _Protected | None:
        """Pattern matching the added tokens (special ones too unless ``split_special_tokens``), longest first;
        rebuilt only when the added tokens change."""
        added = tuple(
            (token.content, token.special) for token in self._tokenizer.get_added_tokens_decoder().values()
        )
        key = (split_special_tokens, added)
        cached = self._caches().get("pattern")
        if cached is not None and cached[0] == key:
            return cached[1]
        # content -> special; with split_special_tokens the special tokens are ordinary text
        protected = {
            content: special
            for content, special in added
            if content and not (split_special_tokens and special)
        }
        for content in protected:
            if self._separator in content:
                raise ValueError(
                    f"added token {content!r} contains {self._separator!r}, the private-use character this "
                    "tokenizer's vocabulary leaves free to separate pieces; remove that character from the token"
                )
        by_length = sorted(protected, key=lambda content: (-len(content), content))
        special = [content for content in by_length if protected[content]]
        others = [content for content in by_length if not protected[content]]
        pattern = _Protected(special, others) if by_length else None
        self._caches()["pattern"] = (key, pattern)
        return pattern

    @staticmethod
    def _runs(text: str, pattern: _Protected | None) -> Iterator[tuple[int, str, bool]]:
        """``(start, run, protected)``: the protected (added) tokens of ``text`` and the runs between them."""
        pos = 0
        for start, end in pattern.spans(text) if pattern is not None else ():
            if start > pos:
                yield pos, text[pos:start], False
            yield start, text[start:end], True
            pos = end
        if pos < len(text):
            yield pos, text[pos:], False

    def _caches(self) -> dict[str, Any]:
        """Everything derived lazily (added-token pattern, word caches). Kept under ``cache`` like the word caches
        of transformers' Python tokenizers: datasets empties an attribute of that name when it fingerprints a
        tokenizer, so filling it leaves ``Dataset.map``'s cache key unchanged."""
        caches = self.__dict__.get("cache")
        if not isinstance(caches, dict):
            caches = self.__dict__["cache"] = {}
        return caches

    def _word_cache(self, kind: str, key: tuple, compute: Callable[[str], Any]) -> _WordCache:
        caches = self._caches()
        cache = caches.get(kind)
        if not isinstance(cache, _WordCache) or cache.key != key:
            cache = caches[kind] = _WordCache(compute, key)
        return cache

    def _normalize_word(self) -> tuple[bool, bool] | None:
        return None if self.normalize_before_segmentation else (self.do_lower_case, self._accents)

    def _fragment_cache(self) -> _WordCache:
        """``word -> its WordPiece inputs joined by the separator``."""
        normalize_word, vocab, sep = self._normalize_word(), self._vocab, self._separator
        return self._word_cache(
            "pieces", (normalize_word, sep), lambda word: sep.join(word_pieces(word, vocab, normalize_word))
        )

    def _joined(self, text: str, pattern: _Protected | None, segmenter: Segmenter, cache: _WordCache) -> str:
        """The WordPiece inputs of ``text`` joined by the separator (the backend's pre-tokenizer splits them)."""
        parts = []
        for _, run, protected in self._runs(text, pattern):
            if protected:
                parts.append(run)
                continue
            if self.normalize_before_segmentation:
                run = normalize_text(run, self.do_lower_case, self._accents)
            parts.append(self._separator.join(map(cache.__getitem__, segmenter.cut(run))))
        return self._separator.join(parts)

    def _pieces_with_starts(
        self, text: str, pattern: _Protected | None, segmenter: Segmenter
    ) -> tuple[list[str], list]:
        """The WordPiece inputs of ``text`` and where each starts in ``text``: an int when the characters map
        one to one, else a tuple with the original index of each piece character."""
        pieces: list[str] = []
        starts: list = []
        for begin, run, protected in self._runs(text, pattern):
            if protected:
                pieces.append(run)
                starts.append(begin)
            elif self.normalize_before_segmentation:
                normalized, align = self._normalize(run)
                self._add_pieces(segmenter.cut(normalized), begin, align, pieces, starts)
            else:
                for word in segmenter.cut(run):
                    normalized, align = self._normalize(word)
                    self._add_pieces([normalized], begin, align, pieces, starts)
                    begin += len(word)
        return pieces, starts

    def _add_pieces(
        self, words: list[str], base: int, align: list[int] | None, pieces: list[str], starts: list
    ) -> None:
        """Keep in-vocabulary words, BERT-split the others; record piece starts (``base`` + alignment)."""
        pos = 0
        for word in words:
            if word in self._vocab:
                split: Iterable[tuple[str, int]] = ((word, 0),)
            else:
                split = ((m.group(), m.start()) for m in BASIC_PIECES.finditer(word))
            for piece, offset in split:
                at = pos + offset
                pieces.append(piece)
                starts.append(
                    base + at if align is None else tuple(base + i for i in align[at : at + len(piece)])
                )
            pos += len(word)

    # -- encoding ------------------------------------------------------------------------------------------
    @staticmethod
    def _as_texts(value: Any, name: str) -> tuple[list[str], bool]:
        """``([text, ...], batched)``; a lone surrogate is a ValueError naming the text and the position."""
        if isinstance(value, str):
            return [check_text(name, value)], False
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            if not value:
                raise ValueError(f"{name} is an empty list: pass at least one string")
            return [check_text(f"{name}[{i}]", item) for i, item in enumerate(value)], True
        raise TypeError(f"{name} must be a str or a list of str, got {type(value).__name__}")

    def _encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
        if kwargs.get("is_split_into_words"):
            raise ValueError(
                "WoBertTokenizer does not support is_split_into_words=True: it segments raw text itself; "
                "pass strings (join the words first)"
            )
        texts, batched = self._as_texts(text, "text")
        sequences = [texts]
        if text_pair is not None:
            pairs, pair_batched = self._as_texts(text_pair, "text_pair")
            if pair_batched != batched or len(pairs) != len(texts):
                raise ValueError("text_pair must match text: both single strings or lists of the same length")
            sequences.append(pairs)
        split = kwargs.get("split_special_tokens")
        pattern = self._protected_pattern(self.split_special_tokens if split is None else split)
        segmenter = load_segmenter(self.segmenter, self.hmm, self.user_dict)
        if text_pair is None and _layout_in_python(kwargs):
            rows = self._content_ids(texts, pattern, segmenter)
            if None not in rows:
                return self._python_layout(
                    rows,
                    batched,
                    kwargs,
                    lambda: self._backend_encode(sequences, batched, pattern, segmenter, kwargs).encodings,
                )
        return self._backend_encode(sequences, batched, pattern, segmenter, kwargs)

    def tokenize(
        self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs: Any
    ) -> list[str]:
        """The tokens of ``text`` (and ``pair``): ``self(text, pair).tokens()``, read from the ids so that no Rust
        encodings are built."""
        out = self._encode_plus(text=text, text_pair=pair, add_special_tokens=add_special_tokens, **kwargs)
        ids = to_py_obj(out["input_ids"])
        if ids and isinstance(ids[0], list):  # a batch: tokens() is the first row
            ids = ids[0]
        return [self._tokenizer.id_to_token(index) for index in ids]

    def _backend_encode(
        self,
        sequences: list[list[str]],
        batched: bool,
        pattern: _Protected | None,
        segmenter: Segmenter,
        kwargs: dict[str, Any],
    ) -> BatchEncoding:
        """transformers' Rust path on the joined pieces (encodings with word ids in the pieces); offsets, when asked
        for, moved back to the original texts."""
        if not kwargs.get("return_offsets_mapping"):
            cache = self._fragment_cache()
            joined = [[self._joined(t, pattern, segmenter, cache) for t in seq] for seq in sequences]
            return super()._encode_plus(*(j if batched else j[0] for j in joined), **kwargs)
        segmented = [[self._pieces_with_starts(t, pattern, segmenter) for t in seq] for seq in sequences]
        sep = self._separator
        joined = [[sep.join(pieces) for pieces, _ in seq] for seq in segmented]
        out = super()._encode_plus(*joined, **{**kwargs, "return_tensors": None})  # batched: offsets per row
        data = {**out, "offset_mapping": self._original_offsets(out, segmented)}
        return_tensors = kwargs.get("return_tensors")
        if not (batched or return_tensors or kwargs.get("return_overflowing_tokens")):
            data = _drop_batch_axis(data)
        return BatchEncoding(data, out.encodings, tensor_type=return_tensors)

    def _python_layout(
        self,
        rows: list[list[int]],
        batched: bool,
        kwargs: dict[str, Any],
        build: Callable[[], list[Any]],
    ) -> BatchEncoding:
        """What the backend's post-processor, truncation and padding make of the content ids ``rows`` of single
        sequences: ``[CLS] ids [SEP]`` (type ids 0) cut to ``max_length`` on ``truncation_side``, padded by
        ``self.pad``. The Rust encodings come from ``build`` on first use (``word_ids()``, ``tokens()``, ...)."""
        prefix, suffix = self._special_ids(kwargs.get("add_special_tokens", True))
        max_length = kwargs.get("max_length")
        if TruncationStrategy(kwargs.get("truncation_strategy", "do_not_truncate")) != NO_TRUNCATION:
            keep = max_length - len(prefix) - len(suffix)
            if self.truncation_side == "right":
                rows = [ids[:keep] for ids in rows]
            else:
                rows = [ids[max(len(ids) - keep, 0) :] for ids in rows]
        input_ids = [[*prefix, *ids, *suffix] for ids in rows]
        data: dict[str, Any] = {"input_ids": input_ids}
        if _wanted(kwargs, "return_token_type_ids", "token_type_ids" in self.model_input_names):
            data["token_type_ids"] = [[0] * len(ids) for ids in input_ids]
        return_attention_mask = _wanted(
            kwargs, "return_attention_mask", "attention_mask" in self.model_input_names
        )
        if return_attention_mask:
            data["attention_mask"] = [[1] * len(ids) for ids in input_ids]
        if kwargs.get("return_special_tokens_mask"):
            data["special_tokens_mask"] = [
                [1] * len(prefix) + [0] * len(ids) + [1] * len(suffix) for ids in rows
            ]
        padding = PaddingStrategy(kwargs.get("padding_strategy", "do_not_pad"))
        if padding != PaddingStrategy.DO_NOT_PAD:
            data = self.pad(
                data,
                padding=padding,
                max_length=max_length,
                pad_to_multiple_of=kwargs.get("pad_to_multiple_of"),
                padding_side=kwargs.get("padding_side"),
                return_attention_mask=return_attention_mask,
            ).data
        if kwargs.get("return_length"):
            data["length"] = [len(ids) for ids in data["input_ids"]]
        for ids in data["input_ids"]:
            self._eventual_warn_about_too_long_sequence(ids, max_length, kwargs.get("verbose", True))
        return_tensors = kwargs.get("return_tensors")
        if not (batched or return_tensors):
            data = _drop_batch_axis(data)
        return LazyEncodingsBatch(data, tensor_type=return_tensors, n_sequences=1, build=build)

    def _special_ids(self, add_special_tokens: bool) -> tuple[list[int], list[int]]:
        """The ids the post-processor puts before and after a single sequence."""
        return ([self.cls_token_id], [self.sep_token_id]) if add_special_tokens else ([], [])

    def _content_ids(
        self, texts: list[str], pattern: _Protected | None, segmenter: Segmenter
    ) -> list[list[int] | None]:
        """Each text's ids without special tokens, from the per-word id cache; ``None`` for a text in which an
        added token appears inside a normalised word (only the backend cuts it out there)."""
        cache = self._id_cache(pattern)
        added = {token.content: index for index, token in self._tokenizer.get_added_tokens_decoder().items()}
        normalize_first, lowercase, accents = (
            self.normalize_before_segmentation,
            self.do_lower_case,
            self._accents,
        )
        cut, lookup, runs = segmenter.cut, cache.__getitem__, self._runs
        rows: list[list[int] | None] = []
        for item in texts:
            ids: list[int] | None = []
            for _, run, protected in runs(item, pattern):
                if protected:
                    ids.append(added[run])
                    continue
                per_word = list(
                    map(lookup, cut(normalize_text(run, lowercase, accents) if normalize_first else run))
                )
                if None in per_word:
                    ids = None
                    break
                ids.extend(chain.from_iterable(per_word))
            rows.append(ids)
        return rows

    def encode_ids(
        self, text: str | list[str], add_special_tokens: bool = True, max_length: int | None = None
    ) -> list[int] | list[list[int]]:
        """Only the token ids: ``self(text, truncation=max_length is not None, max_length=max_length)["input_ids"]``,
        from the same per-word id cache as calling the tokenizer, without a ``BatchEncoding``.

        For preprocessing that needs nothing else: no attention mask, offsets, padding or tensors (pad later with
        ``self.pad`` or a data collator). ``max_length`` keeps ``max_length`` tokens, [CLS] and [SEP] included,
        dropping the rest from the side ``truncation_side`` names (the end by default; ``None``: no truncation). A text in which an added token appears inside a normalised
        word (e.g. added ``"abc"``, text ``"ABC"``) takes the backend path, so the ids always agree with
        ``__call__``.
        """
        texts, batched = self._as_texts(text, "text")
        prefix, suffix = self._special_ids(check_bool("add_special_tokens", add_special_tokens))
        if max_length is not None:  # room for the special tokens
            check_int("max_length", max_length, minimum=max(len(prefix) + len(suffix), 1))
        pattern = self._protected_pattern(self.split_special_tokens)
        segmenter = load_segmenter(self.segmenter, self.hmm, self.user_dict)
        rows = []
        for item, ids in zip(texts, self._content_ids(texts, pattern, segmenter), strict=True):
            if ids is None:
                ids = self(item, add_special_tokens=False)["input_ids"]
            if max_length is not None:
                keep = max_length - len(prefix) - len(suffix)
                ids = ids[max(len(ids) - keep, 0) :] if self.truncation_side == "left" else ids[:keep]
            rows.append([*prefix, *ids, *suffix])
        return rows if batched else rows[0]

    def _id_cache(self, pattern: _Protected | None) -> _WordCache:
        """``word -> tuple of its ids``, or ``None`` when an added token occurs in one of its pieces (the Rust
        backend would cut it out there)."""
        normalize_word, vocab = self._normalize_word(), self._vocab
        model = self._tokenizer.model
        unk_id, max_chars = vocab[model.unk_token], model.max_input_chars_per_word

        def ids_of(word: str) -> tuple[int, ...] | None:
            ids: list[int] = []
            for piece in word_pieces(word, vocab, normalize_word):
                if pattern is not None and pattern.search(piece):
                    return None
                ids.extend(wordpiece_ids(piece, vocab, unk_id, max_chars))
            return tuple(ids)

        return self._word_cache("ids", (normalize_word, pattern, unk_id, max_chars), ids_of)

    @staticmethod
    def _original_offsets(
        out: Any, segmented: list[list[tuple[list[str], list]]]
    ) -> list[list[tuple[int, int]]]:
        """Token offsets in the original texts from the backend's offsets in the joined pieces (a piece
        starts one separator after the previous one)."""
        samples = out.get("overflow_to_sample_mapping") or range(len(out.encodings))
        in_joined: dict[tuple[int, int], list[int]] = {}
        rows = []
        for encoding, sample in zip(out.encodings, samples, strict=True):
            row = []
            for (begin, end), word, sequence in zip(
                encoding.offsets, encoding.word_ids, encoding.sequence_ids, strict=True
            ):
                if word is None or end <= begin:
                    row.append((0, 0))
                    continue
                pieces, starts = segmented[sequence][sample]
                if (sequence, sample) not in in_joined:
                    in_joined[sequence, sample] = list(accumulate((len(p) + 1 for p in pieces), initial=0))
                shift = in_joined[sequence, sample][word]
                begin, end, start = begin - shift, end - shift, starts[word]
                if isinstance(start, int):
                    row.append((start + begin, start + end))
                else:
                    row.append((start[begin], start[end - 1] + 1))
            rows.append(row)
        return rows

    # -- decoding ------------------------------------------------------------------------------------------
    def _check_ids(self, name: str, ids: Any) -> list[int]:
        """``ids`` (an int, a list, an array or a tensor) as a list of ints in ``0..len(self)-1``.

        transformers' backend returns ``None`` (decodes to ``''``) for a too large id and raises OverflowError
        for a negative one; here either is a ValueError naming the position, the id and the valid range.
        """
        checked = check_int_list(name, ids)
        size = len(self)
        for position, index in enumerate(checked):
            if not 0 <= index < size:
                where = name if isinstance(ids, numbers.Integral) else f"{name}[{position}]"
                raise ValueError(
                    f"{where} = {index} is not a token id of this tokenizer: its {size} tokens (added ones "
                    f"included) have the ids 0..{size - 1}"
                )
        return checked

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> str | list[str]:
        """The token of an id (an int gives a str) or the tokens of ids; an id outside ``0..len(self)-1`` is a
        ValueError (transformers: ``None`` or OverflowError)."""
        ids = to_py_obj(ids)
        checked = self._check_ids("ids", ids)
        if isinstance(ids, numbers.Integral):
            return self._tokenizer.id_to_token(checked[0])
        return super().convert_ids_to_tokens(checked, skip_special_tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join tokens: ``##`` pieces attach, no space next to CJK / full-width text, spaces between words."""
        out: list[str] = []
        for token in tokens:
            if not token:
                continue
            if out and token.startswith("##") and len(token) > 2:
                out.append(token[2:])
                continue
            if out and not (is_unspaced(out[-1][-1]) or is_unspaced(token[0])):
                out.append(" ")
            out.append(token)
        return "".join(out)

    def decode(self, token_ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str | list[str]:
        """transformers' ``decode`` (one sequence or a batch); an id outside ``0..len(self)-1`` is a ValueError
        naming the row, the position and the id (transformers: dropped, or OverflowError when negative)."""
        token_ids = to_py_obj(token_ids)
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            for row, ids in enumerate(token_ids):
                self._check_ids(f"token_ids[{row}]", ids)
        else:
            self._check_ids("token_ids", token_ids)
        return super().decode(token_ids, skip_special_tokens, **kwargs)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self.convert_tokens_to_string(super().convert_ids_to_tokens(token_ids, skip_special_tokens))
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    # -- saving -------------------------------------------------------------------------------
    def placeholder_backend(self) -> Tokenizer:
        """The backend written to ``tokenizer.json``: the same vocabulary and post-processor with BERT's
        character-level normaliser and pre-tokenizer, so the file loads without custom code (no segmentation)."""
        backend = Tokenizer.from_str(self._tokenizer.to_str())
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=self.strip_accents,
            lowercase=self.do_lower_case,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return backend

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        tokenizer_file = os.path.join(
            str(save_directory), (filename_prefix + "-" if filename_prefix else "") + "tokenizer.json"
        )
        self.placeholder_backend().save(tokenizer_file)
        return (*file_names, tokenizer_file)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return tuple(self._tokenizer.model.save(str(save_directory), name=filename_prefix))


def _register_auto_tokenizer() -> None:
    """Let ``AutoTokenizer`` resolve ``tokenizer_class: "WoBertTokenizer"`` from a saved config.

    transformers 5 looks custom class names up in ``REGISTERED_TOKENIZER_CLASSES`` (what
    ``AutoTokenizer.register`` fills); registering the name alone avoids claiming a model type such as ``bert``.
    """
    from transformers.models.auto import tokenization_auto

    registry = getattr(tokenization_auto, "REGISTERED_TOKENIZER_CLASSES", None)
    if not isinstance(registry, dict):
        raise ImportError(
            "this transformers version has no tokenization_auto.REGISTERED_TOKENIZER_CLASSES; "
            "hfplug-wobert supports transformers>=5.23,<6"
        )
    registry[WoBertTokenizer.__name__] = WoBertTokenizer


_register_auto_tokenizer()
