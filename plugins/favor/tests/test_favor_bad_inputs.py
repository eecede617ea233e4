"""Property tests: random bad arguments and non-finite tensors thrown at hfplug-favor's public API.

Every call either raises a clean TypeError/ValueError naming the argument, or returns a finite result that
is checked against an independent property (shape, convex combination of the values)."""

from __future__ import annotations

import math

import pytest
import torch
from hfplug_favor import (
    FavorCacheLayer,
    FavorConfig,
    FeatureRedrawCallback,
    favor_attention,
    gaussian_projection,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hfplug.testing import assert_names_argument, junk_values

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TENSORS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
W = gaussian_projection(16, 8, seed=1)
CONFIG_FIELDS = [f for f in FavorConfig.__dataclass_fields__ if f not in ("kernel", "radii")]


def assert_weighted_average(out, value):
    """Each output entry lies between the smallest and largest value entry of its kv head (a weighted average
    with non-negative weights), or is 0 (a row that sees no key, or whose normaliser underflowed float32).

    Slack: 1e-4 of the range, and 1e-12 absolute: value entries that small times small key features fall into
    float32 subnormals in the k'^T v products and lose relative precision (documented on the favor page)."""
    low = torch.minimum(value.amin(2, keepdim=True), torch.zeros(()))
    high = torch.maximum(value.amax(2, keepdim=True), torch.zeros(()))
    group = out.shape[1] // value.shape[1]
    low, high = low.repeat_interleave(group, 1), high.repeat_interleave(group, 1)
    slack = (high - low) * 1e-4 + 1e-12
    assert torch.isfinite(out).all()
    assert (out >= low - slack).all() and (out <= high + slack).all()


def call(function, name, *args, **kwargs):
    """``function(*args, **kwargs)``, or None after checking that the error is the clean one naming ``name``."""
    try:
        return function(*args, **kwargs)
    except (TypeError, ValueError) as error:
        assert_names_argument(error, name)
        return None


@FAST
@given(field=st.sampled_from([*CONFIG_FIELDS, "kernel", "radii"]), value=junk_values())
def test_favor_config_rejects_junk_by_name(field, value):
    config = call(FavorConfig, field, **{field: value})
    if config is not None:  # accepted: it must be a value of the field's documented type and range
        assert getattr(config, field) == value and not isinstance(value, float)


@FAST
@given(
    argument=st.sampled_from(["nb_features", "dim", "seed", "orthogonal", "radii", "hyperbolic"]),
    value=junk_values(),
)
def test_gaussian_projection_rejects_junk_by_name(argument, value):
    kwargs = {"nb_features": 8, "dim": 4, argument: value}
    if argument in ("nb_features", "dim") and isinstance(value, int) and not isinstance(value, bool):
        assume(value <= 512)  # valid sizes beyond this are slow to draw, not wrong
    nb_features, dim = kwargs.pop("nb_features"), kwargs.pop("dim")
    projection = call(gaussian_projection, argument, nb_features, dim, **kwargs)
    if projection is not None:
        assert projection.shape == (nb_features, dim) and torch.isfinite(projection).all()


@FAST
@given(
    argument=st.sampled_from(["scaling", "chunk_size", "causal", "shift_keys", "kernel", "document_ids"]),
    value=junk_values(),
)
def test_favor_attention_rejects_junk_arguments_by_name(argument, value):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, d, generator=generator) for d in (8, 8, 3))
    result = call(favor_attention, argument, q, k, v, W, **{argument: value})
    if result is not None:
        assert_weighted_average(result[0], v)


@TENSORS
@given(
    name=st.sampled_from(["query", "key", "value"]),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
    where=st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 6), st.integers(0, 7)),
    causal=st.booleans(),
    padded=st.booleans(),
)
def test_non_finite_tensors_raise_naming_the_tensor(name, bad, where, causal, padded):
    tensors = {
        "query": torch.randn(2, 4, 7, 8),
        "key": torch.randn(2, 2, 7, 8),
        "value": torch.randn(2, 2, 7, 8),
    }
    tensors[name][where] = bad
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :3] = not padded  # NaN in a padded key still raises: it would reach the gradients
    with pytest.raises(ValueError) as error:
        favor_attention(*tensors.values(), W, causal=causal, key_padding_mask=mask, chunk_size=3)
    assert_names_argument(error.value, name)


@TENSORS
@given(
    scales=st.tuples(*[st.integers(-30, 30)] * 3),
    causal=st.booleans(),
    shape=st.tuples(st.integers(0, 2), st.integers(0, 6), st.integers(0, 6)),
)
def test_finite_tensors_give_a_clean_error_or_a_finite_weighted_average(scales, causal, shape):
    B, Lq, Lk = shape
    assume(not causal or Lk >= Lq)
    generator = torch.Generator().manual_seed(sum(scales) + 100 * B + 10 * Lq + Lk)
    q = torch.randn(B, 4, Lq, 8, generator=generator) * 10.0 ** scales[0]
    k = torch.randn(B, 2, Lk, 8, generator=generator) * 10.0 ** scales[1]
    v = torch.randn(B, 2, Lk, 3, generator=generator) * 10.0 ** scales[2]
    try:
        out, _ = favor_attention(q, k, v, W, causal=causal, chunk_size=4)
    except ValueError as error:  # only the float32 range can refuse finite inputs, and it says which one
        assert "too large" in str(error) or "overflowed" in str(error), error
        return
    assert out.shape == (B, 4, Lq, 3)
    if Lk:
        assert_weighted_average(out, v)
    else:
        assert not out.any()


@TENSORS
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    chunk_size=st.integers(1, 9),
    scales=st.tuples(st.integers(-2, 1), st.integers(-2, 1)),
    seed=st.integers(0, 2**16),
)
def test_packed_documents_equal_each_document_alone(lengths, chunk_size, scales, seed):
    """Any packing: every document's rows equal that document run alone (without document_ids)."""
    generator = torch.Generator().manual_seed(seed)
    L = sum(lengths)
    q = torch.randn(2, 4, L, 8, generator=generator) * 3.0 ** scales[0]
    k = torch.randn(2, 2, L, 8, generator=generator) * 3.0 ** scales[1]
    v = torch.randn(2, 2, L, 3, generator=generator)
    ids = torch.repeat_interleave(torch.arange(len(lengths)) * 7, torch.tensor(lengths)).expand(2, -1)
    packed, _ = favor_attention(q, k, v, W, causal=True, chunk_size=chunk_size, document_ids=ids)
    assert_weighted_average(packed, v)
    alone = [
        favor_attention(*parts, W, causal=True, chunk_size=chunk_size)[0]
        for parts in zip(*(t.split(lengths, 2) for t in (q, k, v)), strict=True)
    ]
    torch.testing.assert_close(packed, torch.cat(alone, 2), rtol=1e-4, atol=1e-6)


@FAST
@given(value=junk_values())
def test_feature_redraw_callback_rejects_junk_by_name(value):
    callback = call(FeatureRedrawCallback, "every_n_steps", value)
    if callback is not None:
        assert value is None or (isinstance(value, int) and value >= 1)


@FAST
@given(value=junk_values())
def test_favor_cache_crop_rejects_junk_by_name(value):
    layer = FavorCacheLayer()
    try:
        layer.crop(value)
    except (TypeError, ValueError) as error:
        assert_names_argument(error, "tokens_to_remove") if "cannot crop" not in str(error) else None
        return
    assert value == 0 and not isinstance(value, bool)
