"""The comparison rules (services/executor/verdicts.py): examples, then properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from codeprm.services.executor.verdicts import compare_stdout, tokens_equal, values_equal

TOL = 1e-6


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ("1 2\n", "1 2"),
        ("1  2  \r\n\n\n", "1 2\n"),
        ("0.3333333333\n", "0.333333333333"),
        ("1e-7\n", "0.0"),
        ("3\n", "3.0"),
        ("YES\n", "YES"),
        ("-0\n", "0"),
        ("007\n", "7"),
        ("+7\n", "7"),
        ("-0.0\n", "0.0"),
        ("0.0\n", "-0.0"),
        ("nan\n", "nan"),
        ("-nan\n", "NaN"),
        ("inf\n", "Infinity"),
        ("-inf\n", "-inf"),
        ("inf\n", "1e999"),
        ("9" * 6000 + "\n", "9" * 6000),
    ],
)
def test_tolerant_comparison_accepts(actual: str, expected: str) -> None:
    assert compare_stdout(actual, expected, "tolerant", TOL) is None


@pytest.mark.parametrize(
    ("actual", "expected", "reason"),
    [
        ("1 2\n", "1 3", "line 1"),
        ("1\n2\n", "1", "expected 1 lines, got 2"),
        ("0.34\n", "0.33", "line 1"),
        ("yes\n", "YES", "line 1"),
        ("12\n", "1 2", "line 1"),
        # integers are exact, whatever the program prints
        ("1000000000\n", "1000000007", "line 1"),
        ("1.2345679e17\n", "123456789012345678", "line 1"),
        ("1e9\n", "1000000000", "line 1"),
        ("7.0\n", "7", "line 1"),
        ("1e-7\n", "0", "line 1"),
        ("1_000\n", "1000", "line 1"),
        ("١٢\n", "12", "line 1"),  # Arabic-Indic digits are not ASCII integers
        ("9" * 6000 + "8\n", "9" * 6001, "line 1"),
        # special floats
        ("inf\n", "-inf", "line 1"),
        ("1e308\n", "inf", "line 1"),
        ("nan\n", "0.0", "line 1"),
        ("0.0\n", "nan", "line 1"),
        ("nan\n", "1", "line 1"),
        ("1_0.0\n", "10.0", "line 1"),
    ],
)
def test_tolerant_comparison_rejects(actual: str, expected: str, reason: str) -> None:
    assert reason in (compare_stdout(actual, expected, "tolerant", TOL) or "")


def test_exact_comparison_is_byte_for_byte() -> None:
    assert compare_stdout("1\n", "1\n", "exact", 0) is None
    assert compare_stdout("1\n", "1", "exact", 0) == "output differs"


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [
        ((1, 2), [1, 2], True),
        ([1.0000000001], [1.0], True),
        (1, 1.0, True),
        (2.0, 2, True),  # JSON writers print 2.0 as 2
        (True, 1, False),
        (1, True, False),
        ({"a": [1, (2,)]}, {"a": [1, [2]]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ("1", 1, False),
        (None, None, True),
        ([1, 2], [2, 1], False),
        # integers are exact
        (1000000000, 1000000007, False),
        (1e9, 1000000007, False),
        (1.2345679e17, 123456789012345678, False),
        (123456789012345680.0, 123456789012345678, False),
        (10**400, 10**400, True),
        (10**400, 1.0, False),  # an int no float can hold is not close to any float
        (10**400, 1e308, False),
        (float("inf"), 10**400, False),
        (float("nan"), 1, False),
        (float("nan"), 1.0, False),
        (float("inf"), 1e308, False),
        (-0.0, 0.0, True),
        (0, -0.0, True),
        (1 + 0j, 1, False),
        (b"a", "a", False),
        ({1: 2}, {"1": 2}, False),
        ({1, 2}, [1, 2], False),
    ],
)
def test_values_equal(actual: object, expected: object, equal: bool) -> None:
    assert values_equal(actual, expected, TOL) is equal


# -- properties -------------------------------------------------------------------------------

ints = st.integers() | st.integers(min_value=-(10**6000), max_value=10**6000)
finite = st.floats(allow_nan=False, allow_infinity=False)


@given(st.integers(), st.integers())
def test_integers_compare_exactly_as_tokens(a: int, b: int) -> None:
    assert tokens_equal(str(a), str(b), 1.0) is (a == b)


# Digit strings beyond int()'s 4300-digit limit: a short random pattern, repeated.
huge = st.text(alphabet="0123456789", min_size=1, max_size=20).map(
    lambda d: "1" + d * (4400 // len(d) + 1)
)


@given(huge, st.integers(min_value=0, max_value=4400), st.sampled_from("0123456789"))
def test_integers_beyond_the_str_digits_limit_compare_exactly(
    digits: str, at: int, digit: str
) -> None:
    other = digits[:at] + digit + digits[at + 1 :]
    assert tokens_equal(other, digits, 1.0) is (other == digits)
    assert tokens_equal("-" + digits, digits, 1.0) is False


@given(st.integers(min_value=-(10**30), max_value=10**30), finite)
def test_a_float_never_passes_for_an_integer(expected: int, printed: float) -> None:
    # Whatever float the program prints (repr: always with a '.' or an exponent).
    assert not tokens_equal(repr(printed), str(expected), 1.0)


@given(st.integers(min_value=-(10**30), max_value=10**30), ints)
def test_integer_values_compare_exactly(expected: int, returned: int) -> None:
    assert values_equal(returned, expected, 1.0) is (returned == expected)


@given(st.integers(min_value=-(10**30), max_value=10**30), finite)
def test_a_returned_float_passes_for_an_integer_only_when_exactly_equal(
    expected: int, returned: float
) -> None:
    assert values_equal(returned, expected, 1.0) is (returned == expected)


@given(finite, st.floats(min_value=-1e-7, max_value=1e-7))
def test_floats_within_the_tolerance_pass(expected: float, offset: float) -> None:
    assume(abs(expected) < 1e300)
    got = expected + offset * max(1.0, abs(expected)) * 0.99
    assert values_equal(got, expected, TOL)
    assert tokens_equal(repr(got), repr(expected), TOL)


@given(finite, finite)
def test_float_comparison_is_isclose_for_finite_values(a: float, b: float) -> None:
    close = math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)
    assert values_equal(a, b, TOL) is close
    assert tokens_equal(repr(a), repr(b), TOL) is close


specials = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])


@given(specials | finite, specials)
def test_special_floats_follow_their_written_rules(a: float, b: float) -> None:
    if math.isnan(b):
        want = math.isnan(a)
    elif math.isinf(b):
        want = a == b
    elif b == 0.0:
        want = not math.isnan(a) and abs(a) <= TOL
    else:  # pragma: no cover - sampled values are all special
        raise AssertionError
    assert values_equal(a, b, TOL) is want
    assert tokens_equal(repr(a), repr(b), TOL) is want


plain = st.recursive(
    st.none()
    | st.booleans()
    | ints
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.complex_numbers(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
    ),
    max_leaves=20,
)
json_values = st.recursive(
    st.none() | st.booleans() | ints | finite | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@given(plain, json_values)
def test_comparing_any_values_never_raises(actual: object, expected: object) -> None:
    assert values_equal(actual, expected, TOL) in (True, False)


@given(json_values)
def test_every_json_value_equals_itself(value: object) -> None:
    assert values_equal(value, value, TOL)


@given(st.text(), st.text())
def test_comparing_any_outputs_never_raises(actual: str, expected: str) -> None:
    reason = compare_stdout(actual, expected, "tolerant", TOL)
    assert reason is None or isinstance(reason, str)
    assert compare_stdout(expected, expected, "tolerant", TOL) is None
