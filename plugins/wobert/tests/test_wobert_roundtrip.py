from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
from hfplug_wobert import WoBertTokenizer

TEXTS = ["我爱北京天安门，今天天气很好。", "Hello World! 人民日报１９９８年元旦献词", "区块链技术", ""]


def _ids(tok, texts=TEXTS):
    return tok(texts, text_pair=list(reversed(texts)))["input_ids"]


def test_from_pretrained_on_a_vocab_txt_folder_keeps_words(wobert_vocab, tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(wobert_vocab) + "\n", encoding="utf-8")
    tok = WoBertTokenizer.from_pretrained(tmp_path)
    assert tok.tokenize("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert _ids(tok) == _ids(WoBertTokenizer(vocab=wobert_vocab))
    assert _ids(WoBertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))) == _ids(tok)


def test_save_and_reload_keeps_ids_and_segmenter_settings(wobert_vocab, tmp_path):
    tok = WoBertTokenizer(
        vocab={**wobert_vocab, "区块链": len(wobert_vocab)}, user_dict=["区块链"], segmenter="jieba"
    )
    tok.add_tokens(["新词汇"])
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text("utf-8"))
    assert config["tokenizer_class"] == "WoBertTokenizer"
    assert config["segmenter"] == "jieba" and config["user_dict"] == [["区块链", None]]
    assert config["normalize_before_segmentation"] is True and config["hmm"] is False
    again = WoBertTokenizer.from_pretrained(tmp_path)
    assert again.segmenter == "jieba" and again.tokenize("区块链新词汇") == ["区块链", "新词汇"]
    assert _ids(again) == _ids(tok)


def test_tokenizer_json_loads_without_custom_code_as_char_level_bert(wobert_vocab, tmp_path):
    """The placeholder pipeline in tokenizer.json is BERT's: characters, never words."""
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    WoBertTokenizer(vocab=wobert_vocab).save_pretrained(tmp_path)
    plain = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    bert = BertTokenizer(vocab=wobert_vocab)
    texts = [t for t in TEXTS if t]
    assert plain(texts)["input_ids"] == bert(texts)["input_ids"]


def test_pickle_round_trip(wobert_tokenizer):
    again = pickle.loads(pickle.dumps(wobert_tokenizer))
    assert _ids(again) == _ids(wobert_tokenizer)


def test_datasets_map_with_two_processes(wobert_tokenizer, real_sentences):
    datasets = pytest.importorskip("datasets")
    texts = real_sentences[:400]
    ds = datasets.Dataset.from_dict({"text": texts})
    mapped = ds.map(lambda batch: wobert_tokenizer(batch["text"]), batched=True, num_proc=2)
    assert mapped["input_ids"] == wobert_tokenizer(texts)["input_ids"]


def test_using_the_tokenizer_keeps_its_datasets_fingerprint(wobert_vocab):
    """Dataset.map reuses its cache files only if the function's hash is stable; the lazily filled caches
    live under ``cache``, which datasets' hasher empties."""
    fingerprint = pytest.importorskip("datasets.fingerprint")
    from hfplug_wobert import WoBertTokenizer

    tok = WoBertTokenizer(vocab=wobert_vocab)
    before = fingerprint.Hasher.hash(tok)
    tok(["我爱北京天安门", "今天天气很好"], return_offsets_mapping=True)
    tok.encode_ids(["完全不同的新词语"])
    assert fingerprint.Hasher.hash(tok) == before


AUTO_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
out = {}
tok = AutoTokenizer.from_pretrained(folder)
out["plain"] = [type(tok).__name__, tok(texts)["input_ids"]]
import hfplug_wobert._hooks  # importing the plugin's hooks module registers nothing
out["hooks_import"] = type(AutoTokenizer.from_pretrained(folder)).__name__
import hfplug
hfplug.load_plugins()  # loading plugins neither imports the tokenizer class nor registers it
out["loaded"] = [
    "hfplug_wobert.tokenization_wobert" in sys.modules, type(AutoTokenizer.from_pretrained(folder)).__name__
]
out["class"] = hfplug.get_tokenizer_class("wobert").__name__
tok = AutoTokenizer.from_pretrained(folder)
out["after"] = [type(tok).__name__, tok(texts)["input_ids"]]
print(json.dumps(out))
"""


def test_auto_tokenizer_resolves_after_registry_lookup(wobert_tokenizer, tmp_path):
    """Fresh process: the folder loads as a placeholder until hfplug.get_tokenizer_class("wobert") ran."""
    wobert_tokenizer.save_pretrained(tmp_path)
    env = {**os.environ, "HFPLUG_PLUGINS": "wobert", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(
        [sys.executable, "-c", AUTO_SCRIPT, str(tmp_path), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    expected = wobert_tokenizer(TEXTS)["input_ids"]
    # Before registration: the saved folder still loads (placeholder, character level), with other ids.
    assert out["plain"][0] == "TokenizersBackend" and out["plain"][1] != expected
    assert out["hooks_import"] == "TokenizersBackend"
    assert out["loaded"] == [False, "TokenizersBackend"]
    assert out["class"] == "WoBertTokenizer"
    assert out["after"] == ["WoBertTokenizer", expected]


def test_auto_tokenizer_after_importing_the_class(wobert_tokenizer, tmp_path):
    """This process imported WoBertTokenizer, which registered it: AutoTokenizer gives identical ids, also
    from a model folder whose config.json says model_type "bert"."""
    from transformers import AutoTokenizer, BertConfig

    wobert_tokenizer.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tok) is WoBertTokenizer
    assert _ids(tok) == _ids(wobert_tokenizer)
    BertConfig(vocab_size=len(wobert_tokenizer)).save_pretrained(tmp_path)
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is WoBertTokenizer


def test_registry_returns_the_class(monkeypatch):
    import hfplug
    import hfplug.plugins

    monkeypatch.setenv("HFPLUG_PLUGINS", "wobert")
    hfplug.plugins.reset()
    try:
        assert hfplug.get_tokenizer_class("wobert") is WoBertTokenizer
    finally:
        hfplug.plugins.reset()
