"""Self-terminating floor: the eos probability equals max(p_eos, 1 - (1 - eps)^(t - start)) every step,
and random tiny models that loop without it end within the bound with it."""

import math

import pytest
import torch
from hfplug_noloop import SelfTerminatingLogitsProcessor
from hypothesis import given, settings
from hypothesis import strategies as st

from hfplug.testing import tiny_model

EOS = 2


class Spy:
    """Records the distribution a processor receives (runs before or after the floor)."""

    def __init__(self):
        self.probs = []

    def __call__(self, input_ids, scores):
        self.probs.append(torch.softmax(scores.double(), dim=-1))
        return scores


def test_eos_probability_follows_the_formula(prompt):
    eps, start = 0.02, 3
    model = tiny_model("llama", "causal-lm").eval()
    ids, mask = prompt
    before, after = Spy(), Spy()
    torch.manual_seed(0)
    floor = SelfTerminatingLogitsProcessor(eps, [EOS, 7], start=start)
    model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=12,
        do_sample=True,
        pad_token_id=0,
        logits_processor=[before, floor, after],
    )
    assert len(after.probs) > start + 2
    for step, (p, q) in enumerate(zip(before.probs, after.probs, strict=True)):
        t = step + 1  # 1-based index of the generated token
        bound = 1 - (1 - eps) ** (t - start) if t > start else 0.0
        p_eos, q_eos = p[:, [EOS, 7]].sum(-1), q[:, [EOS, 7]].sum(-1)
        expected = torch.clamp(p_eos, min=bound)
        torch.testing.assert_close(q_eos, expected, rtol=1e-5, atol=1e-6)
        # non-eos tokens keep their relative odds
        others = torch.ones(p.shape[1], dtype=torch.bool)
        others[[EOS, 7]] = False
        ratio = q[:, others] / p[:, others]
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=0)
        torch.testing.assert_close(
            q[:, [EOS, 7]] / p[:, [EOS, 7]], (expected / p_eos)[:, None].expand(-1, 2), rtol=1e-5, atol=0
        )


def test_banned_eos_stays_banned():
    floor = SelfTerminatingLogitsProcessor(0.3, [2, 5], start=0)
    scores = torch.randn(2, 10)
    scores[0, [2, 5]] = float("-inf")  # e.g. min_new_tokens not reached yet
    scores[1, 2] = float("-inf")  # one eos id still open
    out = floor(torch.zeros(2, 4, dtype=torch.long), scores)
    torch.testing.assert_close(out[0], scores[0])
    assert floor.raised[0].tolist() == [False, True]
    assert out.softmax(-1)[1, 5] == pytest.approx(0.3, abs=1e-6) and out[1, 2] == float("-inf")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize(
    "mode", [{"do_sample": False}, {"num_beams": 3, "do_sample": False}, {"do_sample": True}], ids=str
)
def test_termination_guarantee(family, mode, looping_model, prompt):
    eps, start, cap = 0.1, 2, 24
    model = looping_model(family)
    ids, mask = prompt
    kwargs = dict(attention_mask=mask, max_new_tokens=cap, pad_token_id=0, **mode)
    torch.manual_seed(0)
    plain = model.generate(ids, **kwargs)[:, ids.shape[1] :]
    assert plain.shape[1] == cap and not (plain == EOS).any()  # without the floor: never ends
    floor = SelfTerminatingLogitsProcessor(eps, EOS, start=start)
    torch.manual_seed(0)
    out = model.generate(ids, logits_processor=[floor], **kwargs)[:, ids.shape[1] :]
    assert out.shape[1] < cap
    first_eos = [int((row == EOS).nonzero()[0]) + 1 for row in out]  # every row ends with eos
    bound = start + math.ceil(math.log(0.5) / math.log(1 - eps))
    assert floor.greedy_bound() == bound
    if not mode.get("do_sample") and mode.get("num_beams", 1) == 1:
        assert max(first_eos) <= bound


def test_encoder_decoder_counts_from_decoder_start(prompt):
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=1000,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=0,
        decoder_start_token_id=1,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config).eval()
    ids = prompt[0][1:]
    mask = prompt[1][1:]
    floor = SelfTerminatingLogitsProcessor(0.1, EOS, start=2)
    after = Spy()
    model.generate(ids, attention_mask=mask, max_new_tokens=6, logits_processor=[floor, after], num_beams=1)
    assert floor.prompt_length == 1  # the decoder_start token
    q_eos = torch.stack([p[:, EOS] for p in after.probs])
    assert len(q_eos) >= 3
    assert (q_eos[:2] < 0.1).all()  # t <= start: floor off, the random model gives eos ~1/1000
    assert (q_eos[2] >= 0.1 - 1e-6).all()  # t = start + 1: floor = epsilon


@pytest.mark.parametrize("epsilon", [0.0, 1.0, -0.1, 2, float("nan")])
def test_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        SelfTerminatingLogitsProcessor(epsilon, EOS)


@pytest.mark.parametrize("epsilon", ["0.1", True, None])
def test_epsilon_of_a_wrong_type(epsilon):
    with pytest.raises(TypeError, match="epsilon"):
        SelfTerminatingLogitsProcessor(epsilon, EOS)


def test_no_eos_and_bad_start():
    with pytest.raises(ValueError, match="eos_token_id"):
        SelfTerminatingLogitsProcessor(0.1, None)
    with pytest.raises(ValueError, match="start"):
        SelfTerminatingLogitsProcessor(0.1, EOS, start=-1)


def test_nan_scores_are_reported():
    floor = SelfTerminatingLogitsProcessor(0.1, EOS)
    scores = torch.zeros(2, 10)
    scores[1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        floor(torch.zeros(2, 3, dtype=torch.long), scores)


@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_raise_decision_matches_a_double_precision_reference(scale):
    """Rows below the floor are raised to it exactly, the others are returned bit for bit; the decision
    equals p_eos < floor computed in float64, also when every row is far above (the cheap bound)."""
    generator = torch.Generator().manual_seed(int(scale * 10))
    scores = torch.randn(64, 3000, generator=generator) * scale
    for eps, gaps in ((0.01, (-15.0, 12.0)), (1e-6, (-1.0, 3.0))):  # mixed rows; all far above
        scores[:, EOS] = scores.amax(dim=-1) + torch.linspace(*gaps, 64)
        step = 40
        floor_value = 1 - (1 - eps) ** step
        processor = SelfTerminatingLogitsProcessor(eps, EOS)
        for t in range(step):  # the clock counts generated tokens from the shapes it sees
            out = processor(torch.zeros(64, 5 + t, dtype=torch.long), scores.clone())
        p_eos = torch.softmax(scores.double(), dim=-1)[:, EOS]
        below = p_eos < floor_value
        assert processor.raised[-1].tolist() == below.tolist()
        assert out[~below].equal(scores[~below])
        q_eos = torch.softmax(out.double(), dim=-1)[:, EOS]
        torch.testing.assert_close(
            q_eos[below], torch.full_like(q_eos[below], floor_value), rtol=1e-5, atol=0
        )
        assert 0 < int(below.sum()) < 64 if eps == 0.01 else not below.any()


def test_floor_that_rounds_to_one_gives_eos_all_the_mass():
    """1 - (1 - eps)^k is 1.0 in float64 for large k: eos takes all the mass, no math domain error."""
    processor = SelfTerminatingLogitsProcessor(0.5, [2, 5])
    scores = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    for t in range(80):
        out = processor(torch.zeros(3, 4 + t, dtype=torch.long), scores.clone())
    assert processor.floor(80) == 1.0
    probs = out.double().softmax(dim=-1)
    torch.testing.assert_close(probs[:, [2, 5]].sum(-1), torch.ones(3, dtype=torch.float64))
    assert torch.isinf(out[:, [0, 1, 3, 4, 6, 7, 8, 9]]).all()


def _floored_reference(scores: torch.Tensor, eos: list[int], floor_value: float) -> torch.Tensor:
    """log q of the documented renormalisation, in float64 from the raw scores: q restricted to the eos ids is
    f x softmax(their scores), q on the other tokens is (1 - f) x softmax(theirs)."""
    scores = scores.double()
    is_eos = torch.zeros(scores.shape[-1], dtype=torch.bool)
    is_eos[eos] = True
    ref = torch.empty_like(scores)
    ref[:, is_eos] = math.log(floor_value) + torch.log_softmax(scores[:, is_eos], dim=-1)
    ref[:, ~is_eos] = math.log1p(-floor_value) + torch.log_softmax(scores[:, ~is_eos], dim=-1)
    return ref


@pytest.mark.parametrize("rows", [2, 40])  # per-row decisions on Python floats; on tensors (> 32 rows)
@pytest.mark.parametrize("eos", [[0], [0, 1]])
@pytest.mark.parametrize("eos_score", [-3.0e5, -1.0e7, -1.0e9, torch.finfo(torch.float32).min])
def test_raised_row_is_exact_when_eos_is_far_below(rows, eos, eos_score):
    """A row whose eos scores are far below the rest (a large finite mask) is raised to exactly f whether the
    other rows are raised too or left alone: no float32 cancellation of log p_eos against log f - log p_eos."""
    row = torch.tensor([eos_score] * len(eos) + [10.0, 0.0, 0.0, -2.0, 1.0][: 6 - len(eos)])
    row[1] = row[1] if len(eos) == 1 else 0.999 * eos_score  # two eos ids: their share matters too
    free = torch.zeros(6)
    free[eos] = 12.0  # p_eos ~ 1: never raised
    binding = torch.tensor([-30.0, -31.0, 1.0, 2.0, 0.5, 0.0])
    for name, other in (("other rows free", free), ("other rows raised", binding)):
        scores = torch.stack([row, *[other] * (rows - 1)])
        processor = SelfTerminatingLogitsProcessor(0.6, eos)  # greedy_bound() == 1: eos wins the first token
        out = processor(torch.zeros(rows, 3, dtype=torch.long), scores.clone())
        floor_value = processor.floor(1)
        log_q = torch.log_softmax(out[0].double(), dim=-1)
        torch.testing.assert_close(
            log_q, _floored_reference(row[None], eos, floor_value)[0], rtol=1e-6, atol=1e-5, msg=name
        )
        assert int(out[0].argmax()) in eos, name


def _greedy_steps_to_eos(processor: SelfTerminatingLogitsProcessor, limit: int) -> int:
    """Generated tokens until greedy argmax picks an eos id, in the worst case for the floor: every non-eos
    token's mass on token 0 (the lowest id, which wins an argmax tie), eos mass split evenly over the ids."""
    vocab = max(processor.eos_token_id) + 2
    scores = torch.full((1, vocab), -30.0)
    scores[0, 0] = 10.0
    ids = torch.zeros(1, 3, dtype=torch.long)
    for t in range(1, limit + 1):
        token = int(processor(ids, scores.clone()).argmax(-1))
        if token in processor.eos_token_id:
            return t
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return limit + 1


@pytest.mark.parametrize(
    ("epsilon", "eos"),
    [
        (0.5, [4]),  # f_1 = 1/2 exactly: eos ties with token 0 at the first token
        (1 - (0.5 - 1e-10) ** (1 / 7), [4]),  # f_7 = 1/2 + 1e-10: a tie in float32
        (1 - (1 / 3) ** (1 / 5), [3, 4]),  # two ids: f_5 / 2 = 1 - f_5 up to rounding
    ],
)
def test_greedy_bound_holds_at_float32_ties(epsilon, eos):
    processor = SelfTerminatingLogitsProcessor(epsilon, eos)
    bound = processor.greedy_bound()
    assert _greedy_steps_to_eos(processor, bound + 3) <= bound


@given(
    epsilon=st.floats(1e-3, 0.95),
    ids=st.integers(1, 3),
    start=st.integers(0, 3),
)
@settings(max_examples=40, deadline=None)
def test_greedy_bound_holds_for_any_epsilon(epsilon, ids, start):
    """Worst case for the floor (all non-eos mass on the lowest id): greedy picks eos within greedy_bound()
    tokens, and not before start + the first k with f_k / m > 1 - f_k in exact arithmetic."""
    processor = SelfTerminatingLogitsProcessor(epsilon, list(range(2, 2 + ids)), start=start)
    steps = _greedy_steps_to_eos(processor, processor.greedy_bound() + 3)
    assert steps <= processor.greedy_bound()
    exact = next(k for k in range(1, 10**6) if (1 - (1 - epsilon) ** k) / ids > (1 - epsilon) ** k)
    assert steps >= start + exact
