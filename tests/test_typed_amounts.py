"""Amounts typed into the web forms: `amount_from_text` against a model of what people type.

A person types digits of one script (0-9, ۰-۹ or ٠-٩), maybe thousands separated
in groups of three by one kind of separator, maybe a sign (adjustments only), with
spaces and invisible right-to-left marks around. Hypothesis renders integers that
way and reads them back; separators anywhere else, mixed kinds and mixed scripts
are refused. Only the notation is read here; the range is parse_amount's job.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chargebox.errors import ValidationError
from chargebox.money import amount_from_text, parse_amount, parse_signed_amount

MAX = 1_000_000_000
SCRIPTS = {"latin": "0123456789", "persian": "۰۱۲۳۴۵۶۷۸۹", "arabic": "٠١٢٣٤٥٦٧٨٩"}
ACCEPTED_DIGITS = set("".join(SCRIPTS.values()))
# Comma, Arabic comma, Arabic thousands separator, apostrophe, space, no-break spaces.
SEPARATORS = [",", "\u060c", "\u066c", "'", " ", "\u00a0", "\u202f"]
# Around the number: whitespace and the invisible marks right-to-left interfaces paste.
EDGES = [" ", "\t", "\u00a0", "\u202f", "\u3000", "\u200e", "\u200f", "\u061c", "\ufeff"]
EDGES += ["\u200b", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069"]
MARKS = [edge for edge in EDGES if not edge.isspace()]
MINUS, PLUS = ["-", "\u2212"], ["+"]


def written(number: int, script: str, separator: str | None) -> str:
    """`number` as a person writes it: thousands grouped by `separator` (or not)."""
    text = f"{number:,}".replace(",", separator) if separator else str(number)
    return text.translate(str.maketrans("0123456789", SCRIPTS[script]))


def refused(typed: str, signed: bool = False) -> ValidationError:
    with pytest.raises(ValidationError) as refusal:
        amount_from_text(typed, field="price", signed=signed)
    assert refusal.value.field == "price"
    return refusal.value


# --- what a person may type is read back --------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    number=st.integers(0, 10**20),
    script=st.sampled_from(sorted(SCRIPTS)),
    separator=st.none() | st.sampled_from(SEPARATORS),
    before=st.lists(st.sampled_from(EDGES), max_size=3).map("".join),
    after=st.lists(st.sampled_from(EDGES), max_size=3).map("".join),
)
def test_any_integer_written_the_way_people_write_it_is_read_back(
    number, script, separator, before, after
):
    typed = before + written(number, script, separator) + after
    assert amount_from_text(typed) == number
    assert amount_from_text(typed, signed=True) == number


@settings(max_examples=200, deadline=None)
@given(
    number=st.integers(1, 10**12),
    script=st.sampled_from(sorted(SCRIPTS)),
    separator=st.none() | st.sampled_from(SEPARATORS),
    sign=st.sampled_from(MINUS + PLUS),
    between=st.lists(st.sampled_from(EDGES), max_size=2).map("".join),
)
def test_a_signed_amount_is_read_with_its_sign_when_signed_and_refused_otherwise(
    number, script, separator, sign, between
):
    typed = sign + between + written(number, script, separator)
    assert amount_from_text(typed, signed=True) == (-number if sign in MINUS else number)
    refused(typed)


@pytest.mark.parametrize(
    "typed, amount",
    [
        ("50000", 50_000),
        ("50,000", 50_000),
        (" 1 000 000 ", 1_000_000),
        ("۱٬۰۰۰٬۰۰۰", 1_000_000),  # Persian digits, Arabic thousands separator
        ("٥٠،٠٠٠", 50_000),  # Arabic-Indic digits, Arabic comma
        ("۵۰,۰۰۰", 50_000),  # Persian digits, a Latin comma
        ("1\u00a0000", 1_000),
        ("1\u202f000", 1_000),
        ("\u200f۱۲۳\u200e", 123),  # right-to-left and left-to-right marks around
        ("\u2067۵۰٬۰۰۰\u2069", 50_000),  # an isolate around, as some editors paste
        ("1'000'000", 1_000_000),
        ("007", 7),
        ("0" * 40 + "5", 5),  # leading zeros do not push the digits out
    ],
)
def test_an_amount_is_read_from_ascii_persian_or_arabic_digits_with_separators(typed, amount):
    assert amount_from_text(typed) == amount
    assert amount_from_text(typed, signed=True) == amount


@pytest.mark.parametrize(
    "typed, amount",
    [("-5000", -5000), ("\u22125,000", -5000), ("+7", 7), ("\u2212۵۰۰", -500), ("- 5", -5)],
)
def test_a_signed_amount_takes_a_plus_minus_or_unicode_minus_sign(typed, amount):
    assert amount_from_text(typed, signed=True) == amount


# --- separators where a person would not put them are refused ---------------------------------


def placed_rightly(length: int, positions: list[int]) -> bool:
    """The model: no separator at all, or one before every third digit from the right."""
    return not positions or sorted(positions) == list(range(length % 3 or 3, length, 3))


@settings(max_examples=600, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=1, max_size=12),
    script=st.sampled_from(sorted(SCRIPTS)),
    separator=st.sampled_from([*SEPARATORS, "_", ".", "\u066b"]),
    data=st.data(),
)
def test_separators_anywhere_but_between_groups_of_three_are_refused(
    digits, script, separator, data
):
    positions = data.draw(st.lists(st.integers(0, len(digits)), min_size=1, max_size=6))
    if separator.isspace():  # around the number a space is only a space
        positions = [p for p in positions if 0 < p < len(digits)]
    text = digits.translate(str.maketrans("0123456789", SCRIPTS[script]))
    for position in sorted(positions, reverse=True):
        text = text[:position] + separator + text[position:]
    if placed_rightly(len(digits), positions) and separator not in "_.\u066b":
        assert amount_from_text(text) == int(digits)
    else:
        refused(text)
        refused(text, signed=True)


@settings(max_examples=200, deadline=None)
@given(
    number=st.integers(10**6, 10**15),
    data=st.data(),
)
def test_a_number_mixing_two_kinds_of_separator_is_refused(number, data):
    groups = f"{number:,}".split(",")
    kinds = data.draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(groups) - 1))
    assume(len(set(kinds[: len(groups) - 1])) > 1)
    refused(groups[0] + "".join(k + g for k, g in zip(kinds, groups[1:], strict=False)))


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=2, max_size=12),
    data=st.data(),
)
def test_a_number_mixing_two_digit_scripts_is_refused(digits, data):
    scripts = data.draw(st.lists(st.sampled_from(sorted(SCRIPTS)), min_size=len(digits)))
    typed = "".join(SCRIPTS[s][int(d)] for s, d in zip(scripts, digits, strict=False))
    assume(not any(set(typed) <= set(script) for script in SCRIPTS.values()))
    refusal = refused(typed)
    assert "one kind of digits" in refusal.message


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=2, max_size=12),
    mark=st.sampled_from(MARKS),
    data=st.data(),
)
def test_an_invisible_mark_inside_the_digits_is_refused(digits, mark, data):
    position = data.draw(st.integers(1, len(digits) - 1))
    refused(digits[:position] + mark + digits[position:])


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=1, max_size=8),
    foreign=st.characters(categories=["Nd"]).filter(lambda ch: ch not in ACCEPTED_DIGITS),
    data=st.data(),
)
def test_a_digit_of_any_other_script_is_refused(digits, foreign, data):
    position = data.draw(st.integers(0, len(digits)))
    refused(digits[:position] + foreign + digits[position:])
    assert unicodedata.category(foreign) == "Nd"


@pytest.mark.parametrize(
    "typed",
    [
        "1,5",
        ",1000",
        "1,0,0,0",
        "1_000",
        "1 0 0 0",
        "1" + "\u066c" * 100,
        "1000,",
        "1,,000",
        "1,000,00",
        "10000,000",
        "1.000",
        "1,000\u066c000",
        "1,000 000",
        "1 000\u00a0000",
        "۱2۳",
        "1\u200e000",
        "\u202e0001",  # a right-to-left override shows 1000 for what is 1
        "\u202d5000",
    ],
    ids=lambda typed: ascii(typed)[:24],
)
def test_each_misreading_from_the_issue_is_refused(typed):
    refused(typed)
    refused(typed, signed=True)


@pytest.mark.parametrize("typed", ["-5000", "+5", "\u22125"])
def test_an_unsigned_amount_refuses_any_sign(typed):
    refused(typed)


@pytest.mark.parametrize(
    "typed",
    ["", "  ", "\u200f", "1.5", "abc", "1e3", "0x10", "５", "५", "²", "½", "--5", "+-5", "5-"]
    + ["-", ",", "- -5", "-,5", "5 -"],
)
def test_anything_but_a_whole_number_is_refused_naming_the_field(typed):
    for signed in (False, True):
        refusal = refused(typed, signed=signed)
        assert ("-50,000" in refusal.message) == signed


def test_a_persian_decimal_separator_is_refused_not_read_as_thousands():
    refused("۱٫۵")
    refused("۱٫۵۰۰")


# --- the range is parse_amount's job ---------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["9" * 5000, "۹" * 100, "1" + "0" * 30, "1" + ",000" * 2000],
    ids=["5000 nines", "100 persian", "10**30", "10**6000 grouped"],
)
def test_a_huge_number_is_a_range_error_from_parse_amount_not_a_crash(typed):
    amount = amount_from_text(typed)
    assert amount > MAX
    with pytest.raises(ValidationError, match="between 1 and") as refusal:
        parse_amount(amount, MAX)
    assert refusal.value.field == "amount"
    with pytest.raises(ValidationError, match="non-zero integer"):
        parse_signed_amount(amount_from_text("-" + typed, signed=True), MAX)


def test_zero_is_read_and_then_refused_by_the_range_checks():
    assert amount_from_text("0") == 0 == amount_from_text("\u2212۰", signed=True)
    with pytest.raises(ValidationError):
        parse_amount(amount_from_text("۰"), MAX)
    with pytest.raises(ValidationError):
        parse_signed_amount(amount_from_text("-0", signed=True), MAX)
