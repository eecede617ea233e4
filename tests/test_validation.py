"""hfplug.validation: the shared argument checks (types, ranges, messages)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfplug.testing import junk_values
from hfplug.validation import check_bool, check_choice, check_float, check_int, check_int_list


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts_bools(value):
    assert check_bool("flag", value) is value


@pytest.mark.parametrize("value", ["no", "True", 1, 0, None, 1.0, np.bool_(True)])
def test_check_bool_rejects_everything_else_naming_the_argument(value):
    with pytest.raises(TypeError, match=r"random_start must be True or False, got .*\("):
        check_bool("random_start", value)


def test_check_int_accepts_python_and_numpy_integers_within_bounds():
    assert check_int("k", 3, minimum=1) == 3
    assert type(check_int("k", np.int64(3), minimum=1, maximum=3)) is int
    assert check_int("k", -7) == -7


@pytest.mark.parametrize("value", [True, 2.0, "2", None, [2]])
def test_check_int_wrong_type_is_type_error(value):
    with pytest.raises(TypeError, match=r"nb_features must be an integer >= 1, got"):
        check_int("nb_features", value, minimum=1)


@pytest.mark.parametrize(
    ("value", "bounds", "accepted"),
    [
        (0, {"minimum": 1}, ">= 1"),
        (11, {"maximum": 10}, "<= 10"),
        (11, {"minimum": 1, "maximum": 10}, r"in \[1, 10\]"),
    ],
)
def test_check_int_out_of_range_is_value_error(value, bounds, accepted):
    with pytest.raises(ValueError, match=rf"window must be an integer {accepted}, got {value}"):
        check_int("window", value, **bounds)


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        (math.nan, {}),
        (math.inf, {}),
        (-math.inf, {}),
        (0.0, {"minimum": 0.0, "min_open": True}),
        (1.0, {"maximum": 1.0, "max_open": True}),
        (-0.5, {"minimum": 0.0}),
        (1e38, {"maximum": 1e6}),
    ],
)
def test_check_float_rejects_nan_inf_and_out_of_range(value, bounds):
    with pytest.raises(ValueError, match=r"epsilon must be a finite number"):
        check_float("epsilon", value, **bounds)


@pytest.mark.parametrize("value", [True, "0.5", None, complex(1, 0)])
def test_check_float_wrong_type_is_type_error(value):
    with pytest.raises(TypeError, match=r"epsilon must be a finite number > 0, got"):
        check_float("epsilon", value, minimum=0.0, min_open=True)


def test_check_float_inf_only_when_allowed_and_nan_never():
    assert check_float("v", -math.inf, allow_inf=True) == -math.inf
    with pytest.raises(ValueError, match=r"v must be a number, got nan"):
        check_float("v", math.nan, allow_inf=True)
    assert type(check_float("v", np.float32(0.25), minimum=0, maximum=1)) is float
    assert check_float("v", 3, minimum=0) == 3.0


def test_check_choice_matches_type_and_value():
    assert check_choice("objective", "mean", ("mean", "sum")) == "mean"
    with pytest.raises(ValueError, match=r"objective must be one of \['mean', 'sum'\], got 'avg' \(str\)"):
        check_choice("objective", "avg", ("mean", "sum"))
    with pytest.raises(ValueError, match=r"got True \(bool\)"):
        check_choice("p", True, (1, 2))


def test_check_int_list_accepts_int_or_iterable_and_names_the_bad_item():
    assert check_int_list("eos_token_id", 2, minimum=0) == [2]
    assert check_int_list("eos_token_id", (2, np.int32(5)), minimum=0) == [2, 5]
    with pytest.raises(ValueError, match=r"eos_token_id\[1\] must be an integer in \[0, 99\], got 100"):
        check_int_list("eos_token_id", [2, 100], minimum=0, maximum=99)
    with pytest.raises(TypeError, match=r"eos_token_id must be an integer or a list of integers"):
        check_int_list("eos_token_id", "2")
    with pytest.raises(ValueError, match=r"eos_token_id must hold at least one integer"):
        check_int_list("eos_token_id", [], allow_empty=False)


@settings(deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10), st.floats(-10, 10))
def test_check_float_agrees_with_the_interval_definition(value, low, high):
    low, high = min(low, high), max(low, high)
    inside = math.isfinite(value) and low < value <= high
    if inside:
        assert check_float("x", value, minimum=low, maximum=high, min_open=True) == value
    else:
        with pytest.raises(ValueError, match=r"^x must be a finite number in \("):
            check_float("x", value, minimum=low, maximum=high, min_open=True)


@settings(deadline=None)
@given(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=3), st.none()))
def test_check_int_accepts_exactly_the_non_bool_integers(value):
    if isinstance(value, int) and not isinstance(value, bool):
        assert check_int("n", value) == value
    else:
        with pytest.raises(TypeError, match=r"^n must be an integer, got"):
            check_int("n", value)


def test_assert_names_argument_accepts_only_clean_errors_naming_the_argument():
    from hfplug.testing import assert_names_argument

    assert_names_argument(ValueError("epsilon must be > 0, got -1"), "epsilon")
    with pytest.raises(AssertionError, match="does not name 'epsilon'"):
        assert_names_argument(ValueError("must be > 0"), "epsilon")
    with pytest.raises(AssertionError, match="RuntimeError"):
        assert_names_argument(RuntimeError("epsilon: shape mismatch"), "epsilon")


@settings(deadline=None)
@given(junk_values())
def test_junk_values_are_all_rejected_by_a_positive_finite_float_check(value):
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return
    with pytest.raises((TypeError, ValueError), match=r"^epsilon"):
        check_float("epsilon", value, minimum=0, min_open=True)


def test_integer_bounds_print_as_integers():
    with pytest.raises(ValueError, match=r"must be an integer in \[1, 1048576\], got 0$"):
        check_int("nb_features", 0, minimum=1, maximum=2**20)
    with pytest.raises(ValueError, match=r"must be a finite number in \[0, 1e-12\], got 1.0$"):
        check_float("tol", 1.0, minimum=0, maximum=1e-12)
