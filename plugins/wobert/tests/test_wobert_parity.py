"""WoBertTokenizer against an independent implementation of the published algorithm.

Reference (bert4keras ``Tokenizer(pre_tokenize=lambda s: jieba.cut(s, HMM=False))`` as used by WoBERT):
lower-case + strip accents, ``jieba.cut(HMM=False)``, keep in-vocabulary words, otherwise Google BERT's
BasicTokenizer + WordpieceTokenizer, written character by character in ``_wobert_reference.py``.
"""

from __future__ import annotations

import jieba
import pytest
from _wobert_reference import CJK, basic_tokenize, is_punctuation, make_reference, ref_normalize, wordpiece


@pytest.fixture(scope="module")
def reference_tokens(wobert_vocab):
    return make_reference(wobert_vocab)


def test_parity_with_reference_on_real_sentences(
    wobert_tokenizer, wobert_vocab, reference_tokens, real_sentences
):
    assert len(real_sentences) >= 10_000
    batch = wobert_tokenizer(real_sentences, add_special_tokens=False)["input_ids"]
    mismatches = []
    for text, ids in zip(real_sentences, batch, strict=True):
        expected = [wobert_vocab[t] for t in reference_tokens(text)]
        if ids != expected:
            mismatches.append(text)
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]}"
    assert wobert_tokenizer.encode_ids(real_sentences, add_special_tokens=False) == batch
    # The word vocabulary really is used: far fewer tokens than characters.
    n_tokens = sum(map(len, batch))
    n_chars = sum(map(len, real_sentences))
    assert n_tokens < 0.85 * n_chars


EDGE_TEXTS = [
    "",
    "   \t\n ",
    "今天😀天气👍🏽很好👨‍👩‍👧",
    "ＡＢＣ１２３，全角！Ｃａｆé",
    "Hello WORLD, naïve café 北京欢迎你 αβΓ Ωmega русский текст 한국어 にほんご",
    "控制\x00字符\x07和\u200b零宽\ufffd替换\u2028行",
    "https://example.com/a?b=1&c=2 email@x.cn #话题# @某人 (括号) 【书名】",
    "x" * 150 + " 超长单词 " + "阿" * 3,
    "ΟΔΟΣ café ΣΑΣ",  # final sigma: lower() of the whole text differs from character-wise lower()
]


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_parity_on_edge_cases(wobert_tokenizer, wobert_vocab, reference_tokens, text):
    ids = wobert_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [wobert_vocab[t] for t in reference_tokens(text)]
    assert wobert_tokenizer.encode_ids(text, add_special_tokens=False) == ids


def test_offsets_slice_back_to_every_token(wobert_tokenizer, real_sentences):
    texts = real_sentences[::5] + EDGE_TEXTS
    enc = wobert_tokenizer(texts, return_offsets_mapping=True)
    checked = 0
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True):
        for token, (start, end) in zip(wobert_tokenizer.convert_ids_to_tokens(ids), offsets, strict=True):
            if token in ("[CLS]", "[SEP]"):
                assert (start, end) == (0, 0)
                continue
            assert end > start
            if token != "[UNK]":
                # a final sigma lower-cases to ς in context, to σ when sliced out alone
                piece = token.removeprefix("##").replace("ς", "σ")
                assert piece in ref_normalize(text[start:end]).replace("ς", "σ"), (text, token, start, end)
                checked += 1
    assert checked > 50_000


def test_offsets_exact_on_mixed_text(wobert_tokenizer):
    text = "[CLS]我爱北京天安门 Hello WORLD! 한"
    enc = wobert_tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    tokens = wobert_tokenizer.convert_ids_to_tokens(enc["input_ids"])
    spans = [text[a:b] for a, b in enc["offset_mapping"]]
    assert tokens[:5] == ["[CLS]", "我", "爱", "北京", "天安门"]
    assert spans[:8] == ["[CLS]", "我", "爱", "北京", "天安门", "Hello", "WORLD", "!"]
    assert spans[8:] == ["한"] * 3  # NFD splits the syllable into three jamo, each sliced back to it


def test_pairs_truncation_and_tensors_keep_offsets(wobert_tokenizer):
    enc = wobert_tokenizer(
        ["今天天气很好", "北京"],
        ["我爱北京天安门", "上海"],
        return_offsets_mapping=True,
        truncation=True,
        max_length=8,
        padding="max_length",
        return_tensors="pt",
    )
    assert enc["input_ids"].shape == (2, 8) and enc["offset_mapping"].shape == (2, 8, 2)
    second = enc["offset_mapping"][1].tolist()
    tokens = wobert_tokenizer.convert_ids_to_tokens(enc["input_ids"][1].tolist())
    assert tokens[:6] == ["[CLS]", "北京", "[SEP]", "上海", "[SEP]", "[PAD]"]
    assert second[:5] == [[0, 0], [0, 2], [0, 0], [0, 2], [0, 0]]


def test_segment_then_normalize_order_matches_its_reference(wobert_vocab, real_sentences):
    """normalize_before_segmentation=False: jieba on the raw text, each word normalised, then the same rule."""
    from hfplug_wobert import WoBertTokenizer

    tok = WoBertTokenizer(vocab=wobert_vocab, normalize_before_segmentation=False)
    texts = [*[t for t in real_sentences if any(c.isupper() for c in t)][:300], "Ａ股和B股 NBA球星 ＰＣ机"]
    assert len(texts) > 50

    def reference(text):
        tokens = []
        for word in jieba.cut(text, HMM=False):
            word = ref_normalize(word)
            if word in wobert_vocab:
                tokens.append(word)
            else:
                tokens.extend(t for piece in basic_tokenize(word) for t in wordpiece(piece, wobert_vocab))
        return [wobert_vocab[t] for t in tokens]

    got = tok(texts, add_special_tokens=False)["input_ids"]
    assert got == [reference(t) for t in texts]


def test_vocabulary_matches_the_bert4keras_recipe(wobert_vocab):
    """Reference: bert4keras load_vocab(simplified=True, startswith=specials) + sorted(jieba.dt.FREQ) top 20k."""
    from hfplug.data import bert_chinese_vocab_dir

    base = (bert_chinese_vocab_dir() / "vocab.txt").read_text("utf-8").split("\n")[:-1]  # a token is U+2028
    expected = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for token in base:
        stem = token[2:] if token.startswith("##") else token
        redundant = len(token) > 1 and any(
            is_punctuation(c) or any(lo <= ord(c) <= hi for lo, hi in CJK) for c in stem
        )
        if token not in expected and not redundant:
            expected[token] = len(expected)
    jieba.initialize()
    added = skipped = 0
    for word, _ in sorted(jieba.dt.FREQ.items(), key=lambda s: -s[1]):
        if word in expected:
            continue
        # not in the recipe: a word is added only if the tokenizer can produce it (jieba keeps it whole)
        if list(jieba.cut(ref_normalize(word), HMM=False)) == [word] and basic_tokenize(word):
            expected[word] = len(expected)
            added += 1
        else:
            skipped += 1
        if added == 20000:
            break
    assert list(wobert_vocab.items()) == list(expected.items())
    assert skipped == 24  # e.g. 不在, 对了, 中和: jieba cuts them into characters even alone


def test_every_added_word_is_producible(wobert_vocab, wobert_tokenizer, reference_tokens):
    """Tokenizing a word of the built vocabulary alone gives that word back (the reference and the tokenizer)."""
    words = list(wobert_vocab)[-20000:]
    assert [w for w in words if reference_tokens(w) != [w]] == []
    assert [w for w in words if wobert_tokenizer.tokenize(w) != [w]] == []


def test_words_the_tokenizer_never_produces_are_skipped():
    from hfplug_wobert import WoBertTokenizer, build_wobert_vocab

    from hfplug.data import bert_chinese_vocab_dir

    base = bert_chinese_vocab_dir()
    size = len(build_wobert_vocab(base, num_words=0))
    junk = {
        "": 9,
        "\x07": 8,
        "a\x07b": 7,
        "T恤": 6,
        "北京欢迎你": 5,
        "\u200b": 4,
        "Café": 3,
        "ab cd": 2,
        "天安门": 1,
    }
    settings = [{}, {"user_dict": ["北京欢迎你"]}, {"do_lower_case": False}]
    expected = [["天安门"], ["北京欢迎你", "天安门"], ["T恤", "天安门"]]
    for kwargs, words in zip(settings, expected, strict=True):
        vocab = build_wobert_vocab(base, num_words=5, words=junk, **kwargs)
        assert list(vocab)[size:] == words
        tok = WoBertTokenizer(vocab=vocab, **kwargs)
        assert [tok.tokenize(w) for w in words] == [[w] for w in words]


ROFORMER_TEXTS = ["我买了一件T恤", "去唱卡拉OK吧", "Café很好", "NBA球星", "Ａ股和B股"]


def test_roformer_normalises_before_segmentation_like_the_default(wobert_vocab, tmp_path):
    """transformers 5.23's RoFormerTokenizer(vocab=...) lower-cases and strips accents (its backend normaliser)
    before jieba, as WoBERT does by default; normalize_before_segmentation=False (transformers 4's Python
    RoFormerTokenizer: jieba on the raw text) differs where case decides a word. From a vocab.txt folder,
    RoFormerTokenizer splits every Chinese word into characters."""
    from hfplug_wobert import WoBertTokenizer
    from transformers import RoFormerTokenizer

    vocab = dict(wobert_vocab)
    for word in ("T恤", "t恤", "卡拉OK", "卡拉ok", "cafe"):
        vocab.setdefault(word, len(vocab))
    roformer = RoFormerTokenizer(vocab=vocab)
    default = WoBertTokenizer(vocab=vocab)
    raw_first = WoBertTokenizer(vocab=vocab, normalize_before_segmentation=False)
    tokens = [roformer.tokenize(t) for t in ROFORMER_TEXTS]
    assert tokens == [default.tokenize(t) for t in ROFORMER_TEXTS]
    assert tokens[0][-2:] == ["t", "恤"] and raw_first.tokenize(ROFORMER_TEXTS[0])[-1] == "t恤"
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    from_folder = RoFormerTokenizer.from_pretrained(tmp_path)
    assert from_folder.tokenize("我爱北京天安门") == ["我", "爱", "北", "京", "天", "安", "门"]
    assert from_folder.tokenize("我买了一件T恤")[-2:] == ["t", "恤"]  # lower-cased there too
