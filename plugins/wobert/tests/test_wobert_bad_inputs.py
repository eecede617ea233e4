"""Property tests: random bad arguments for every public constructor and function, random text (surrogates,
control characters, combining marks, very long words) and random ids. Each call gives a clean error naming
the argument, or a correct result (checked against the test's own reference); never a crash from inside the
segmenter or the Rust backend, nor NaN out of finite embeddings."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _wobert_reference import make_reference
from hfplug_wobert import WoBertTokenizer, build_wobert_vocab, init_word_embeddings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfplug.testing import assert_names_argument, junk_values, tiny_config


def cases(max_examples: int) -> settings:
    """Hypothesis settings: ``max_examples`` cases, no deadline (tokenizer construction varies with load)."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


CONSTRUCTOR_ARGUMENTS = (
    "vocab",
    "do_lower_case",
    "strip_accents",
    "normalize_before_segmentation",
    "segmenter",
    "hmm",
    "user_dict",
    "max_input_chars_per_word",
)


@pytest.fixture(scope="module")
def small_vocab(wobert_vocab):
    """The first 14,000 entries: every base token and a few hundred words; cheap to build tokenizers from."""
    return dict(list(wobert_vocab.items())[:14000])


@cases(80)
@given(name=st.sampled_from(CONSTRUCTOR_ARGUMENTS), value=junk_values())
def test_constructor_names_a_bad_argument(small_vocab, name, value):
    try:
        tok = WoBertTokenizer(**{"vocab": small_vocab, name: value})
    except Exception as error:  # the property: a failure is a clean, named one
        assert_names_argument(error, name)
        return
    ids = tok("今天天气很好 Café")["input_ids"]  # a working tokenizer: ids of its own vocabulary
    assert all(0 <= i < len(tok) for i in ids) and ids[0] == tok.cls_token_id


ENCODE_ARGUMENTS = ("add_special_tokens", "max_length")


@cases(60)
@given(name=st.sampled_from(ENCODE_ARGUMENTS), value=junk_values())
def test_encode_ids_names_a_bad_argument(wobert_tokenizer, name, value):
    text = "我爱北京天安门，今天天气很好"
    try:
        ids = wobert_tokenizer.encode_ids(text, **{name: value})
    except Exception as error:
        assert_names_argument(error, name)
        return
    documented = {"truncation": True, "max_length": value} if name == "max_length" else {name: value}
    assert ids == wobert_tokenizer(text, **documented)["input_ids"]  # the equivalence encode_ids promises


VOCAB_ARGUMENTS = ("num_words", "words", "do_lower_case", "strip_accents", "hmm", "user_dict")
BASE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北", "京", "天", "安", "门", "a", "##b"]
WORDS = {"北京": 30, "天安门": 20, "不在": 10, "T恤": 5, "": 4, "\x07": 3}


@cases(60)
@given(name=st.sampled_from(VOCAB_ARGUMENTS), value=junk_values())
def test_build_wobert_vocab_names_a_bad_argument(name, value):
    kwargs = {"num_words": 3, "words": WORDS, name: value}
    try:
        vocab = build_wobert_vocab(BASE, **kwargs)
    except Exception as error:
        assert_names_argument(error, name)
        return
    reference = make_reference(vocab)
    added = list(vocab)[len(BASE) :]
    assert len(added) <= kwargs["num_words"]
    if kwargs.get("do_lower_case", True) and kwargs["words"] is WORDS:  # the reference lower-cases
        assert all(reference(word) == [word] for word in added)


@cases(40)
@given(frequency=junk_values())
def test_build_wobert_vocab_names_a_bad_frequency(frequency):
    try:
        vocab = build_wobert_vocab(BASE, words={"北京": frequency, "天安门": 1})
    except Exception as error:
        assert_names_argument(error, "words['北京']")
        return
    assert list(vocab)[len(BASE) :] == (["北京", "天安门"] if frequency >= 1 else ["天安门", "北京"])


SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
AWKWARD = st.sampled_from(
    [
        "\x00",
        "\x07",
        "\t",
        "\u200b",
        "\u2028",
        "\ufffd",
        "\u0301",
        "\u0308",
        "\ue000",
        "ς",
        "Σ",
        "İ",
        "ǅ",
        "😀",
    ]
)
PIECES = st.one_of(
    st.text(st.sampled_from("北京天安门今天气很好的人民日报"), max_size=8),
    # characters unassigned in Python's Unicode database (the reference's) are left out: the regex module's newer
    # database knows some of them (U+1CC00 is a symbol there, the reference drops it as "Cn")
    st.text(st.characters(codec="utf-8", exclude_categories=["Cn"]), max_size=6),
    AWKWARD,
    st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "é", "北", "Ab"]), st.integers(90, 260)),
    SURROGATES,
)
TEXTS = st.lists(PIECES, max_size=6).map("".join)


def _surrogate_at(text: str) -> int | None:
    return next((i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF), None)


@pytest.fixture(scope="module")
def reference(wobert_vocab):
    return make_reference(wobert_vocab)


@cases(150)
@given(text=TEXTS)
def test_random_text_gives_reference_ids_or_names_the_surrogate(
    wobert_tokenizer, wobert_vocab, reference, text
):
    position = _surrogate_at(text)
    if position is not None:
        for call in (wobert_tokenizer, wobert_tokenizer.encode_ids):
            with pytest.raises(ValueError, match=f"text holds the lone surrogate .* at position {position}"):
                call(text)
        return
    enc = wobert_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # the Rust path
    assert enc["input_ids"] == [wobert_vocab[t] for t in reference(text)]
    plain = wobert_tokenizer(text, add_special_tokens=False)  # the Python layout
    assert plain["input_ids"] == enc["input_ids"]
    assert wobert_tokenizer.encode_ids(text, add_special_tokens=False) == enc["input_ids"]
    assert all(0 <= start < end <= len(text) for start, end in enc["offset_mapping"])


SCALAR_JUNK = junk_values().filter(lambda value: not isinstance(value, (list, tuple)))
IDS = st.lists(st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 40000), SCALAR_JUNK), max_size=8)


@pytest.fixture(scope="module")
def inverse(wobert_vocab):
    return {index: token for token, index in wobert_vocab.items()}


@cases(150)
@given(ids=IDS)
def test_random_ids_decode_or_name_the_id(wobert_tokenizer, inverse, ids):
    valid = all(isinstance(i, int) and not isinstance(i, bool) and i in inverse for i in ids)
    for call, name in (
        (wobert_tokenizer.decode, "token_ids"),
        (wobert_tokenizer.convert_ids_to_tokens, "ids"),
    ):
        try:
            result = call(ids)
        except Exception as error:
            assert not valid, error
            assert_names_argument(error, f"{name}[")
            continue
        assert valid
        if name == "ids":
            assert result == [inverse[i] for i in ids]
        else:
            assert isinstance(result, str)


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import BertTokenizer

    specials = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "北": 5, "京": 6, "天": 7}
    return BertTokenizer(vocab=specials), WoBertTokenizer(vocab={**specials, "北京": 8})


@pytest.fixture(scope="module")
def char_model():
    """A one-layer char model of 8 tokens; tests take deep copies (init_word_embeddings resizes in place)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config("bert", vocab_size=8, num_hidden_layers=1))


FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)


@cases(20)
@given(values=st.lists(FLOATS, min_size=2, max_size=2), column=st.integers(0, 63))
def test_init_word_embeddings_never_puts_nan_into_finite_weights(tokenizers, char_model, values, column):
    """Two entries of the char rows of 北 and 京 set to random floats (NaN, inf, huge): a clean error that
    leaves the model as it was, or the new row of 北京 = their mean (a float64 reference), finite."""
    char_tokenizer, word_tokenizer = tokenizers
    model = copy.deepcopy(char_model)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight[5, column], weight[6, column] = values
    before = weight.detach().clone()
    try:
        init_word_embeddings(model, char_tokenizer, word_tokenizer)
    except ValueError as error:
        assert not all(map(math.isfinite, values)), error
        assert "input embeddings hold NaN or inf" in str(error)
        torch.testing.assert_close(
            model.get_input_embeddings().weight, before, rtol=0, atol=0, equal_nan=True
        )
        return
    new = model.get_input_embeddings().weight[8].detach()
    expected = ((before[5].double() + before[6].double()) / 2).float()
    assert torch.isfinite(new).all()
    torch.testing.assert_close(new, expected)


@cases(30)
@given(name=st.sampled_from(["model", "char_tokenizer", "word_tokenizer"]), value=junk_values())
def test_init_word_embeddings_names_a_bad_argument(tokenizers, char_model, name, value):
    char_tokenizer, word_tokenizer = tokenizers
    arguments = {
        "model": copy.deepcopy(char_model),
        "char_tokenizer": char_tokenizer,
        "word_tokenizer": word_tokenizer,
        name: value,
    }
    with pytest.raises((TypeError, ValueError)) as caught:
        init_word_embeddings(**arguments)
    assert_names_argument(caught.value, name)
