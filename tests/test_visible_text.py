"""Seller names and adjustment reasons must show what they say (`chargebox.text`).

A name of invisible characters renders blank on every page; a right-to-left
override makes `\\u202egnp.exe` read `exe.png`. Both are refused, by the function,
by the service (nothing written) and over HTTP (422 naming the field, nothing
written). What Persian writing needs, ZWNJ and LRM/RLM, is kept.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargebox.errors import ValidationError
from chargebox.text import clean_text
from tests.support import database_of, db_snapshot
from tests.web_support import ADMIN, refused, text_of, value_of

# Each character of the issue: alone it shows nothing.
ISSUE_INVISIBLES = ["\u200b", "\ufeff", "\u200e", "\u061c", "\u034f", "\u115f", "\u2800", "\u3164"]
# Blank-looking letters and symbols, which Unicode files as letters (Lo) or symbols (So).
FILLERS = ["\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u180e"]
HARMLESS_MARKS = ["\u200c", "\u200d", "\u200e", "\u200f"]  # ZWNJ, ZWJ, LRM, RLM (not ALM)
PAIRS = [("\u2066", "\u2069"), ("\u2067", "\u2069"), ("\u2068", "\u2069")]  # isolates
PAIRS += [("\u202a", "\u202c"), ("\u202b", "\u202c")]  # embeddings
OPENERS, CLOSERS = [p[0] for p in PAIRS], ["\u2069", "\u202c"]
OVERRIDES = ["\u202d", "\u202e"]


def refusal(text, field: str = "name") -> ValidationError:
    with pytest.raises(ValidationError) as refused_text:
        clean_text(text, field, 200)
    assert refused_text.value.field == field
    return refused_text.value


# --- examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("invisible", sorted(set(ISSUE_INVISIBLES + FILLERS)), ids=ascii)
def test_a_name_of_only_an_invisible_character_is_refused_as_showing_nothing(invisible):
    for text in (invisible, invisible * 3, f" {invisible}\u200b{invisible} "):
        assert "shows nothing" in refusal(text).message


def test_a_name_of_every_invisible_character_of_the_issue_together_is_refused():
    assert "shows nothing" in refusal("".join(ISSUE_INVISIBLES)).message


@pytest.mark.parametrize("text", ["\u0301", "\u20dd", "\u3000\u200b\u2029", "\u00ad", "\U000e0041"])
def test_lone_combining_marks_separators_and_tags_show_nothing(text):
    assert "shows nothing" in refusal(text).message


def test_a_right_to_left_override_that_makes_gnp_exe_read_exe_png_is_refused():
    message = refusal("\u202egnp.exe", "reason").message
    assert "U+202E" in message and "right-to-left override" in message


@pytest.mark.parametrize(
    "text",
    ["a\u202db", "\u2067abc", "abc\u2069", "\u202babc", "a\u202c", "\u2066a\u202c"]
    + ["\u2066\u202ba\u2069\u202c", "\u2069a\u2066", "\u2066\u2066a\u2069"],
    ids=ascii,
)
def test_overrides_and_unbalanced_or_crossed_direction_controls_are_refused(text):
    refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "می\u200cخواهم",  # ZWNJ, the Persian half-space
        "فروشگاه\u200cهای تهران",
        "Ali\u200eReza",
        "\u200fعلی",  # an RLM before the name
        "\u2067علی\u2069 shop",
        "\u202bعلی\u202c",
        "\u2066\u2067a\u2069b\u2069",
        "\u3164x",  # a filler beside a letter: the letter shows
        "😀",
    ],
    ids=ascii,
)
def test_persian_half_spaces_marks_and_balanced_direction_controls_are_kept(text):
    assert clean_text(text, "name", 200) == text


# --- properties -------------------------------------------------------------------------------

INVISIBLE = st.characters(categories=["Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cc"])
INVISIBLE |= st.sampled_from(FILLERS)
LETTER = st.characters(categories=["L"]).filter(lambda ch: ch not in FILLERS)
MARKED = st.tuples(
    st.text(st.sampled_from(HARMLESS_MARKS), max_size=2),
    LETTER,
    st.text(LETTER | st.sampled_from(HARMLESS_MARKS + [" "]), max_size=4),
).map("".join)
BALANCED = st.recursive(
    MARKED,
    lambda inner: (
        st.tuples(st.sampled_from(PAIRS), inner).map(lambda t: t[0][0] + t[1] + t[0][1])
        | st.lists(inner, min_size=2, max_size=3).map("".join)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(text=st.text(INVISIBLE, min_size=1, max_size=20))
def test_any_text_built_only_from_invisible_characters_is_refused(text):
    refusal(text)


@settings(max_examples=300, deadline=None)
@given(text=BALANCED)
def test_any_text_with_a_visible_letter_and_balanced_isolates_is_accepted(text):
    assert clean_text(text, "name", 200) == unicodedata.normalize("NFC", text).strip()


@settings(max_examples=200, deadline=None)
@given(text=BALANCED, lone=st.sampled_from(OPENERS + CLOSERS + OVERRIDES), data=st.data())
def test_one_lone_direction_control_or_override_anywhere_is_refused(text, lone, data):
    position = data.draw(st.integers(0, len(text)))
    refusal(text[:position] + lone + text[position:])


# --- through the service and over HTTP: refused, nothing written -------------------------------


@pytest.mark.parametrize("name", ISSUE_INVISIBLES + ["\u202egnp.exe"], ids=ascii)
def test_the_service_creates_no_seller_whose_name_shows_nothing_or_is_reversed(
    service, config, name
):
    before = db_snapshot(database_of(config))
    with pytest.raises(ValidationError) as refused_name:
        service.create_seller(name)
    assert refused_name.value.field == "name"
    assert db_snapshot(database_of(config)) == before


def error_of(response, field: str) -> dict:
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("validation_error", field)
    return error


@pytest.mark.parametrize(
    "name", ["\u200b\ufeff\u200e\u061c\u034f\u115f\u2800\u3164", "\u202eroot"], ids=ascii
)
def test_post_sellers_with_a_name_that_shows_nothing_or_overrides_is_422_and_writes_nothing(
    server, admin, name
):
    before = db_snapshot(server.db_path)
    error_of(admin.post("/api/sellers", {"name": name}), "name")
    assert db_snapshot(server.db_path) == before


@pytest.mark.parametrize("reason", ["\u202egnp.exe", "\u200b\u200b", "fix\u2067"], ids=ascii)
def test_an_adjustment_whose_reason_shows_nothing_or_reorders_is_422_and_writes_nothing(
    server, admin, make_seller, reason
):
    seller, _ = make_seller(credit=5_000)
    path = f"/api/sellers/{seller['id']}/adjustments"
    before = db_snapshot(server.db_path)
    error_of(admin.post(path, {"amount": 1_000, "reason": reason}), "reason")
    assert db_snapshot(server.db_path) == before


def test_a_persian_name_with_a_half_space_is_created_as_typed(admin):
    created = admin.post("/api/sellers", {"name": "فروشگاه می\u200cخواهم"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "فروشگاه می\u200cخواهم"


def test_the_admins_form_refuses_a_blank_name_beside_the_field_keeping_it(world):
    admin = world.browser(ADMIN)
    answer = refused(world.server, 422, admin.post_form, "/admin/sellers", {"name": "\u3164"})
    assert "shows nothing" in text_of(answer.text, "seller-name-error")
    assert value_of(answer.text, "seller-name") == "\u3164"
