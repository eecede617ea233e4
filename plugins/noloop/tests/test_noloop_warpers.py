"""Consistent top-k / top-p / min-p against transformers' own warpers (the independent reference)."""

import pytest
import torch
from hfplug_noloop import ConsistentMinPLogitsWarper, ConsistentTopKLogitsWarper, ConsistentTopPLogitsWarper
from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

CASES = [
    (ConsistentTopKLogitsWarper, TopKLogitsWarper, "top_k", [1, 2, 5, 40]),
    (ConsistentTopPLogitsWarper, TopPLogitsWarper, "top_p", [0.05, 0.4, 0.9, 1.0]),
    (ConsistentMinPLogitsWarper, MinPLogitsWarper, "min_p", [0.0, 0.05, 0.3, 0.9]),
]


def _scores(seed: int, eos: list[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(6, 50, generator=generator) * 3
    scores[:3, eos] = -8.0  # eos far down the list: the reference warpers drop it
    scores[3, 7] = float("-inf")  # an already banned token stays banned
    return scores


@pytest.mark.parametrize(("ours", "reference", "arg", "values"), CASES)
@pytest.mark.parametrize("eos", [[3], [3, 11]])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 3])
def test_matches_transformers_except_eos(ours, reference, arg, values, eos, min_tokens_to_keep):
    input_ids = torch.zeros(6, 4, dtype=torch.long)
    dropped_eos = 0
    for seed, value in enumerate(values):
        scores = _scores(seed, eos)
        expected = reference(value, min_tokens_to_keep=min_tokens_to_keep)(input_ids, scores.clone())
        got = ours(value, eos_token_id=eos, min_tokens_to_keep=min_tokens_to_keep)(input_ids, scores.clone())
        others = torch.ones(50, dtype=torch.bool)
        others[eos] = False
        torch.testing.assert_close(got[:, others], expected[:, others], rtol=0, atol=0)
        torch.testing.assert_close(got[:, eos], scores[:, eos], rtol=0, atol=0)  # eos keeps its own logit
        dropped_eos += int(torch.isinf(expected[:, eos]).sum())
    assert dropped_eos > 0  # the case where the reference drops eos was exercised


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ConsistentTopKLogitsWarper, {"top_k": 0, "eos_token_id": 2}, "top_k"),
        (ConsistentTopPLogitsWarper, {"top_p": 1.5, "eos_token_id": 2}, "top_p"),
        (ConsistentMinPLogitsWarper, {"min_p": -0.1, "eos_token_id": 2}, "min_p"),
        (ConsistentTopKLogitsWarper, {"top_k": 5, "eos_token_id": None}, "eos_token_id"),
        (ConsistentTopKLogitsWarper, {"top_k": 5, "eos_token_id": []}, "eos_token_id"),
        (
            ConsistentTopPLogitsWarper,
            {"top_p": 0.5, "eos_token_id": 2, "min_tokens_to_keep": 0},
            "min_tokens",
        ),
    ],
)
def test_bad_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_sampling_with_consistent_top_k_keeps_eos_reachable():
    from hfplug.testing import tiny_model

    model = tiny_model("gpt2", "causal-lm").eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
        model.lm_head.weight[2].zero_()
    prompt = torch.randint(3, 1000, (4, 6), generator=torch.Generator().manual_seed(0))
    seen = []

    def spy(input_ids, scores):
        seen.append(torch.isfinite(scores[:, 2]).all().item())
        return scores

    torch.manual_seed(0)
    model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=True,
        max_new_tokens=5,
        pad_token_id=0,
        logits_processor=[ConsistentTopKLogitsWarper(2, eos_token_id=2), spy],
    )
    assert seen and all(seen)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 6.0])  # nucleus of thousands, hundreds, a few tokens
def test_top_p_large_vocabulary(scale):
    """The nucleus search in the top 64 / 1024 tokens agrees with transformers' full sort."""
    scores = torch.randn(6, 5000, generator=torch.Generator().manual_seed(3)) * scale
    input_ids = torch.zeros(6, 2, dtype=torch.long)
    for top_p in (0.1, 0.4, 0.9):
        expected = TopPLogitsWarper(top_p)(input_ids, scores.clone())
        got = ConsistentTopPLogitsWarper(top_p, eos_token_id=[1])(input_ids, scores.clone())
        others = torch.arange(5000) != 1
        torch.testing.assert_close(got[:, others], expected[:, others], rtol=0, atol=0)
        assert got[:, 1].isfinite().all()
