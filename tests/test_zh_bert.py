"""The shipped zh-bert checkpoints: found by hfplug.data, load as a user loads them, learned something.

"Learned" is checked against an independent reference: a unigram model fitted on the training lines. Its
cross-entropy on held-out masked positions is what a model that ignores context reaches; the base must beat it
by more than 1 nat per target (about 2,000 targets, so many standard errors) on held-out People's Daily lines,
with the loss computed by BertForMaskedLM's own forward. A random-init model of the same shape scores about 10
nats and fails, and so did the project's first base, which sat on the masked-LM plateau (0.38 / 0.43 nats
below unigram, char / word).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from hfplug.data import load_peoples_daily, zh_bert_dir


def test_unknown_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"vocabulary must be one of \('char', 'word'\), got 'bpe'"):
        zh_bert_dir("bpe")


@pytest.mark.parametrize("vocabulary", ["char", "word"])
def test_checkpoint_matches_its_record(vocabulary):
    folder = zh_bert_dir(vocabulary)
    record = json.loads((folder / "pretraining.json").read_text("utf-8"))
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == record["sha256"]["model.safetensors"]
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    lines = load_peoples_daily()
    train = lines[: len(lines) - len(lines) // 10]
    assert hashlib.sha256("\n".join(train).encode("utf-8")).hexdigest() == record["data"]["train_sha256"]


@pytest.mark.parametrize("vocabulary", ["char", "word"])
def test_beats_a_unigram_model_on_held_out_text(vocabulary):
    folder = zh_bert_dir(vocabulary)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer).__name__ == ("BertTokenizer" if vocabulary == "char" else "WoBertTokenizer")
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 4
    lines = load_peoples_daily()
    cut = len(lines) - len(lines) // 10
    counts = collections.Counter(
        token for ids in tokenizer(lines[:cut], add_special_tokens=False)["input_ids"] for token in ids
    )
    total = sum(counts.values())
    batch = tokenizer(
        lines[cut : cut + 192], truncation=True, max_length=128, padding=True, return_tensors="pt"
    )
    generator = torch.Generator().manual_seed(0)
    real = batch["attention_mask"].bool() & (batch["input_ids"] != tokenizer.cls_token_id)
    real &= batch["input_ids"] != tokenizer.sep_token_id
    target = real & (torch.rand(batch["input_ids"].shape, generator=generator) < 0.15)
    labels = torch.where(target, batch["input_ids"], -100)
    inputs = torch.where(target, tokenizer.mask_token_id, batch["input_ids"])
    with torch.no_grad():
        loss = model(input_ids=inputs, attention_mask=batch["attention_mask"], labels=labels).loss.item()
    unigram = -sum(math.log(counts.get(t, 0.5) / total) for t in labels[target].tolist()) / int(target.sum())
    assert math.isfinite(loss)
    assert loss < unigram - 1.0, (loss, unigram)
