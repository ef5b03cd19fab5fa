"""Amount parsing: integer toman only, inside 1..max (or ±1..max for adjustments).

`bool` is an `int` subclass and floats, strings and None may hold "the right
number"; every one of them is refused, and every refusal names its field.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargebox.config import DEFAULT_MAX_AMOUNT, MAX_BALANCE
from chargebox.errors import ValidationError
from chargebox.money import check_balance, parse_amount, parse_signed_amount

MAX = DEFAULT_MAX_AMOUNT

NOT_INTEGERS = [
    True,
    False,
    1.0,
    1e3,
    1000.5,
    float("nan"),
    float("inf"),
    "1000",
    "۱۰۰۰",
    None,
    Decimal(1000),
    [1000],
    {"amount": 1000},
    b"1000",
]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_an_amount_that_is_not_a_plain_int_is_refused(value):
    with pytest.raises(ValidationError) as refused:
        parse_amount(value, MAX)
    assert refused.value.field == "amount"
    assert refused.value.code == "validation_error"


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_a_signed_amount_that_is_not_a_plain_int_is_refused(value):
    with pytest.raises(ValidationError) as refused:
        parse_signed_amount(value, MAX)
    assert refused.value.field == "amount"


@pytest.mark.parametrize("value", [0, -1, -MAX, MAX + 1, 10**30])
def test_an_amount_outside_one_to_max_is_refused(value):
    with pytest.raises(ValidationError) as refused:
        parse_amount(value, MAX)
    assert refused.value.field == "amount"


@pytest.mark.parametrize("value", [0, MAX + 1, -MAX - 1, 10**30, -(10**30)])
def test_a_signed_amount_that_is_zero_or_beyond_max_either_way_is_refused(value):
    with pytest.raises(ValidationError) as refused:
        parse_signed_amount(value, MAX)
    assert refused.value.field == "amount"


@pytest.mark.parametrize("value", [1, 5_000, MAX])
def test_an_amount_from_one_to_max_is_accepted_unchanged(value):
    parsed = parse_amount(value, MAX)
    assert parsed == value
    assert type(parsed) is int


@pytest.mark.parametrize("value", [1, -1, MAX, -MAX])
def test_a_signed_amount_from_one_to_max_either_way_is_accepted_unchanged(value):
    assert parse_signed_amount(value, MAX) == value


def test_the_configured_max_is_the_limit_not_the_default():
    assert parse_amount(10, 10) == 10
    with pytest.raises(ValidationError):
        parse_amount(11, 10)
    assert parse_signed_amount(-10, 10) == -10
    with pytest.raises(ValidationError):
        parse_signed_amount(-11, 10)


def test_a_refusal_names_the_field_it_was_asked_about():
    with pytest.raises(ValidationError) as refused:
        parse_amount("7", MAX, field="credit")
    assert refused.value.field == "credit"
    with pytest.raises(ValidationError) as refused:
        parse_signed_amount(0, MAX, field="adjustment")
    assert refused.value.field == "adjustment"


@pytest.mark.parametrize("value", [-1, MAX_BALANCE + 1, 1.0, True, "0"], ids=repr)
def test_a_balance_outside_zero_to_ten_to_the_fifteen_fails_the_code_assertion(value):
    with pytest.raises(AssertionError):
        check_balance(value)


@pytest.mark.parametrize("value", [0, 1, MAX_BALANCE])
def test_a_balance_inside_zero_to_ten_to_the_fifteen_passes_the_code_assertion(value):
    assert check_balance(value) == value


@settings(max_examples=300, deadline=None)
@given(
    value=st.integers(min_value=-(10**18), max_value=10**18),
    max_amount=st.integers(min_value=1, max_value=MAX_BALANCE),
)
def test_parse_amount_accepts_exactly_the_integers_from_one_to_max(value, max_amount):
    if 1 <= value <= max_amount:
        assert parse_amount(value, max_amount) == value
    else:
        with pytest.raises(ValidationError):
            parse_amount(value, max_amount)


@settings(max_examples=300, deadline=None)
@given(
    value=st.integers(min_value=-(10**18), max_value=10**18),
    max_amount=st.integers(min_value=1, max_value=MAX_BALANCE),
)
def test_parse_signed_amount_accepts_exactly_the_non_zero_integers_within_max(value, max_amount):
    if value != 0 and abs(value) <= max_amount:
        assert parse_signed_amount(value, max_amount) == value
    else:
        with pytest.raises(ValidationError):
            parse_signed_amount(value, max_amount)


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.booleans(),
        st.floats(),
        st.text(max_size=20),
        st.none(),
        st.decimals(allow_nan=False),
        st.binary(max_size=8),
    )
)
def test_no_value_of_another_type_is_ever_an_amount(value):
    with pytest.raises(ValidationError):
        parse_amount(value, MAX)
    with pytest.raises(ValidationError):
        parse_signed_amount(value, MAX)
