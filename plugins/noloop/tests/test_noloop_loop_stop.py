"""Loop stop: planted loops of periods 1..64 are found, sequences without a repeat never fire, and the
vectorised detector agrees with a brute-force reference on random low-entropy sequences."""

import math

import pytest
import torch
from hfplug_noloop import LoopDetector, LoopEOSLogitsProcessor, LoopStoppingCriteria, NoLoopConfig

EOS = 2


def reference_period(tokens, generated, min_size, max_size, min_count, window, min_loop_tokens):
    """Brute force: smallest period whose copies fill the generated tail, or 0."""
    for p in range(min_size, max_size + 1):
        copies = max(min_count, math.ceil(min_loop_tokens / p))
        span = p * copies
        if span > min(generated, window):
            continue
        if all(tokens[-1 - j] == tokens[-1 - j - p] for j in range(span - p)):
            return p
    return 0


def planted(period: int, copies: int, prefix: int = 20, extra: int = 0) -> list[int]:
    tokens = torch.randperm(900, generator=torch.Generator().manual_seed(period))[: prefix + period] + 100
    head, block = tokens[:prefix].tolist(), tokens[prefix:].tolist()
    return head + block * copies + block[:extra]


def test_planted_loops_of_periods_1_to_64():
    detector = LoopDetector(1, 64, min_count=3, window=512, min_loop_tokens=16)
    width = max(len(planted(p, detector.copies(p))) for p in range(1, 65))
    found, not_yet = [], []
    for p in range(1, 65):
        copies = detector.copies(p)
        for tokens, sink in ((planted(p, copies), found), (planted(p, copies - 1, extra=p - 1), not_yet)):
            row = torch.tensor([0] * (width - len(tokens)) + tokens)[None]
            sink.append(int(detector(row, len(tokens) - 20)))  # the 20-token prefix plays the prompt
    assert found == list(range(1, 65))
    assert not_yet == [0] * 64


def test_prompt_tokens_never_count():
    detector = LoopDetector(1, 8, min_count=4, window=64, min_loop_tokens=0)
    row = torch.tensor([[5, 6, 5, 6, 5, 6, 5, 6]])
    assert int(detector(row, 8)) == 2
    assert int(detector(row, 7)) == 0  # the first token is prompt: only 3.5 copies were generated


def test_never_fires_without_a_repeat():
    detector = LoopDetector(1, 64, min_count=2, window=1024, min_loop_tokens=0)
    rows = torch.stack(
        [torch.randperm(1000, generator=torch.Generator().manual_seed(s))[:700] for s in range(8)]
    )
    assert (detector(rows, 700) == 0).all()
    for s in range(8):  # every prefix of every row as well
        assert detector.first_loop_end(rows[s]) is None


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    settings = [(1, 6, 2, 40, 0), (2, 5, 3, 30, 8), (1, 12, 4, 64, 16), (3, 3, 2, 6, 0)][seed]
    detector = LoopDetector(*settings)
    rows = torch.randint(0, 2 + seed % 2, (64, 50), generator=generator)
    for r in range(0, 64, 2):  # plant loops of assorted periods and lengths in half the rows
        period, length = r % 7 + 1, 10 + r % 40
        rows[r, -length:] = rows[r, :period].repeat(length // period + 1)[:length]
    generated = torch.randint(0, 51, (64,), generator=generator)
    got = detector(rows, generated).tolist()
    expected = [reference_period(r.tolist(), int(g), *settings) for r, g in zip(rows, generated, strict=True)]
    assert got == expected
    assert any(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_pattern_size": 8, "max_pattern_size": 4}, "min_pattern_size"),
        ({"min_count": 1}, "min_count"),
        ({"max_pattern_size": 200, "window": 512}, "window"),
        ({"min_pattern_size": 0}, "min_pattern_size"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoopStoppingCriteria(**kwargs)


def test_stops_rows_in_generate_and_reports(looping_model, prompt):
    model = looping_model("gpt2")
    ids, mask = prompt
    kwargs = dict(attention_mask=mask, max_new_tokens=30, do_sample=False, pad_token_id=0)
    plain = model.generate(ids, **kwargs)[:, ids.shape[1] :]
    stop = LoopStoppingCriteria(1, 8, min_count=4, window=64, min_loop_tokens=8, eos_token_id=EOS)
    out = model.generate(ids, stopping_criteria=[stop], **kwargs)
    report = stop.report()
    assert [r["row"] for r in report] == [0, 1, 2]
    for entry in report:
        row, period, length = entry["row"], entry["period"], entry["generated_tokens"]
        generated = plain[row, :length].tolist()  # same greedy path until the stop
        assert out[row, ids.shape[1] : ids.shape[1] + length].tolist() == generated
        assert reference_period(generated, length, 1, 8, 4, 64, 8) == period
        assert reference_period(generated[:-1], length - 1, 1, 8, 4, 64, 8) == 0  # stopped at the first hit
        assert (out[row, ids.shape[1] + length :] == 0).all()  # then padded


def test_loop_eos_forces_eos(looping_model, prompt):
    model = looping_model("gpt2", seed=1)
    ids, mask = prompt
    force = LoopEOSLogitsProcessor(EOS, 1, 8, min_count=4, window=64, min_loop_tokens=8)
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=30, do_sample=False, pad_token_id=0, logits_processor=[force]
    )[:, ids.shape[1] :]
    for row in out.tolist():
        end = row.index(EOS)
        assert reference_period(row[:end], end, 1, 8, 4, 64, 8) > 0


@pytest.mark.parametrize("action", ["stop", "eos"])
@pytest.mark.parametrize("mode", [{"do_sample": False}, {"num_beams": 3, "do_sample": False}], ids=str)
def test_config_stop_reasons(action, mode, looping_model, prompt):
    model = looping_model("gpt2")
    ids, mask = prompt
    config = NoLoopConfig(
        epsilon=None,
        dry_multiplier=0,
        loop_action=action,
        max_pattern_size=8,
        min_loop_tokens=8,
        loop_window=64,
    )
    procs, stops = components = config.build(EOS)
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=30,
        pad_token_id=0,
        logits_processor=procs,
        stopping_criteria=stops,
        return_dict_in_generate=True,
        **mode,
    )
    reasons = components.stop_reasons(out)
    rows = out.sequences[:, ids.shape[1] :].tolist()
    if mode.get("num_beams", 1) == 1:
        assert reasons == ["loop" if action == "stop" else "forced_eos"] * 3
    for reason, row in zip(
        reasons, rows, strict=True
    ):  # beam search may also return a beam that ran to the cap
        if reason == "forced_eos":
            end = row.index(EOS)
            assert reference_period(row[:end], end, 1, 8, 4, 64, 8) > 0
        elif reason == "loop":
            assert EOS not in row or reference_period(row[: row.index(EOS)], row.index(EOS), 1, 8, 4, 64, 8)
        else:
            assert reason == "max_length" and EOS not in row and len(row) == 30


@pytest.mark.parametrize("eos", [EOS, [EOS, 5]])
@pytest.mark.parametrize("looping_rows", [(), (1,), (0, 2), (0, 1, 2)])
def test_loop_eos_output_per_row(eos, looping_rows):
    """Forced rows: -inf everywhere but eos, which keeps its score (0 when banned or not finite); the other
    rows are returned as they are — against a per-row reference written out by hand."""
    generator = torch.Generator().manual_seed(len(looping_rows))
    prompt, generated = torch.randint(10, 50, (3, 5), generator=generator), []
    for row in range(3):
        tokens = [7, 8] * 10 if row in looping_rows else torch.randperm(40, generator=generator)[:20].add(10)
        generated.append(torch.as_tensor(tokens))
    force = LoopEOSLogitsProcessor(eos, 1, 8, min_count=4, window=64, min_loop_tokens=8)
    for width in range(1, 21):  # every step of a generation, so the clock counts the tokens as generated
        ids = torch.cat([prompt, torch.stack(generated)[:, :width]], dim=1)
        scores = torch.randn(3, 60, generator=generator)
        scores[0, EOS] = -math.inf  # a banned eos
        scores[2, EOS] = math.nan
        out = force(ids, scores.clone())
    eos_ids = [eos] if isinstance(eos, int) else eos
    for row in range(3):
        if row not in looping_rows:
            torch.testing.assert_close(out[row], scores[row], rtol=0, atol=0, equal_nan=True)
            continue
        expected = torch.full((60,), -math.inf)
        for token in eos_ids:
            value = float(scores[row, token])
            expected[token] = value if math.isfinite(value) else 0.0
        assert torch.equal(out[row], expected)
    assert force.forced[-1].tolist() == [row in looping_rows for row in range(3)]
