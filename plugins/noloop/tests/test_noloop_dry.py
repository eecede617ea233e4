"""DRY: the vectorised processor against a plain per-row implementation of the published algorithm
(text-generation-webui PR #5677, with llama.cpp's exponent clamp)."""

import pytest
import torch
from hfplug_noloop import DRYLogitsProcessor


def reference_dry(row, scores, multiplier, base, allowed_length, window, breakers, protected, max_exponent):
    """One row, straight from the published loop: match backwards from every earlier copy of the last token."""
    row = row[-window:].tolist()
    scores = scores.clone()
    last = row[-1]
    if last in breakers:
        return scores
    longest = {}
    for i in range(len(row) - 1):
        if row[i] != last:
            continue
        following = row[i + 1]
        if following in breakers:
            continue
        length = 1
        while True:
            j = i - length
            if j < 0:
                break
            previous = row[-(length + 1)]
            if row[j] != previous or previous in breakers:
                break
            length += 1
        longest[following] = max(length, longest.get(following, 0))
    for token, length in longest.items():
        if length >= allowed_length and token not in protected:
            scores[token] -= multiplier * base ** min(length - allowed_length, max_exponent)
    return scores


@pytest.mark.parametrize("seed", range(6))
def test_matches_per_row_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    vocab = [4, 6, 12][seed % 3]  # small vocabularies: many long matches
    width = [10, 40, 200][seed % 3]
    input_ids = torch.randint(0, vocab, (7, width), generator=generator)
    input_ids[0, width // 2 :] = input_ids[0, : width - width // 2]  # a long verbatim repeat
    input_ids[1] = 7  # one token repeated: the longest possible matches
    scores = torch.randn(7, 16, generator=generator)
    settings = dict(
        multiplier=[0.8, 1.3][seed % 2],
        base=[1.75, 1.1, 2.0][seed % 3],
        allowed_length=[1, 2, 3][seed % 3],
        window=[8, 64, 1000][seed % 3],
        breakers=[(), (1,), (0, 5)][seed % 3],
        protected=[(), (2,), (3, 4)][seed % 3],
        max_exponent=[3, 7, 40][seed % 3],
    )
    processor = DRYLogitsProcessor(
        settings["multiplier"],
        settings["base"],
        settings["allowed_length"],
        settings["window"],
        sequence_breaker_ids=settings["breakers"],
        protected_token_ids=settings["protected"],
        max_exponent=settings["max_exponent"],
    )
    got = processor(input_ids, scores.clone())
    expected = torch.stack([reference_dry(r, s, **settings) for r, s in zip(input_ids, scores, strict=True)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got != scores).any()  # penalties were applied somewhere


def test_default_clamp():
    processor = DRYLogitsProcessor()
    assert processor.max_exponent == 17  # 1.75 ** 17 > 1e4 > 1.75 ** 16
    input_ids = torch.full((2, 1024), 7)
    out = processor(input_ids, torch.zeros(2, 10))
    assert out[0, 7] == pytest.approx(-0.8 * 1.75**17, rel=1e-6)
    assert torch.isfinite(out).all()


def test_known_value():
    # "5 6 7 8 5 6 7": the suffix 5 6 7 was followed by 8, match length 3 -> 0.8 * 1.75 ** (3 - 2)
    out = DRYLogitsProcessor()(torch.tensor([[5, 6, 7, 8, 5, 6, 7]]), torch.zeros(1, 10))
    expected = torch.zeros(1, 10)
    expected[0, 8] = -1.4
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"multiplier": 0}, ValueError, "multiplier"),
        ({"base": 0.5}, ValueError, "base"),
        ({"allowed_length": 0}, ValueError, "allowed_length"),
        ({"window": 1}, ValueError, "window"),
        ({"sequence_breaker_ids": ["\n"]}, TypeError, "sequence_breaker_ids"),  # a wrong type
        ({"max_exponent": -1}, ValueError, "max_exponent"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        DRYLogitsProcessor(**kwargs)


def test_long_matches_over_several_blocks():
    """Matches longer than the first block of offsets (32): lengths grow block by block (32, 64, ...)."""
    generator = torch.Generator().manual_seed(7)
    block = torch.randint(4, 50, (4, 9), generator=generator)  # no breaker, nothing protected
    input_ids = block.repeat(1, 40)[:, :300]  # 9-token loops: every earlier copy matches far back
    input_ids[1, 150] = 1  # a breaker cuts the matches of row 1
    input_ids[2, -120] = 60  # a mismatch 120 tokens back ends the matches of row 2 in the third block
    scores = torch.randn(4, 64, generator=generator)
    settings = dict(multiplier=0.5, base=1.01, allowed_length=2, window=280, breakers=(1,), protected=(3,))
    processor = DRYLogitsProcessor(
        0.5, 1.01, 2, 280, sequence_breaker_ids=(1,), protected_token_ids=(3,), max_exponent=150
    )
    got = processor(input_ids, scores.clone())
    expected = torch.stack(
        [reference_dry(r, s, max_exponent=150, **settings) for r, s in zip(input_ids, scores, strict=True)]
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got != scores).any()


def test_rows_without_a_repeat_keep_their_scores_exactly():
    """Large vocabulary, few repeats: only the rows with a repeated (allowed_length)-gram change."""
    generator = torch.Generator().manual_seed(11)
    input_ids = torch.randperm(5000, generator=generator)[:600].reshape(4, 150)  # no token repeats
    input_ids[1, 40:42] = input_ids[1, -2:]  # a repeated bigram: penalises input_ids[1, 42]
    input_ids[2, 70] = input_ids[2, -1]  # a repeat of the last token alone: below allowed_length 2
    scores = torch.randn(4, 5000, generator=generator)
    processor = DRYLogitsProcessor(protected_token_ids=[3])
    got = processor(input_ids, scores.clone())
    settings = dict(
        multiplier=0.8, base=1.75, allowed_length=2, window=1024, breakers=(), protected=(3,), max_exponent=17
    )
    expected = torch.stack([reference_dry(r, s, **settings) for r, s in zip(input_ids, scores, strict=True)])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    changed = (got != scores).any(dim=1).tolist()
    assert changed == [False, True, False, False]
    assert processor(input_ids[[0, 2, 3]], scores[[0, 2, 3]]).equal(scores[[0, 2, 3]])
