"""Bad vocabularies, out-of-range ids, invalid Unicode, the jieba cache and non-finite embeddings: each gives a
clear error at the earliest point (or a correct result), never a silent misreading."""

from __future__ import annotations

import marshal
import os
import tempfile

import pytest
import torch
from hfplug_wobert import WoBertTokenizer, init_word_embeddings

from hfplug.testing import tiny_config

SPECIALS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}


def test_vocabulary_sharing_an_id_is_refused():
    with pytest.raises(ValueError, match=r"vocab gives the id 7 to both 'a' and 'b'"):
        WoBertTokenizer(vocab={**SPECIALS, "北京": 5, "天": 6, "a": 7, "b": 7})


def test_vocabulary_with_a_gap_is_refused():
    """A gap would go to the next added token while a higher id of the vocabulary still holds it."""
    with pytest.raises(ValueError, match=r"vocab\['a'\] = 8 is outside 0\.\.5"):
        WoBertTokenizer(vocab={**SPECIALS, "a": 8})
    with pytest.raises(TypeError, match=r"vocab\['a'\] must be an integer"):
        WoBertTokenizer(vocab={**SPECIALS, "a": 5.0})
    with pytest.raises(TypeError, match="vocab token 5 must be a str"):
        WoBertTokenizer(vocab={**SPECIALS, 5: 5})


def test_vocab_txt_listing_a_token_twice_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join([*SPECIALS, "北京", "天", "北京"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lists the token '北京' on lines 6 and 8"):
        WoBertTokenizer(vocab=str(path))


def test_ids_outside_the_vocabulary_are_named(wobert_tokenizer):
    size = len(wobert_tokenizer)
    for bad, position in (([10**9], 0), ([13625, -1], 1), ([13625, size], 1)):
        expected = rf"token_ids\[{position}\] = {bad[position]} is not a token id .* ids 0\.\.{size - 1}"
        with pytest.raises(ValueError, match=expected):
            wobert_tokenizer.decode(bad)
    with pytest.raises(ValueError, match=rf"ids = {size} is not a token id"):
        wobert_tokenizer.convert_ids_to_tokens(size)
    with pytest.raises(ValueError, match=r"token_ids\[1\]\[0\] = -3"):
        wobert_tokenizer.decode([[13625], [-3]])
    with pytest.raises(TypeError, match=r"token_ids\[0\] must be an integer"):
        wobert_tokenizer.decode([1.0])


def test_valid_ids_still_decode(wobert_tokenizer, wobert_vocab):
    ids = [wobert_vocab[t] for t in ("[CLS]", "我", "爱", "北京", "天安门", "hello", "world", "[SEP]")]
    assert wobert_tokenizer.decode(ids, skip_special_tokens=True) == "我爱北京天安门hello world"
    assert wobert_tokenizer.decode(torch.tensor([ids, ids])) == ["[CLS]我爱北京天安门hello world [SEP]"] * 2
    assert wobert_tokenizer.convert_ids_to_tokens(torch.tensor(ids[3])) == "北京"
    tok = WoBertTokenizer(vocab=wobert_vocab)
    tok.add_tokens(["新词汇"])
    assert tok.decode([len(wobert_vocab)]) == "新词汇"  # added tokens are ids too


def test_lone_surrogate_is_a_clear_error_naming_the_position(wobert_tokenizer, wobert_vocab):
    """BertTokenizer (fast) raises too, with "TextEncodeInput must be Union[...]"; here the message names the
    text and the position instead of a UnicodeEncodeError from inside the segmenter."""
    from transformers import BertTokenizer

    with pytest.raises(TypeError, match="TextEncodeInput"):
        BertTokenizer(vocab=wobert_vocab)("北京\ud800天")
    match = r"text holds the lone surrogate '\\ud800' at position 2"
    with pytest.raises(ValueError, match=match):
        wobert_tokenizer("北京\ud800天")
    with pytest.raises(ValueError, match=match):
        wobert_tokenizer.tokenize("北京\ud800天")
    with pytest.raises(ValueError, match=match):
        wobert_tokenizer.encode_ids("北京\ud800天")
    with pytest.raises(ValueError, match=r"text\[1\] holds the lone surrogate '\\udc80' at position 0"):
        wobert_tokenizer(["北京", "\udc80"], return_offsets_mapping=True)
    with pytest.raises(ValueError, match=r"text_pair holds the lone surrogate"):
        wobert_tokenizer("北京", "天\udfff")
    with pytest.raises(ValueError, match=r"user_dict entry 0 word holds the lone surrogate"):
        WoBertTokenizer(vocab=wobert_vocab, user_dict=[("区\ud800", 3)])


def test_user_dict_lines_with_a_tag_but_no_frequency(wobert_vocab):
    """jieba's format is ``word [freq] [tag]``: ``区块链 n`` has no frequency."""
    vocab = {**wobert_vocab, "区块链": len(wobert_vocab)}
    assert WoBertTokenizer(vocab=vocab, user_dict=["区块链 n"]).tokenize("区块链技术") == ["区块链", "技术"]
    with pytest.raises(ValueError, match=r"user_dict frequency of '区块链' \(entry 0\)"):
        WoBertTokenizer(vocab=vocab, user_dict=["区块链 1x"])
    with pytest.raises(TypeError, match=r"user_dict frequency of '区块链' \(entry 0\) must be an integer"):
        WoBertTokenizer(vocab=vocab, user_dict=[("区块链", 2.5)])


POISON = ({"我": 1, "爱": 1, "北": 1, "京": 1, "天": 1, "安": 1, "门": 1}, 7)


@pytest.mark.parametrize("planted", [True, False])
def test_jieba_segmenter_neither_reads_nor_writes_the_temp_cache(tmp_path, monkeypatch, planted):
    """jieba's own initialize() loads tempfile.gettempdir()/jieba.cache with marshal, whoever wrote it, and
    writes one there; the segmenter builds its dictionary from jieba's dict.txt and leaves the folder alone."""
    pytest.importorskip("jieba")
    from hfplug_wobert.segmentation import JiebaSegmenter

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cache = tmp_path / "jieba.cache"
    if planted:  # a cache that would cut everything into characters
        cache.write_bytes(marshal.dumps(POISON))
        os.utime(cache, (1_000_000_000, 1_000_000_000))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime) for p in tmp_path.iterdir()}
    assert JiebaSegmenter(False, ()).cut("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime) for p in tmp_path.iterdir()} == before


@pytest.fixture(scope="module")
def char_tokenizer():
    from transformers import BertTokenizer

    vocab = {**SPECIALS, "北": 5, "京": 6, "天": 7}
    return BertTokenizer(vocab=vocab)


def test_init_word_embeddings_refuses_non_finite_rows_and_changes_nothing(char_tokenizer):
    from transformers import BertForMaskedLM

    word_tokenizer = WoBertTokenizer(vocab={**SPECIALS, "北": 5, "京": 6, "天": 7, "北京": 8})
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config("bert", vocab_size=8))
    with torch.no_grad():
        model.get_input_embeddings().weight[6, 3] = float("nan")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"model's input embeddings hold NaN or inf in rows \[6\]"):
        init_word_embeddings(model, char_tokenizer, word_tokenizer)
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(TypeError, match="word_tokenizer must be a transformers tokenizer"):
        init_word_embeddings(model, char_tokenizer, {"北京": 8})


def test_init_word_embeddings_mean_of_huge_finite_rows_is_finite(char_tokenizer):
    """Rows near float32's maximum: (a + b) / 2 overflows to inf, a / 2 + b / 2 does not."""
    from transformers import BertForSequenceClassification

    word_tokenizer = WoBertTokenizer(vocab={**SPECIALS, "北": 5, "京": 6, "天": 7, "北京": 8})
    model = BertForSequenceClassification(tiny_config("bert", vocab_size=8))
    with torch.no_grad():
        model.get_input_embeddings().weight[5:7] = 3e38
    init_word_embeddings(model, char_tokenizer, word_tokenizer)
    row = model.get_input_embeddings().weight[8].detach()
    expected = (torch.full_like(row, 3e38, dtype=torch.float64) * 2 / 2).float()
    torch.testing.assert_close(row, expected)
