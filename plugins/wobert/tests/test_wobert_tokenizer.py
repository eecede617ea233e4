from __future__ import annotations

import json
import pickle

import pytest
from hfplug_wobert import WoBertTokenizer


def test_rjieba_and_jieba_engines_give_identical_ids(wobert_vocab, real_sentences):
    texts = [*real_sentences[::8], "区块链和元宇宙是新词，云原生也是", "  空格\t制表\n换行\r\n回车 "]
    user = ["区块链", ("元宇宙", 5000), "云原生 20"]
    by_engine = {
        name: WoBertTokenizer(vocab=wobert_vocab, segmenter=name, user_dict=user)(texts)["input_ids"]
        for name in ("rjieba", "jieba")
    }
    assert by_engine["rjieba"] == by_engine["jieba"]


def test_user_dict_changes_segmentation_and_accepts_files(wobert_vocab, tmp_path):
    vocab = {**wobert_vocab, "区块链": len(wobert_vocab)}
    plain = WoBertTokenizer(vocab=vocab)
    assert plain.tokenize("区块链技术") == ["区", "块", "链", "技术"]
    path = tmp_path / "user.txt"
    path.write_text("区块链 10 n\n\n", encoding="utf-8")
    for user_dict in (["区块链"], path, str(path)):
        assert WoBertTokenizer(vocab=vocab, user_dict=user_dict).tokenize("区块链技术") == ["区块链", "技术"]
    # user words are normalised like the text when normalising first
    tok = WoBertTokenizer(vocab={**vocab, "chatgpt模型": len(vocab)}, user_dict=["ChatGPT模型"])
    assert tok.tokenize("ChatGPT模型") == ["chatgpt模型"]


def test_special_and_added_tokens_never_reach_the_segmenter(wobert_vocab, monkeypatch):
    tok = WoBertTokenizer(vocab=wobert_vocab)
    tok.add_tokens(["天气很好", "new york"])
    seen: list[str] = []
    from hfplug_wobert import tokenization_wobert

    real = tokenization_wobert.load_segmenter

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def cut(self, text):
            seen.append(text)
            return self.inner.cut(text)

    monkeypatch.setattr(tokenization_wobert, "load_segmenter", lambda *a: Spy(real(*a)))
    text = "[CLS]今天天气很好[MASK]我在new york[SEP]"
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "今天", "天气很好", "[MASK]", "我", "在", "new york", "[SEP]"]
    assert seen == ["今天", "我在"]
    seen.clear()
    assert tok.tokenize("[MASK]", split_special_tokens=True) == ["[", "ma", "##sk", "]"]
    assert seen == ["[mask]"]  # normalised text, as any other text


def test_decode_joins_cjk_and_spaces_latin(wobert_tokenizer):
    text = "我爱北京天安门，Hello World！今天GPT模型很好。"
    ids = wobert_tokenizer(text)["input_ids"]
    assert (
        wobert_tokenizer.decode(ids, skip_special_tokens=True)
        == "我爱北京天安门，hello world！今天gpt模型很好。"
    )
    assert wobert_tokenizer.decode(ids).startswith("[CLS]我爱北京")
    assert wobert_tokenizer.convert_tokens_to_string(["un", "##aff", "##able", "北京", "is", "big"]) == (
        "unaffable北京is big"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\t\n\u3000",
        "😀🤖",
        "Ｈｅｌｌｏ，世界！",
        "abc\x00\x01\x1f中文",
        "日本語とEnglish混合",
        "🇨🇳" * 3,
    ],
)
def test_awkward_inputs_have_defined_results(wobert_tokenizer, text):
    enc = wobert_tokenizer(text, return_offsets_mapping=True)
    assert (
        enc["input_ids"][0] == wobert_tokenizer.cls_token_id
        and enc["input_ids"][-1] == wobert_tokenizer.sep_token_id
    )
    assert len(enc["offset_mapping"]) == len(enc["input_ids"])


def test_whitespace_and_control_only_give_no_content_tokens(wobert_tokenizer):
    for text in ("", "   ", "\t\n\r\u3000", "\x00\x07\u200b"):
        assert wobert_tokenizer.tokenize(text) == []


def test_very_long_text(wobert_tokenizer):
    text = "今天天气很好，我们去北京天安门看升旗。" * 5300  # ~100k characters
    assert len(text) >= 100_000
    ids = wobert_tokenizer(text, add_special_tokens=False)["input_ids"]
    per_sentence = wobert_tokenizer("今天天气很好，我们去北京天安门看升旗。", add_special_tokens=False)[
        "input_ids"
    ]
    assert ids == per_sentence * 5300
    truncated = wobert_tokenizer(text, truncation=True, max_length=512)["input_ids"]
    assert len(truncated) == 512


def test_bad_input_raises_clear_errors(wobert_tokenizer, wobert_vocab):
    with pytest.raises(ValueError, match="specify either `text`"):  # transformers' own check
        wobert_tokenizer(None)
    with pytest.raises(TypeError, match="text must be a str"):
        wobert_tokenizer.tokenize(None)
    with pytest.raises(TypeError, match="text must be a str"):
        wobert_tokenizer(["ok", 3])
    with pytest.raises(ValueError, match="empty list"):
        wobert_tokenizer([])
    with pytest.raises(ValueError, match="is_split_into_words"):
        wobert_tokenizer(["北京", "欢迎"], is_split_into_words=True)
    with pytest.raises(ValueError, match="text_pair must match"):
        wobert_tokenizer(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="segmenter must be one of"):
        WoBertTokenizer(vocab=wobert_vocab, segmenter="thulac")
    with pytest.raises(ValueError, match="needs a vocabulary"):
        WoBertTokenizer()
    with pytest.raises(ValueError, match="unk_token"):
        WoBertTokenizer(vocab={"a": 0})
    with pytest.raises(ValueError, match="does not exist"):
        WoBertTokenizer(vocab="/nonexistent/vocab.txt")
    with pytest.raises(TypeError, match="hmm must be True or False"):
        WoBertTokenizer(vocab=wobert_vocab, hmm="no")
    with pytest.raises(ValueError, match="no whitespace"):
        WoBertTokenizer(vocab=wobert_vocab, user_dict=[("two words", 3)])
    with pytest.raises(
        ValueError, match=r"user_dict frequency of '词' \(entry 0\) must be an integer in \[1, "
    ):
        WoBertTokenizer(vocab=wobert_vocab, user_dict=[("词", -1)])
    with pytest.raises(ValueError, match="does not exist"):
        WoBertTokenizer(vocab=wobert_vocab, user_dict="missing_user_dict.txt")


def test_offsets_do_not_change_ids(wobert_tokenizer, real_sentences):
    """The two encoding paths (piece cache without offsets, alignment with offsets) give the same ids."""
    texts = [*real_sentences[::10], "ΟΔΟΣ café ΣΑΣ", "Ｃａｆé naïve ﬁ ǅ İstanbul", "[CLS]北京[MASK]天安门"]
    plain = wobert_tokenizer(texts, ["北京" + t[:5] for t in texts])
    with_offsets = wobert_tokenizer(texts, ["北京" + t[:5] for t in texts], return_offsets_mapping=True)
    assert plain["input_ids"] == with_offsets["input_ids"]
    assert plain["token_type_ids"] == with_offsets["token_type_ids"]
    assert plain.tokens(3) == wobert_tokenizer.convert_ids_to_tokens(plain["input_ids"][3])


def test_piece_cache_eviction_and_settings_keep_ids(wobert_vocab, real_sentences):
    texts = real_sentences[:300]
    expected = WoBertTokenizer(vocab=wobert_vocab)(texts)["input_ids"]
    tok = WoBertTokenizer(vocab=wobert_vocab)
    assert tok(texts[:10]).encodings  # the Rust encodings use the piece cache, the ids the id cache
    for kind in ("pieces", "ids"):
        tok.cache[kind].maxsize = 7  # emptied every 7 new words
    assert tok(texts)["input_ids"] == expected
    assert [encoding.ids for encoding in tok(texts).encodings] == expected
    assert tok.encode_ids(texts) == expected
    assert len(tok.cache["pieces"]) <= 7 and len(tok.cache["ids"]) <= 7
    tok.normalize_before_segmentation = False  # a settings change starts a new cache
    other = WoBertTokenizer(vocab=wobert_vocab, normalize_before_segmentation=False)
    assert tok(texts)["input_ids"] == other(texts)["input_ids"] == tok.encode_ids(texts)


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_ids_truncates_on_the_tokenizers_side(wobert_vocab, real_sentences, side):
    """encode_ids(max_length=n) gives the call's truncated ids, whichever side truncation_side names."""
    tok = WoBertTokenizer(vocab=wobert_vocab, truncation_side=side)
    texts = real_sentences[:20]
    for max_length in (2, 3, 6, 17):
        expected = tok(texts, truncation=True, max_length=max_length)["input_ids"]
        assert tok.encode_ids(texts, max_length=max_length) == expected
        assert (
            tok.encode_ids(texts, max_length=max_length, add_special_tokens=False)
            == tok(texts, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"]
        )


def test_pickles_leave_the_piece_cache_behind(wobert_vocab, real_sentences):
    import copy
    import pickle

    tok = WoBertTokenizer(vocab=wobert_vocab)
    ids = tok(real_sentences[:50])["input_ids"]
    assert len(tok.cache["ids"]) > 100
    for again in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert again.cache == {}
        assert again(real_sentences[:50])["input_ids"] == ids


def test_separator_avoids_vocabulary_characters(wobert_vocab):
    """A vocabulary word made of U+E000 is kept whole (jieba yields it), so the pieces use U+E001."""
    vocab = {**wobert_vocab, "\ue000": len(wobert_vocab)}
    tok = WoBertTokenizer(vocab=vocab)
    split = json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"]
    assert (split["type"], split["pattern"], split["behavior"]) == ("Split", {"String": "\ue001"}, "Removed")
    assert tok.tokenize("北京\ue000天安门") == ["北京", "\ue000", "天安门"]
    enc = tok("北京\ue000天安门", return_offsets_mapping=True, add_special_tokens=False)
    assert enc["offset_mapping"] == [(0, 2), (2, 3), (3, 6)]
    # in the default vocabulary U+E000 is free: dropped from text like any private-use character
    assert WoBertTokenizer(vocab=wobert_vocab).tokenize("北京\ue000天安门") == ["北京", "天安门"]


def test_added_token_holding_the_separator_is_refused(wobert_vocab):
    tok = WoBertTokenizer(vocab=wobert_vocab)
    tok.add_tokens(["a\ue000b"])
    with pytest.raises(ValueError, match=r"added token 'a\\ue000b' contains '\\ue000'"):
        tok("北京")


@pytest.mark.parametrize(
    ("added", "text"),
    [(["[CLS]x"], "a[CLS]xb"), (["[SEP]Y"], "[SEP]Y北京"), (["x[C"], "x[CLS]北京"), (["Xab", "ab"], "QXabQ")],
)
def test_added_tokens_overlapping_special_ones_agree_on_every_path(wobert_vocab, added, text):
    """The Rust backend cuts special tokens out first and the other added tokens from what is left, so an added
    token spanning a special token never matches: every path (plain call, encode_ids, offsets, the lazily built
    Rust encodings, a pair) gives the same tokens, and each offset maps to its token's text."""
    tok = WoBertTokenizer(vocab=wobert_vocab)
    tok.add_tokens(added)
    plain = tok(text)["input_ids"]
    with_offsets = tok(text, return_offsets_mapping=True)
    assert with_offsets["input_ids"] == plain == tok.encode_ids(text) == tok([text]).encodings[0].ids
    assert tok(text, "北")["input_ids"][: len(plain)] == plain
    for token, (start, end) in zip(
        tok.convert_ids_to_tokens(plain), with_offsets["offset_mapping"], strict=True
    ):
        assert token in tok.all_special_tokens or text[start:end].lower() == token.removeprefix("##").lower()


def test_encode_ids_equals_call(wobert_vocab, real_sentences):
    texts = [
        *real_sentences[:200],
        "",
        " \t",
        "QZXW北京 aqzxwb",
        "[CLS]Ｎｅｗ York天气很好[MASK]",
        "x" * 120 + "北京",
    ]
    tok = WoBertTokenizer(vocab=wobert_vocab)
    # "QZXW" normalises to an added token, which the Rust backend cuts out of the word: full path there
    tok.add_tokens(["qzxw", "天气很好", "new york"])
    for max_length in (None, 2, 3, 16):
        truncate = {"truncation": True, "max_length": max_length} if max_length else {}
        assert tok.encode_ids(texts, max_length=max_length) == tok(texts, **truncate)["input_ids"]
    assert tok.encode_ids(texts[0]) == tok(texts[0])["input_ids"]
    assert tok.encode_ids(texts, add_special_tokens=False, max_length=1) == [
        ids[:1] for ids in tok(texts, add_special_tokens=False)["input_ids"]
    ]
    assert tok.encode_ids("QZXW北京 aqzxwb") == [2, len(wobert_vocab), 13625, 42, len(wobert_vocab), 43, 3]
    assert tok.convert_ids_to_tokens([13625, 42, 43]) == ["北京", "a", "b"]
    split = WoBertTokenizer(vocab=wobert_vocab, split_special_tokens=True)
    assert split.encode_ids(texts) == split(texts)["input_ids"]
    after = WoBertTokenizer(vocab=wobert_vocab, normalize_before_segmentation=False, do_lower_case=False)
    assert after.encode_ids(texts) == after(texts)["input_ids"]


def test_encode_ids_rejects_bad_arguments(wobert_tokenizer):
    with pytest.raises(ValueError, match="max_length must be an integer >= 2, got 1"):
        wobert_tokenizer.encode_ids("北京", max_length=1)
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 0"):
        wobert_tokenizer.encode_ids("北京", add_special_tokens=False, max_length=0)
    with pytest.raises(TypeError, match="max_length must be an integer >= 2, got '8'"):
        wobert_tokenizer.encode_ids("北京", max_length="8")
    with pytest.raises(TypeError, match="add_special_tokens must be True or False"):
        wobert_tokenizer.encode_ids("北京", add_special_tokens="yes")
    with pytest.raises(TypeError, match="text must be a str or a list of str"):
        wobert_tokenizer.encode_ids(None)


class CountingBackend:
    """Wraps a tokenizer's Rust backend and counts its ``encode_batch`` calls (everything else passes through)."""

    def __init__(self, inner):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "calls", 0)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)

    def encode_batch(self, *args, **kwargs):
        object.__setattr__(self, "calls", self.calls + 1)
        return self.inner.encode_batch(*args, **kwargs)


def test_call_builds_rust_encodings_only_when_asked(wobert_vocab, real_sentences):
    """``tok(texts)`` lays the ids out in Python; the Rust encodings (word ids, tokens) are built on first use."""
    tok = WoBertTokenizer(vocab=wobert_vocab)
    backend = tok._tokenizer = CountingBackend(tok._tokenizer)
    texts = real_sentences[:20]
    out = tok(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    assert tok.tokenize(texts[0]) and tok.encode_ids(texts) and out.is_fast
    assert backend.calls == 0
    assert [encoding.ids for encoding in out.encodings] == out["input_ids"].tolist()
    assert backend.calls == 1
    assert out.word_ids(3) == out.encodings[3].word_ids and out.tokens(3)[0] == "[CLS]"
    assert backend.calls == 1  # built once
    again = pickle.loads(pickle.dumps(out))  # pickles with its encodings
    assert [e.ids for e in again.encodings] == again["input_ids"].tolist() == out["input_ids"].tolist()
    tok(texts, return_offsets_mapping=True)  # offsets and pairs still take the backend
    tok(texts, texts)
    assert backend.calls == 3


def same_outputs(fast, slow):
    """Equal keys in the same order, equal values, the same array types."""
    assert list(fast) == list(slow)
    for key in fast:
        a, b = fast[key], slow[key]
        if hasattr(b, "tolist"):
            assert type(a) is type(b) and a.dtype == b.dtype and a.tolist() == b.tolist(), key
        else:
            assert a == b, key


LAYOUTS = [
    {},
    {"add_special_tokens": False},
    {"padding": True},
    {"padding": True, "pad_to_multiple_of": 8, "padding_side": "left"},
    {"padding": "max_length", "max_length": 40},
    {"truncation": True, "max_length": 2},
    {"truncation": True, "max_length": 3, "padding": "max_length"},
    {"truncation": "only_first", "max_length": 16},
    {"truncation": True, "max_length": 1, "add_special_tokens": False},
    {"truncation": True, "max_length": 1},  # below [CLS] + [SEP]: the backend leaves the text whole
    {"padding": True, "return_tensors": "pt", "return_length": True},
    {"padding": True, "truncation": True, "max_length": 12, "return_tensors": "np"},
    {"return_special_tokens_mask": True, "return_attention_mask": False, "return_token_type_ids": False},
    {"return_length": True, "split_special_tokens": True},
]


@pytest.mark.parametrize(
    "layout", LAYOUTS, ids=lambda layout: ",".join(f"{k}={v}" for k, v in layout.items())
)
@pytest.mark.parametrize("side", ["right", "left"])
def test_python_layout_equals_the_backend(wobert_vocab, real_sentences, layout, side):
    """Special tokens, truncation, padding, masks, lengths and tensors as the Rust backend lays them out (the
    offsets request takes the backend path; its offsets are dropped for the comparison)."""
    tok = WoBertTokenizer(vocab=wobert_vocab, truncation_side=side)
    tok.add_tokens(["qzxw", "天气很好"])
    texts = [
        *real_sentences[:30],
        "",
        "[CLS]今天天气很好[MASK]",
        "QZXW北京",
    ]  # the last one takes the backend
    for text in (texts, texts[:-1], texts[0], ""):
        fast = tok(text, **layout)
        slow = tok(text, return_offsets_mapping=True, **layout)
        slow.pop("offset_mapping")
        same_outputs(fast, slow)
        rows = (
            fast["input_ids"] if isinstance(text, list) or "return_tensors" in layout else [fast["input_ids"]]
        )
        assert (
            [e.ids for e in fast.encodings] == [list(row) for row in rows] == [e.ids for e in slow.encodings]
        )
