from __future__ import annotations

import pytest
import torch
from hfplug_wobert import WoBertTokenizer, build_wobert_vocab, init_word_embeddings

from hfplug.data import bert_chinese_vocab_dir
from hfplug.testing import tiny_config


def test_build_vocab_from_mapping_and_corpus():
    base = bert_chinese_vocab_dir()
    simplified = build_wobert_vocab(base, num_words=0)
    assert list(simplified)[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "[unused1]" not in simplified and "##中" not in simplified and "中" in simplified
    words = {"天安门": 5, "中": 100, "北京欢迎你": 9, "人民": 1}
    # by frequency, skipping present "中" and "北京欢迎你", which jieba cuts into 北京 / 欢迎 / 你
    vocab = build_wobert_vocab(base, num_words=2, words=words)
    assert list(vocab)[len(simplified) :] == ["天安门", "人民"]
    vocab = build_wobert_vocab(base, num_words=2, words=words, user_dict=["北京欢迎你"])
    assert list(vocab)[len(simplified) :] == ["北京欢迎你", "天安门"]
    corpus = ["人民日报，人民日报", "人民，天安门"]  # counts 2, 1, 1: ties keep first occurrence
    counted = build_wobert_vocab(base, num_words=2, words=corpus)
    assert list(counted)[len(simplified) :] == ["人民日报", "人民"]
    with pytest.raises(ValueError, match="num_words must be an integer >= 0, got -1"):
        build_wobert_vocab(base, num_words=-1)
    with pytest.raises(TypeError, match=r"num_words must be an integer >= 0, got 2\.0"):
        build_wobert_vocab(base, num_words=2.0)
    with pytest.raises(ValueError, match=r"words\['天安门'\] must be a finite number >= 0, got nan"):
        build_wobert_vocab(base, words={"天安门": float("nan")})
    with pytest.raises(ValueError, match="special tokens"):
        build_wobert_vocab(["a", "b"])
    with pytest.raises(ValueError, match="does not exist"):
        build_wobert_vocab("/nonexistent/vocab.txt")


@pytest.fixture(scope="module")
def char_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(bert_chinese_vocab_dir()))


@pytest.fixture(scope="module")
def small_vocab():
    """Simplified base + 3,000 jieba words: the same recipe, cheaper to check."""
    return build_wobert_vocab(bert_chinese_vocab_dir(), num_words=3000)


@pytest.mark.parametrize("tied", [True, False])
def test_new_words_are_char_means_and_kept_rows_unchanged(char_tokenizer, small_vocab, tied):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    config = tiny_config("bert", vocab_size=len(char_tokenizer), tie_word_embeddings=tied)
    model = BertForMaskedLM(config)
    with torch.no_grad():
        model.get_output_embeddings().bias.normal_()
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_bias = model.get_output_embeddings().bias.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    word_tokenizer = WoBertTokenizer(vocab=small_vocab)

    counts = init_word_embeddings(model, char_tokenizer, word_tokenizer)

    char_vocab = char_tokenizer.get_vocab()
    new_in = model.get_input_embeddings().weight.detach()
    new_out = model.get_output_embeddings()
    assert new_in.shape[0] == len(word_tokenizer) == model.config.vocab_size
    assert new_out.bias.shape[0] == len(word_tokenizer)
    assert (new_out.weight is model.get_input_embeddings().weight) == tied
    kept = [t for t in small_vocab if t in char_vocab]
    words = [t for t in small_vocab if t not in char_vocab and all(c in char_vocab for c in t) and len(t) > 1]
    assert counts["copied"] == len(kept) and counts["averaged"] >= len(words) > 2500
    new_ids = torch.tensor([small_vocab[t] for t in kept])
    old_ids = torch.tensor([char_vocab[t] for t in kept])
    assert torch.equal(new_in[new_ids], old_in[old_ids])
    assert torch.equal(new_out.bias[new_ids], old_bias[old_ids])
    for token in words[::5]:
        rows = [char_vocab[c] for c in token]
        i = small_vocab[token]
        torch.testing.assert_close(new_in[i], sum(old_in[r] for r in rows) / len(rows))
        torch.testing.assert_close(new_out.bias[i], sum(old_bias[r] for r in rows) / len(rows))
        if not tied:
            torch.testing.assert_close(new_out.weight[i], sum(old_out[r] for r in rows) / len(rows))
    ids = word_tokenizer(["我爱北京天安门"], return_tensors="pt")
    assert model(**ids).logits.shape == (1, ids["input_ids"].shape[1], len(word_tokenizer))


def test_classifier_without_output_embeddings(char_tokenizer, small_vocab):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_config("bert", vocab_size=len(char_tokenizer)))
    counts = init_word_embeddings(model, char_tokenizer, WoBertTokenizer(vocab=small_vocab))
    assert model.get_input_embeddings().weight.shape[0] == len(small_vocab)
    # only tokens the char tokenizer maps to nothing (the vocabulary's U+2028 line) keep their fresh rows
    char_vocab = char_tokenizer.get_vocab()
    untouched = [t for t in small_vocab if t not in char_vocab and not char_tokenizer.tokenize(t)]
    assert counts["untouched"] == len(untouched) == 1
    with pytest.raises(ValueError, match="char_tokenizer must be"):
        init_word_embeddings(
            BertForSequenceClassification(tiny_config("bert")), char_tokenizer, char_tokenizer
        )
    with pytest.raises(TypeError, match="PreTrainedModel"):
        init_word_embeddings(torch.nn.Linear(2, 2), char_tokenizer, char_tokenizer)
