"""FAVOR+ math against independent references written here: exact softmax attention and the quadratic
masked FAVOR+ formula (phi(Q) phi(K)^T, masked, row-normalised) computed in float64."""

from __future__ import annotations

import math

import pytest
import torch
from _favor_helpers import inputs, quadratic_favor
from hfplug_favor import FavorConfig, favor_attention, gaussian_projection


def exact_softmax(q, k, v, valid=None, causal=False, scaling=None):
    G = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(G, 1).double(), v.repeat_interleave(G, 1).double()
    logits = (q.double() @ k.transpose(-1, -2)) * (scaling or q.shape[-1] ** -0.5)
    allowed = torch.ones(logits.shape[-2:], dtype=torch.bool)
    if causal:
        allowed = allowed.tril(k.shape[-2] - q.shape[-2])
    allowed = allowed[None, None]
    if valid is not None:
        allowed = allowed & valid[:, None, None, :]
    return logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def relative_error(a, b):
    return float((a.double() - b).norm() / b.norm())


def test_noncausal_converges_to_exact_softmax_with_padding():
    q, k, v = inputs(B=2, H=4, Hkv=4, L=96, D=32, scale=0.5)
    valid = torch.ones(2, 96, dtype=torch.bool)
    valid[0, 70:] = False  # right padding
    valid[1, :20] = False  # left padding
    k = k.masked_fill(~valid[:, None, :, None], 30.0)  # garbage in padded keys must not matter
    exact = exact_softmax(q, k, v, valid)
    errors = {}
    for m in (64, 4096):
        runs = [
            relative_error(
                favor_attention(q, k, v, gaussian_projection(m, 32, seed=s), key_padding_mask=valid)[0], exact
            )
            for s in range(3)
        ]
        errors[m] = sum(runs) / len(runs)
    assert errors[4096] < errors[64] / 4, errors
    assert errors[4096] < 0.12, errors


def test_key_shift_is_exact_for_softmax_and_lowers_the_error():
    q, k, v = inputs(B=2, H=4, Hkv=2, L=64, D=32, scale=0.5, seed=3)
    q, k = q + 0.3, k + 0.3  # shared offsets, as in trained models' queries and keys
    valid = torch.ones(2, 64, dtype=torch.bool)
    valid[1, 50:] = False
    exact = exact_softmax(q, k, v, valid)
    plain, shifted = [], []
    for s in range(4):
        W = gaussian_projection(4096 if s == 0 else 256, 32, seed=s)
        plain.append(relative_error(favor_attention(q, k, v, W, key_padding_mask=valid)[0], exact))
        shifted.append(
            relative_error(favor_attention(q, k, v, W, key_padding_mask=valid, shift_keys=True)[0], exact)
        )
    assert shifted[0] < 0.1  # still converges to exact softmax attention (the shift is exact)
    assert sum(shifted[1:]) < 0.85 * sum(plain[1:]), (plain, shifted)


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 37, 128])
@pytest.mark.parametrize("padding", ["none", "left", "right"])
def test_causal_chunked_equals_quadratic_masked_favor(chunk_size, padding):
    q, k, v = inputs()
    valid = torch.ones(2, 37, dtype=torch.bool)
    if padding == "left":
        valid[1, :6] = False
    elif padding == "right":
        valid[0, 30:] = False
    W = gaussian_projection(64, 16, seed=1)
    out, _ = favor_attention(q, k, v, W, causal=True, key_padding_mask=valid, chunk_size=chunk_size)
    ref = quadratic_favor(q, k, v, W, valid, causal=True)
    rows = valid.cumsum(-1) > 0  # query rows that see at least one key
    rows = rows[:, None, :].expand(-1, 4, -1)
    torch.testing.assert_close(out.double()[rows], ref[rows], rtol=1e-5, atol=1e-5)


def test_causal_with_cached_prefix_and_state_match_quadratic():
    q, k, v = inputs(L=29)
    W = gaussian_projection(64, 16, seed=2)
    ref = quadratic_favor(q, k, v, W, causal=True)
    # queries for the last 7 positions against all 29 keys (chunked prefill / decode with a cache)
    out, _ = favor_attention(q[:, :, 22:], k, v, W, causal=True, chunk_size=4)
    torch.testing.assert_close(out.double(), ref[:, :, 22:], rtol=1e-5, atol=1e-5)
    # the same through the recurrent state: prefill 22 tokens, then one token at a time
    _, state = favor_attention(q[:, :, :22], k[:, :, :22], v[:, :, :22], W, causal=True, chunk_size=8)
    for t in range(22, 29):
        step, state = favor_attention(
            q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], W, causal=True, state=state
        )
        torch.testing.assert_close(step.double(), ref[:, :, t : t + 1], rtol=1e-5, atol=1e-5)


# the causal path's variants: all keys against one reference (the default when the key scales span little),
# every query row against its own running stabiliser (large spans), and one (batch, kv head) row per slice
# (with it, non-causal keys and queries go in blocks of 4 rows, each key block with its own stabiliser)
ROW_BLOCKS = {"_BLOCK_FEATURES": 1, "_MIN_BLOCK_ROWS": 4}
CAUSAL_PATHS = {
    "one_reference": {"_ONE_REFERENCE_RANGE": math.inf},
    "per_row": {"_ONE_REFERENCE_RANGE": -1.0},
    "row_slices": {"_SLICE_FEATURES": 1, **ROW_BLOCKS},
}


@pytest.fixture(params=sorted(CAUSAL_PATHS))
def causal_path(request, monkeypatch):
    from hfplug_favor import attention

    for name, value in CAUSAL_PATHS[request.param].items():
        monkeypatch.setattr(attention, name, value)
    return request.param


@pytest.mark.parametrize("padding", ["none", "left"])
def test_causal_many_chunks_and_states_match_quadratic(padding, causal_path):
    # many chunks (the prefix states of all chunks come from one product), key norms growing along the
    # sequence (the running stabiliser moves in every chunk), and prefill in pieces through the state
    q, k, v = inputs(L=90, scale=0.6)
    k = k * torch.linspace(0.5, 2.0, 90)[:, None]
    valid = torch.ones(2, 90, dtype=torch.bool)
    if padding == "left":
        valid[1, :13] = False
    W = gaussian_projection(64, 16, seed=3)
    ref = quadratic_favor(q, k, v, W, valid, causal=True)
    rows = (valid.cumsum(-1) > 0)[:, None, :].expand(-1, 4, -1)
    for chunk_size in (3, 7, 16):
        out, _ = favor_attention(q, k, v, W, causal=True, key_padding_mask=valid, chunk_size=chunk_size)
        torch.testing.assert_close(out.double()[rows], ref[rows], rtol=1e-5, atol=1e-5)
        state, pieces = None, []
        for start, stop in ((0, 10), (10, 41), (41, 90)):
            piece, state = favor_attention(
                q[:, :, start:stop],
                k[:, :, start:stop],
                v[:, :, start:stop],
                W,
                causal=True,
                key_padding_mask=valid[:, start:stop],
                chunk_size=chunk_size,
                state=state,
            )
            pieces.append(piece)
        torch.testing.assert_close(torch.cat(pieces, 2).double()[rows], ref[rows], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("first_key_scale", [1.0, 6.0])
def test_noncausal_row_blocks_match_quadratic(first_key_scale, monkeypatch):
    # keys in blocks of 4 rows, each stabilised by its own max and rescaled into the running one: key norms
    # grow along the sequence (the stabiliser rises block after block), or the first key dominates (later
    # blocks are scaled down); left padding longer than a block (a block of padded keys only), right padding,
    # and more queries than keys (GQA: 2 query heads per key head)
    from hfplug_favor import attention

    for name, value in ROW_BLOCKS.items():
        monkeypatch.setattr(attention, name, value)
    q, k, v = inputs(L=30, scale=0.6, seed=4)
    k = k * torch.linspace(0.5, 2.0, 30)[:, None]
    k[:, :, 0] *= first_key_scale
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[0, 25:] = False
    valid[1, :9] = False
    W = gaussian_projection(64, 16, seed=6)
    out, _ = favor_attention(q, k, v, W, key_padding_mask=valid)
    torch.testing.assert_close(out.double(), quadratic_favor(q, k, v, W, valid), rtol=1e-5, atol=1e-5)
    out, _ = favor_attention(q[:, :, :7], k, v, W, key_padding_mask=valid)  # one query block and a part
    torch.testing.assert_close(
        out.double(), quadratic_favor(q[:, :, :7], k, v, W, valid), rtol=1e-5, atol=1e-5
    )


def test_causal_keys_of_widely_spread_scales_use_per_row_stabilisers(monkeypatch):
    # a first key of large norm has log-feature scale a_0 ~ -75, the later keys ~ +2: weighting all keys
    # against the first would overflow float32, so the per-row path runs, and matches the quadratic form
    from hfplug_favor import attention

    q, k, v = inputs(L=40)
    k[:, :, 0] *= 12.0
    W = gaussian_projection(64, 16, seed=5)
    used = []
    per_row = attention._causal_per_row
    monkeypatch.setattr(attention, "_causal_per_row", lambda *a: used.append(1) or per_row(*a))
    out, _ = favor_attention(q, k, v, W, causal=True, chunk_size=8)
    assert used
    torch.testing.assert_close(out.double(), quadratic_favor(q, k, v, W, causal=True), rtol=1e-5, atol=1e-5)


def test_causal_output_does_not_depend_on_future_tokens():
    q, k, v = inputs(L=40)
    W = gaussian_projection(64, 16, seed=3)
    out, _ = favor_attention(q, k, v, W, causal=True, chunk_size=16)
    t = 20
    k2, v2, q2 = k.clone(), v.clone(), q.clone()
    k2[:, :, t + 1 :] *= 25.0  # huge future keys would dominate any non-causal stabiliser
    v2[:, :, t + 1 :] = 1e4
    q2[:, :, t + 1 :] = -q2[:, :, t + 1 :]
    out2, _ = favor_attention(q2, k2, v2, W, causal=True, chunk_size=16)
    torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_keys_contribute_exactly_zero(causal):
    q, k, v = inputs(B=1, L=20)
    W = gaussian_projection(64, 16, seed=4)
    alone, _ = favor_attention(q, k, v, W, causal=causal)
    # the same sequence with 5 padded positions on the right holding huge garbage
    garbage = torch.full((1, 2, 5, 16), 1e3)
    qp = torch.cat([q, torch.zeros(1, 4, 5, 16)], 2)
    kp, vp = torch.cat([k, garbage], 2), torch.cat([v, garbage], 2)
    valid = torch.cat([torch.ones(1, 20, dtype=torch.bool), torch.zeros(1, 5, dtype=torch.bool)], 1)
    padded, _ = favor_attention(qp, kp, vp, W, causal=causal, key_padding_mask=valid)
    torch.testing.assert_close(padded[:, :, :20], alone, rtol=1e-5, atol=1e-6)
    if not causal:  # left padding too (positions shift, so causal left padding is covered above)
        lp = favor_attention(
            torch.cat([torch.zeros(1, 4, 5, 16), q], 2),
            torch.cat([garbage, k], 2),
            torch.cat([garbage, v], 2),
            W,
            key_padding_mask=valid.flip(-1),
        )[0]
        torch.testing.assert_close(lp[:, :, 5:], alone, rtol=1e-5, atol=1e-6)


def test_relu_kernel_matches_its_quadratic_form():
    q, k, v = inputs(B=1, H=2, Hkv=2, L=12)
    W = gaussian_projection(32, 16, seed=5)
    out, _ = favor_attention(q, k, v, W, kernel="relu", causal=True, chunk_size=5)
    s = math.sqrt(16**-0.5)
    phi_q = torch.relu(q.double() * s @ W.double().T) + 1e-3
    phi_k = torch.relu(k.double() * s @ W.double().T) + 1e-3
    A = (phi_q @ phi_k.transpose(-1, -2)).tril()
    torch.testing.assert_close(out.double(), (A @ v.double()) / A.sum(-1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_scaling_argument_is_used():
    q, k, v = inputs(B=1, H=2, Hkv=2, L=16, D=8, scale=0.45)
    W = gaussian_projection(8192, 8, seed=6)
    out, _ = favor_attention(q, k, v, W, scaling=1.0)  # T5 passes 1.0
    right = relative_error(out, exact_softmax(q, k, v, scaling=1.0))
    wrong = relative_error(out, exact_softmax(q, k, v))
    assert right < 0.15 and wrong > 2 * right, (right, wrong)


def test_bf16_autocast_keeps_float32_features():
    q, k, v = inputs(B=1, L=64, scale=2.0)
    W = gaussian_projection(64, 16, seed=7)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = favor_attention(qb, kb, vb, W, causal=True, chunk_size=16)
    assert torch.isfinite(out).all() and out.dtype == torch.float32
    ref = quadratic_favor(qb.float(), kb.float(), vb.float(), W, causal=True)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_projection_structure_and_determinism():
    W = gaussian_projection(160, 64, seed=11)
    assert W.shape == (160, 64)
    for block in (W[:64], W[64:128], W[128:]):
        directions = block / block.norm(dim=1, keepdim=True)
        gram = directions @ directions.T
        torch.testing.assert_close(gram, torch.eye(len(block)), atol=1e-5, rtol=0)
    torch.testing.assert_close(gaussian_projection(160, 64, seed=11), W, rtol=0, atol=0)
    assert not torch.equal(gaussian_projection(160, 64, seed=12), W)
    hyper = gaussian_projection(64, 16, hyperbolic=True, seed=1)
    torch.testing.assert_close(hyper[32:], -hyper[:32], rtol=0, atol=0)
    fixed = gaussian_projection(32, 16, radii="fixed", orthogonal=False, seed=1)
    torch.testing.assert_close(fixed.norm(dim=1), torch.full((32,), 4.0), rtol=1e-5, atol=0)


def test_quasi_uniform_radii_are_chi_quantiles():
    stats = pytest.importorskip("scipy.stats")
    W = gaussian_projection(100, 64, radii="quasi_uniform", seed=0)
    expected = stats.chi.ppf([i / 101 for i in range(1, 101)], 64)
    torch.testing.assert_close(
        W.norm(dim=1).sort().values.double(), torch.tensor(expected), rtol=1e-4, atol=0
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nb_features": 0}, "nb_features"),
        ({"kernel": "cosine"}, "kernel"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"radii": "gamma"}, "radii"),
        ({"hyperbolic": True, "nb_features": 5}, "even"),
        ({"redraw_interval": 0}, "redraw_interval"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FavorConfig(**kwargs)


def test_config_round_trips_through_dict():
    config = FavorConfig(nb_features=64, kernel="relu", orthogonal=False, seed=3, redraw_interval=10)
    assert FavorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown FavorConfig"):
        FavorConfig.from_dict({"nb_feature": 3})


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_the_quadratic_form(causal, padded, causal_path):
    q, k, v = (t.double().requires_grad_() for t in inputs(L=21))
    valid = torch.ones(2, 21, dtype=torch.bool)
    valid[1, :4] = not padded
    W = gaussian_projection(32, 16, seed=8)
    upstream = torch.randn(2, 4, 21, 16, dtype=torch.float64)
    rows = (valid.cumsum(-1) > 0)[:, None, :, None]
    out, _ = favor_attention(q, k, v, W, causal=causal, key_padding_mask=valid, chunk_size=6)
    grads = torch.autograd.grad((out.double() * upstream * rows).sum(), (q, k, v))
    ref = quadratic_favor(q, k, v, W, valid, causal=causal)
    ref_grads = torch.autograd.grad((ref * upstream * rows).sum(), (q, k, v))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


# ---- fail safe: bad arguments name themselves, empty inputs behave like exact attention ----------------------


BAD_CALLS = {
    "nb_features=0": ("projection", lambda q: favor_attention(q, q, q, torch.zeros(0, 8))),
    "head dim 0": ("query", lambda q: favor_attention(*(q[..., :0],) * 3, torch.zeros(4, 0))),
    "chunk_size=0": ("chunk_size", lambda q: favor_attention(q, q, q, W8, causal=True, chunk_size=0)),
    "negative scaling": ("scaling", lambda q: favor_attention(q, q, q, W8, scaling=-0.5)),
    "3-D query": ("query", lambda q: favor_attention(q[0], q, q, W8)),
    "mask one column too long": (
        "key_padding_mask",
        lambda q: favor_attention(q, q, q, W8, key_padding_mask=torch.ones(2, 6, dtype=torch.bool)),
    ),
    "float mask": (
        "key_padding_mask",
        lambda q: favor_attention(q, q, q, W8, key_padding_mask=torch.ones(2, 5)),
    ),
    "odd hyperbolic": ("nb_features", lambda q: gaussian_projection(7, 16, hyperbolic=True)),
    "projection of another head dim": ("projection", lambda q: favor_attention(q, q, q, W8[:, :4])),
    "state without causal": (
        "state",
        lambda q: favor_attention(q, q, q, W8, state=favor_attention(q, q, q, W8, causal=True)[1]),
    ),
}
W8 = gaussian_projection(16, 8)


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_get_an_error_naming_them(case):
    from hfplug.testing import assert_names_argument

    name, call = BAD_CALLS[case]
    with pytest.raises((TypeError, ValueError)) as error:
        call(torch.randn(2, 4, 5, 8))
    assert_names_argument(error.value, name)


@pytest.mark.parametrize(
    ("B", "Lq", "Lk", "causal"),
    [
        (0, 5, 5, False),
        (0, 5, 5, True),
        (2, 0, 0, False),
        (2, 0, 0, True),
        (2, 0, 5, False),
        (2, 0, 5, True),
        (2, 5, 0, False),  # no keys; causal needs Lk >= Lq
    ],
)
def test_empty_inputs_give_what_exact_attention_gives(B, Lq, Lk, causal):
    q, k, v = torch.randn(B, 4, Lq, 8), torch.randn(B, 2, Lk, 8), torch.randn(B, 2, Lk, 6)
    exact = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=causal and Lq == Lk
    )
    out, state = favor_attention(q, k, v, W8, causal=causal)
    assert out.shape == exact.shape == (B, 4, Lq, 6)
    assert torch.equal(out, exact)  # empty, or all zeros when no key exists (sdpa's answer too)
    if causal:  # the state stands for all Lk keys: continuing with it equals one call over everything
        assert state.Sz.shape == (B, 2, 16, 7)
        more_q, more_k, more_v = torch.randn(B, 4, 3, 8), torch.randn(B, 2, 3, 8), torch.randn(B, 2, 3, 6)
        continued, _ = favor_attention(more_q, more_k, more_v, W8, causal=True, state=state)
        whole, _ = favor_attention(
            more_q, torch.cat([k, more_k], 2), torch.cat([v, more_v], 2), W8, causal=True
        )
        torch.testing.assert_close(continued, whole)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", ["query", "key", "value"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_inputs_raise_naming_the_tensor(name, bad, causal):
    tensors = dict(zip(("query", "key", "value"), inputs(L=9), strict=True))
    tensors[name][1, 0, 4, 3] = bad
    with pytest.raises(ValueError, match=f"^{name} holds NaN or infinite"):
        favor_attention(*tensors.values(), gaussian_projection(16, 16), causal=causal, chunk_size=4)


@pytest.mark.parametrize(
    ("name", "scale", "message"),
    [
        ("query", 1e19, "query is too large"),
        ("key", 1e19, "key is too large"),
        ("value", 3e38, "rescale value"),
    ],
)
def test_finite_inputs_that_overflow_float32_raise_instead_of_nan(name, scale, message):
    tensors = dict(zip(("query", "key", "value"), inputs(L=9), strict=True))
    tensors[name] = tensors[name] / tensors[name].abs().max() * scale  # largest entry: scale (finite)
    with pytest.raises(ValueError, match=message):
        favor_attention(*tensors.values(), gaussian_projection(16, 16))


def test_large_finite_values_give_the_scaled_output():
    q, k, v = inputs(L=9)
    W = gaussian_projection(16, 16)
    out, _ = favor_attention(q, k, v * 1e37, W)  # attention is linear in the values
    torch.testing.assert_close(out / 1e37, favor_attention(q, k, v, W)[0])
