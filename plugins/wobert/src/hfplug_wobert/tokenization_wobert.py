"""WoBertTokenizer: jieba word segmentation, in-vocabulary words kept whole, BERT basic + WordPiece otherwise.

For a text ``s`` (Su Jianlin, "WoBERT", kexue.fm/archives/7758; bert4keras ``Tokenizer(pre_tokenize=...)``):

    s' = lower(strip_accents(NFD(s)))                      # before segmentation (WoBERT's order)
    w_1..w_n = jieba.cut(s', HMM=False)
    tokens = concat_i ( [w_i] if w_i in vocab else WordPiece(BERT basic split(w_i)) )

Segmentation and the vocabulary test run in Python (rjieba by default); the pieces then go to the Rust
WordPiece model as pre-split words, so padding, truncation, tensors and special tokens are the usual
transformers machinery. The backend holds no Python component, so the tokenizer pickles as is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import regex
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from .normalization import BASIC_PIECES, is_unspaced, normalize
from .segmentation import SEGMENTERS, load_segmenter, parse_user_dict

VOCAB_FILES_NAMES = {"vocab_file": "vocab.txt", "tokenizer_file": "tokenizer.json"}


def load_vocab_file(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt`` (one token per line, id = line number) as ``{token: id}``."""
    with open(path, encoding="utf-8") as handle:
        tokens = handle.read().split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return {token: index for index, token in enumerate(tokens)}


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


class WoBertTokenizer(TokenizersBackend):
    r"""WoBERT word-level Chinese tokenizer (transformers 5, tokenizers-backed).

    Args:
        vocab: ``{token: id}`` or a path to ``vocab.txt``. ``from_pretrained(dir)`` fills it from
            ``tokenizer.json`` or ``vocab.txt``.
        vocab_file: path to ``vocab.txt`` (used when ``vocab`` is not given).
        do_lower_case: lower-case the text (default ``True``).
        strip_accents: NFD + drop non-spacing marks; ``None`` (default) follows ``do_lower_case``, as in BERT.
        normalize_before_segmentation: normalise the whole text before segmenting (default ``True``,
            WoBERT's order); ``False`` segments the raw text and normalises each word (RoFormer's order).
        segmenter: ``"rjieba"`` (default) or ``"jieba"``; both give the same words.
        hmm: jieba's HMM for unseen words (default ``False``, as WoBERT was pre-trained).
        user_dict: extra segmenter words: a jieba-format file or an iterable of words / ``(word, freq)``;
            stored in the saved config. With normalisation before segmentation the words are normalised too.
        max_input_chars_per_word: longer WordPiece inputs become the unknown token (BERT: 100).

    Special and added tokens are cut out of the text before anything else and never reach the segmenter.
    ``is_split_into_words=True`` is not supported (segmentation would ignore the caller's word boundaries).
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
        if isinstance(vocab, (str, os.PathLike)):
            if not os.path.isfile(vocab):
                raise ValueError(f"vocab file {str(vocab)!r} does not exist")
            vocab = load_vocab_file(vocab)
        if not isinstance(vocab, Mapping) or not vocab:
            raise ValueError(
                "WoBertTokenizer needs a vocabulary: vocab={token: id}, vocab='vocab.txt', vocab_file='vocab.txt' "
                f"or WoBertTokenizer.from_pretrained(folder); got {type(vocab).__name__}"
            )
        if str(unk_token) not in vocab:
            raise ValueError(f"unk_token {str(unk_token)!r} is not in the vocabulary")
        if segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {segmenter!r}")
        if not isinstance(max_input_chars_per_word, int) or max_input_chars_per_word < 1:
            raise ValueError(
                f"max_input_chars_per_word must be a positive int, got {max_input_chars_per_word!r}"
            )
        if strip_accents is not None:
            _check_flag("strip_accents", strip_accents)
        self.do_lower_case = _check_flag("do_lower_case", do_lower_case)
        self.strip_accents = strip_accents
        self.normalize_before_segmentation = _check_flag(
            "normalize_before_segmentation", normalize_before_segmentation
        )
        self.segmenter = segmenter
        self.hmm = _check_flag("hmm", hmm)
        self._accents = do_lower_case if strip_accents is None else strip_accents
        user_words = parse_user_dict(user_dict)
        if normalize_before_segmentation:
            user_words = tuple((self._normalize(word)[0], freq) for word, freq in user_words)
        self.user_dict = user_words
        self._vocab = dict(vocab)

        self._tokenizer = Tokenizer(
            WordPiece(
                self._vocab, unk_token=str(unk_token), max_input_chars_per_word=max_input_chars_per_word
            )
        )
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

    # -- segmentation --------------------------------------------------------------------------------------
    def _normalize(self, text: str) -> tuple[str, list[int] | None]:
        return normalize(text, self.do_lower_case, self._accents)

    def _protected_pattern(self, split_special_tokens: bool) -> regex.Pattern | None:
        """Pattern matching the added tokens (special ones too unless ``split_special_tokens``)."""
        contents = sorted(
            {
                token.content
                for token in self._tokenizer.get_added_tokens_decoder().values()
                if not (split_special_tokens and token.special) and token.content
            },
            key=lambda content: (-len(content), content),
        )
        key = tuple(contents)
        cache = self.__dict__.get("_protected_cache")
        if cache is None or cache[0] != key:
            cache = (key, regex.compile("|".join(map(regex.escape, contents))) if contents else None)
            self.__dict__["_protected_cache"] = cache
        return cache[1]

    def _words_to_pieces(
        self, words: list[str], base: int, align: list[int] | None, pieces: list[str], starts: list | None
    ) -> None:
        """Keep in-vocabulary words, BERT-split the others; record piece starts in the original text.

        A start is an int (identity alignment) or a tuple with the original index of each piece character.
        """
        vocab = self._vocab
        if starts is None:
            append, extend, findall = pieces.append, pieces.extend, BASIC_PIECES.findall
            for word in words:
                if word in vocab:
                    append(word)
                else:
                    extend(findall(word))
            return
        pos = 0
        for word in words:
            if word in vocab:
                split = ((word, 0),)
            else:
                split = tuple((m.group(), m.start()) for m in BASIC_PIECES.finditer(word))
            for piece, offset in split:
                pieces.append(piece)
                at = pos + offset
                starts.append(
                    base + at if align is None else tuple(base + i for i in align[at : at + len(piece)])
                )
            pos += len(word)

    def _segment_span(self, text: str, base: int, pieces: list[str], starts: list | None) -> None:
        if not text:
            return
        segmenter = load_segmenter(self.segmenter, self.hmm, self.user_dict)
        if self.normalize_before_segmentation:
            normalized, align = self._normalize(text)
            self._words_to_pieces(segmenter.cut(normalized), base, align, pieces, starts)
            return
        pos = 0
        for word in segmenter.cut(text):
            normalized, align = self._normalize(word)
            self._words_to_pieces([normalized], base + pos, align, pieces, starts)
            pos += len(word)

    def pre_tokenize(self, text: str, split_special_tokens: bool = False, return_starts: bool = False):
        """The pieces handed to WordPiece (and, with ``return_starts``, where each starts in ``text``)."""
        pieces: list[str] = []
        starts: list | None = [] if return_starts else None
        pattern = self._protected_pattern(split_special_tokens)
        pos = 0
        for match in pattern.finditer(text) if pattern is not None else ():
            self._segment_span(text[pos : match.start()], pos, pieces, starts)
            pieces.append(match.group())
            if starts is not None:
                starts.append(match.start())
            pos = match.end()
        self._segment_span(text[pos:], pos, pieces, starts)
        return (pieces, starts) if return_starts else pieces

    # -- encoding ------------------------------------------------------------------------------------------
    @staticmethod
    def _as_texts(value: Any, name: str) -> tuple[list[str], bool]:
        if isinstance(value, str):
            return [value], False
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            if not value:
                raise ValueError(f"{name} is an empty list: pass at least one string")
            return list(value), True
        raise TypeError(f"{name} must be a str or a list of str, got {type(value).__name__}")

    def _encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any):
        if kwargs.get("is_split_into_words"):
            raise ValueError(
                "WoBertTokenizer does not support is_split_into_words=True: it segments raw text itself; "
                "pass strings (join the words first)"
            )
        texts, batched = self._as_texts(text, "text")
        pairs = None
        if text_pair is not None:
            pairs, pair_batched = self._as_texts(text_pair, "text_pair")
            if pair_batched != batched or len(pairs) != len(texts):
                raise ValueError("text_pair must match text: both single strings or lists of the same length")
        split = kwargs.get("split_special_tokens")
        split = self.split_special_tokens if split is None else split
        with_offsets = bool(kwargs.get("return_offsets_mapping"))
        seg_a = [self.pre_tokenize(t, split, with_offsets) for t in texts]
        seg_b = [self.pre_tokenize(t, split, with_offsets) for t in pairs] if pairs is not None else None
        if not with_offsets:
            pieces_a, pieces_b = seg_a, seg_b
        else:
            pieces_a = [p for p, _ in seg_a]
            pieces_b = [p for p, _ in seg_b] if seg_b is not None else None
        if not batched:
            pieces_a = pieces_a[0]
            pieces_b = pieces_b[0] if pieces_b is not None else None
        kwargs["is_split_into_words"] = True
        if not with_offsets:
            return super()._encode_plus(pieces_a, pieces_b, **kwargs)
        return_tensors = kwargs.pop("return_tensors", None)
        out = super()._encode_plus(pieces_a, pieces_b, return_tensors=None, **kwargs)
        starts = ([s for _, s in seg_a], [s for _, s in seg_b] if seg_b is not None else None)
        offsets = self._original_offsets(out, starts)
        out["offset_mapping"] = offsets if (batched or "overflow_to_sample_mapping" in out) else offsets[0]
        if return_tensors is None:
            return out
        data = (
            dict(out)
            if (batched or "overflow_to_sample_mapping" in out)
            else {k: [v] for k, v in out.items()}
        )
        return type(out)(data, out.encodings, tensor_type=return_tensors)

    @staticmethod
    def _original_offsets(out: Any, starts: tuple[list, list | None]) -> list[list[tuple[int, int]]]:
        samples = out.get("overflow_to_sample_mapping") or range(len(out.encodings))
        rows = []
        for encoding, sample in zip(out.encodings, samples, strict=True):
            row = []
            for (begin, end), word, sequence in zip(
                encoding.offsets, encoding.word_ids, encoding.sequence_ids, strict=True
            ):
                if word is None or end <= begin:
                    row.append((0, 0))
                    continue
                start = starts[sequence][sample][word]
                if isinstance(start, int):
                    row.append((start + begin, start + end))
                else:
                    row.append((start[begin], start[end - 1] + 1))
            rows.append(row)
        return rows

    # -- decoding ------------------------------------------------------------------------------------------
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

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(token_ids, skip_special_tokens))
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
