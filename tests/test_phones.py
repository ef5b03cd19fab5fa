"""Phone numbers: every form docs/api.md accepts becomes 09121234567; anything else is refused.

Only ASCII, Persian and Arabic-Indic digits count (docs/stack-notes.md, trap 11: int(),
str.isdigit() and regex \\d accept every Unicode digit, so the code must not).
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargebox.errors import ValidationError
from chargebox.phones import MAX_INPUT_LENGTH, normalize_phone

NORMAL = "09121234567"
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
ASCII = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
ACCEPTED_DIGITS = set("0123456789۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩")
RTL_MARKS = [
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
]

PREFIXED = ["09121234567", "9121234567", "+989121234567", "989121234567", "00989121234567"]
SPACED = [
    "0912 123 4567",
    "0912-123-4567",
    "+98 912 123 4567",
    "+98-912-123-4567",
    "0098 912-123-4567",
    " 09121234567 ",
    "98 912 1234567",
    "912 123 45 67",
]


@pytest.mark.parametrize("text", PREFIXED + SPACED)
def test_every_ascii_form_of_the_api_becomes_the_normal_form(text):
    assert normalize_phone(text) == NORMAL


@pytest.mark.parametrize("text", PREFIXED + SPACED)
def test_persian_digits_are_read_as_digits(text):
    assert normalize_phone(text.translate(PERSIAN)) == NORMAL


@pytest.mark.parametrize("text", PREFIXED + SPACED)
def test_arabic_indic_digits_are_read_as_digits(text):
    assert normalize_phone(text.translate(ARABIC_INDIC)) == NORMAL


def test_persian_and_arabic_indic_and_ascii_digits_may_be_mixed():
    assert normalize_phone("۰۹١٢1234567") == NORMAL


@pytest.mark.parametrize("mark", RTL_MARKS, ids=lambda m: f"U+{ord(m):04X}")
def test_bidi_marks_pasted_from_right_to_left_interfaces_are_ignored(mark):
    """Behind an RLM (or inside an RLE or RLI) spaced groups show right to left in a
    left-to-right field: read so where the number was written, charged as typed, and a
    documented form (tests/test_http_contract.py's ACCEPTED_FORMS)."""
    assert normalize_phone(f"{mark}+98 912{mark}123{mark}4567{mark}") == NORMAL
    assert normalize_phone(f"{mark}{NORMAL.translate(PERSIAN)}{mark}") == NORMAL
    assert normalize_phone(f" {mark}0912\u00a0123\u00a04567{mark} ") == NORMAL
    assert normalize_phone("٠٩١٢ ١٢٣ ٤٥٦٧") == NORMAL  # all Arabic-Indic, spaced


@pytest.mark.parametrize("override", ["\u202d", "\u202e"], ids=["LRO", "RLO"])
def test_a_bidi_override_is_refused_not_dropped(override):
    """0912 U+202E 1234567 shows as 09127654321 and would be charged as 09121234567."""
    with pytest.raises(ValidationError) as refused:
        normalize_phone(f"0912{override}1234567")
    assert refused.value.field == "phone"
    assert f"phone must not contain U+{ord(override):04X}" in refused.value.message
    assert "it shows the text in another order than it is written" in refused.value.message


@pytest.mark.parametrize("space", ["\u00a0", "\u2007", "\u202f"], ids=["nbsp", "figure", "narrow"])
def test_no_break_spaces_are_ignored_like_spaces(space):
    assert normalize_phone(f"{space}0912{space}123{space}4567{space}") == NORMAL


def test_all_rtl_marks_and_separators_together_are_ignored():
    marks = "".join(RTL_MARKS) + "\u00a0"
    assert normalize_phone(marks + "۰۰۹۸-۹۱۲\u00a0۱۲۳-۴۵۶۷" + marks) == NORMAL


def test_other_mobile_numbers_keep_their_own_digits():
    assert normalize_phone("+98 935 000 1122") == "09350001122"
    assert normalize_phone("٠٩٩٠٩٨٧٦٥٤٣") == "09909876543"


DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize("table", [DEVANAGARI, FULLWIDTH], ids=["devanagari", "fullwidth"])
def test_digits_of_other_scripts_are_refused(table):
    for text in PREFIXED:
        with pytest.raises(ValidationError) as refused:
            normalize_phone(text.translate(table))
        assert refused.value.field == "phone"


# Every Unicode decimal digit except ASCII, Persian and Arabic-Indic: Nd digits
# come in runs of ten from 0 to 9, so a run is named by its zero.
FOREIGN_ZEROS = [
    chr(code)
    for code in range(0x110000)
    if unicodedata.category(chr(code)) == "Nd"
    and unicodedata.decimal(chr(code)) == 0
    and chr(code) not in ACCEPTED_DIGITS
]


def _in_script(zero: str, digits: str) -> str:
    return "".join(chr(ord(zero) + int(d)) for d in digits)


def test_the_foreign_digits_cover_many_scripts_and_exclude_the_accepted_ones():
    assert len(FOREIGN_ZEROS) > 50
    assert "०" in FOREIGN_ZEROS and "０" in FOREIGN_ZEROS
    assert not {"0", "۰", "٠"} & set(FOREIGN_ZEROS)
    assert all(unicodedata.decimal(_in_script(z, "7")) == 7 for z in FOREIGN_ZEROS)


@settings(max_examples=200, deadline=None)
@given(
    zero=st.sampled_from(FOREIGN_ZEROS),
    position=st.integers(min_value=0, max_value=len(NORMAL) - 1),
    form=st.sampled_from(PREFIXED),
)
def test_one_unicode_digit_of_any_other_script_makes_a_number_invalid(zero, position, form):
    digit_positions = [i for i, ch in enumerate(form) if ch.isascii() and ch.isdigit()]
    index = digit_positions[position % len(digit_positions)]
    # The foreign digit has the value of the one it replaces: only its script is wrong.
    text = form[:index] + _in_script(zero, form[index]) + form[index + 1 :]
    with pytest.raises(ValidationError):
        normalize_phone(text)


@settings(max_examples=100, deadline=None)
@given(zero=st.sampled_from(FOREIGN_ZEROS), form=st.sampled_from(PREFIXED))
def test_a_number_written_wholly_in_another_script_is_refused(zero, form):
    text = "".join(_in_script(zero, ch) if ch.isdigit() else ch for ch in form)
    assert int(text.lstrip("+")) == int(form.lstrip("+"))  # Python itself reads it (trap 11)
    with pytest.raises(ValidationError):
        normalize_phone(text)


@pytest.mark.parametrize(
    "text",
    [
        "02112345678",  # Tehran landline
        "+982112345678",  # landline, international
        "2112345678",
        "08121234567",  # mobiles start with 09
        "8121234567",
        "0912123456",  # one digit short
        "912123456",
        "091212345678",  # one digit long
        "+9891212345678",
        "00989121234567890",
        "+9809121234567",  # trunk 0 after the country code
        "0989121234567",
        "+19121234567",  # another country
        "0912abc4567",
        "0912I234567",
        "phone",
        "",
        " ",
        "-",
        "+",
        "\u200e",
        "0912.123.4567",
        "(0912) 123 4567",
        "0912/1234567",
        "0912_123_4567",
        "0912\n1234567",
        "0912\u2009123\u20094567",  # thin space is not one of the separators
    ],
)
def test_anything_but_an_iranian_mobile_is_refused(text):
    with pytest.raises(ValidationError) as refused:
        normalize_phone(text)
    assert refused.value.field == "phone"
    assert refused.value.code == "validation_error"


@pytest.mark.parametrize(
    "value",
    [
        9121234567,
        9.121234567e9,
        None,
        True,
        b"09121234567",
        ["09121234567"],
        {"phone": "09121234567"},
    ],
    ids=repr,
)
def test_a_value_that_is_not_a_string_is_refused(value):
    with pytest.raises(ValidationError) as refused:
        normalize_phone(value)
    assert refused.value.field == "phone"


@pytest.mark.parametrize(
    "text",
    [
        " " * 10_000 + NORMAL,
        "-" * (MAX_INPUT_LENGTH + 1 - len(NORMAL)) + NORMAL,
        "\u200e" * 1_000_000 + NORMAL,
        "9" * 1_000_000,
    ],
    ids=["spaces", "just-over-limit", "million-marks", "million-nines"],
)
def test_absurdly_long_input_is_refused(text):
    with pytest.raises(ValidationError):
        normalize_phone(text)


def test_input_at_the_length_limit_is_still_read():
    text = " " * (MAX_INPUT_LENGTH - len(NORMAL)) + NORMAL
    assert len(text) == MAX_INPUT_LENGTH
    assert normalize_phone(text) == NORMAL


def test_a_refusal_names_the_field_it_was_asked_about():
    with pytest.raises(ValidationError) as refused:
        normalize_phone("02112345678", field="number")
    assert refused.value.field == "number"


# What may stand between a number's characters: the spaces, dashes and invisible marks
# that docs/api.md says are dropped (the overrides are refused: not here).
SEPARATORS = [" ", "\t", "-", "\u00a0", "\u2007", "\u202f", "\u200c", "\u200d", "\u200e",
              "\u200f"]  # fmt: skip
SCRIPTS = [str.maketrans("", ""), PERSIAN, ARABIC_INDIC]


@st.composite
def spelled(draw) -> tuple[str, str]:
    """A documented spelling of a mobile number, and the number: a prefix (none, 0, 98,
    +98, 0098), 9 and nine digits, all in one script, separators anywhere (also before the
    first character and after the last)."""
    core = "9" + draw(st.text("0123456789", min_size=9, max_size=9))
    digits = draw(st.sampled_from(["", "0", "98", "+98", "0098"])) + core
    digits = digits.translate(draw(st.sampled_from(SCRIPTS)))
    gaps = draw(st.lists(st.sampled_from(["", "", *SEPARATORS]), min_size=len(digits) + 1,
                         max_size=len(digits) + 1))  # fmt: skip
    typed = "".join(gap + ch for gap, ch in zip(gaps[:-1], digits, strict=True)) + gaps[-1]
    return typed, "0" + core


@settings(max_examples=300, deadline=None)
@given(case=spelled())
def test_every_documented_spelling_is_accepted_as_its_number(case):
    typed, number = case
    assert normalize_phone(typed) == number


@st.composite
def near_misses(draw) -> str:
    """A documented spelling with a few characters of any kind put in, taken out or
    changed (which may or may not still be a number), or any text at all."""
    typed = list(draw(spelled())[0])
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(typed)))
        change = draw(st.sampled_from(["put", "take", "change"]))
        if change == "put" or at == len(typed):
            typed.insert(at, draw(st.characters()))
        elif change == "take":
            del typed[at]
        else:
            typed[at] = draw(st.characters())
    return "".join(typed)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(near_misses(), st.text(max_size=30)))
def test_whatever_is_accepted_comes_out_in_normal_form(text):
    """Accepted or refused, never anything else; accepted, in normal form, and its ten
    digits are the input's last ten (in any of the three scripts)."""
    try:
        number = normalize_phone(text)
    except ValidationError:
        return
    assert len(number) == 11
    assert number.startswith("09")
    assert all(ch in "0123456789" for ch in number)
    typed = [ch for ch in text.translate(ASCII) if ch in "0123456789"]
    assert "".join(typed).endswith(number[1:])


@pytest.mark.parametrize("typed", ["0912 ١٢٣ ٤٥٦٧", "0912-١٢٣-٤٥٦٧", "٠٩١٢ ١٢٣ 4567",
                                   "+98 912 ١٢٣ ٤٥٦٧", "۰۹۱۲ ١٢٣۴۵۶۷"])  # fmt: skip
def test_arabic_indic_digits_mixed_with_other_digits_are_refused(typed):
    """Arabic-Indic digits are right-to-left numbers (bidi AN): beside ASCII or Persian
    digits, split, their groups show in a third order, 0912 ١٢٣ ٤٥٦٧ as 0912 ٤٥٦٧ ١٢٣
    (helper-71). Unsplit they show as typed (test_..._may_be_mixed)."""
    with pytest.raises(ValidationError) as refused:
        normalize_phone(typed)
    assert "mixes Arabic-Indic digits with other digits, split" in refused.value.message


def test_a_right_to_left_mark_with_no_digits_is_told_it_is_no_number():
    with pytest.raises(ValidationError, match="must be an Iranian mobile number such as"):
        normalize_phone("\u200fتلفن")
