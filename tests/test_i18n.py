"""The pages' catalogue is whole, and numbers, amounts and times read right in both languages.

Babel extracts every string the code and the templates put in `_()` or `ngettext()`
(babel.cfg, the same extraction as the command in chargebox/web/i18n.py), and each one
must have a Persian translation, not fuzzy, with the same placeholders; the compiled
.mo the service reads must say what the .po says.
"""

from __future__ import annotations

import datetime
import gettext
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from chargebox.web import i18n

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\{[a-z_]*\}")
FA, EN = i18n.LANGUAGE["fa"], i18n.LANGUAGE["en"]


def extracted(domain: str = "messages") -> dict[object, list[str]]:
    """Each msgid of the code and templates (a tuple for a plural), with where it is."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    found: dict[object, list[str]] = {}
    for filename, line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        found.setdefault(message, []).append(f"{filename}:{line}")
    return found


def persian_po():
    path = i18n.LOCALE / "fa" / "LC_MESSAGES" / "messages.po"
    with open(path, "rb") as po:
        return read_po(po, locale="fa")


def test_every_string_of_the_pages_has_a_persian_translation():
    catalogue = persian_po()
    missing, fuzzy = [], []
    for message, places in extracted().items():
        entry = catalogue.get(message[0] if isinstance(message, tuple) else message)
        texts = [] if entry is None else entry.string
        texts = list(texts) if isinstance(texts, tuple) else [texts]
        if entry is None or not all(texts):
            missing.append(f"{message!r} ({places[0]})")
        elif entry.fuzzy:
            fuzzy.append(repr(message))
    assert not missing, "untranslated (see chargebox/web/i18n.py):\n" + "\n".join(missing)
    assert not fuzzy, "fuzzy translations: " + ", ".join(fuzzy)


def test_the_catalogue_keeps_no_string_the_code_no_longer_uses():
    used = {m[0] if isinstance(m, tuple) else m for m in extracted()}
    ids = [m[0] if isinstance(m, tuple) else m for m in (e.id for e in persian_po()) if m]
    stale = [message for message in ids if message not in used]  # a plural: by its singular
    assert not stale, f"in messages.po but not in the code: {stale}"


def test_each_translation_keeps_the_placeholders_of_its_english():
    for entry in persian_po():
        if not entry.id:
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == wanted, (entry.id, text)


def test_the_compiled_catalogue_says_what_the_po_says():
    path = i18n.LOCALE / "fa" / "LC_MESSAGES" / "messages.mo"
    with open(path, "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for entry in persian_po():
        if not entry.id or entry.fuzzy:
            continue
        if isinstance(entry.id, tuple):
            for count, text in zip((1, 2), entry.string, strict=False):
                assert compiled.ngettext(*entry.id, count) == text, entry.id
        else:
            assert compiled.gettext(entry.id) == entry.string, (
                f"{entry.id!r}: recompile with pybabel compile (chargebox/web/i18n.py)"
            )


def test_the_template_extraction_finds_singulars_plurals_and_both_quotes():
    class Source:
        def read(self):
            first = b"<p>{{_('One')}} {{_(\"It's\")}}</p>\n"
            return first + b"% x = ngettext('{n} sale', '{n} sales', n)"

    found = list(i18n.extract_templates(Source(), None, None, None))
    assert found == [
        (1, "_", "One", []),
        (1, "_", "It's", []),
        (2, "ngettext", ("{n} sale", "{n} sales"), []),
    ]


# --- numbers, amounts, times -------------------------------------------------------------


def test_amounts_read_in_each_language():
    assert EN.toman(1_250_000) == "1,250,000 toman"
    assert FA.toman(1_250_000) == "۱٬۲۵۰٬۰۰۰ تومان"
    assert FA.plain_number(1405) == "۱۴۰۵"
    assert FA.signed(-5_000) == "\u2066\u2212۵٬۰۰۰\u2069"
    assert EN.signed(5_000) == "\u2066+5,000\u2069"


@given(st.integers(min_value=0, max_value=10**15))
def test_a_persian_number_is_the_english_one_in_persian_digits(value):
    shown = FA.number(value)
    assert shown.translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹٬", "0123456789,")) == EN.number(value)
    assert not re.search(r"[0-9,]", shown)


@pytest.mark.parametrize(
    ("stamp", "english", "persian"),
    [
        # 23:33 UTC on 30 November is 03:03 on 1 December in Tehran: 10 Azar 1405.
        ("2026-11-30T23:33:00.000000Z", "2026-12-01 03:03", "۱۴۰۵/۰۹/۱۰ ۰۳:۰۳"),
        # Tehran midnight is 20:30 UTC the day before.
        ("2026-11-30T20:29:59.000000Z", "2026-11-30 23:59", "۱۴۰۵/۰۹/۰۹ ۲۳:۵۹"),
        ("2026-11-30T20:30:00.000000Z", "2026-12-01 00:00", "۱۴۰۵/۰۹/۱۰ ۰۰:۰۰"),
        # Nowruz: 1 Farvardin 1405 is 21 March 2026.
        ("2026-03-20T21:00:00.000000Z", "2026-03-21 00:30", "۱۴۰۵/۰۱/۰۱ ۰۰:۳۰"),
    ],
)
def test_times_are_shown_in_tehran_jalali_in_persian(stamp, english, persian):
    assert EN.when(stamp) == english
    assert FA.when(stamp) == persian
    assert EN.when(None) == FA.when("") == ""


def test_a_day_is_jalali_in_persian():
    assert FA.day(datetime.date(2026, 12, 1)) == "۱۴۰۵/۰۹/۱۰"
    assert EN.day(datetime.date(2026, 12, 1)) == "2026-12-01"


# --- choosing the language ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cookie", "accepted", "chosen"),
    [
        (None, {}, "en"),  # curl, API clients
        (None, {"fa-ir": 1000, "fa": 900, "en-us": 800}, "fa"),
        (None, {"en-us": 1000, "fa": 900}, "en"),
        (None, {"de": 1000, "fa": 500}, "fa"),
        (None, {"fa": 0, "en": 100}, "en"),  # q=0: not acceptable
        (None, {"de": 1000}, "en"),
        (None, {"*": 1000}, "en"),
        ("fa", {"en": 1000}, "fa"),  # the visitor's own choice wins
        ("en", {"fa": 1000}, "en"),
        ("xx", {"fa": 1000}, "fa"),  # a cookie we do not know is ignored
    ],
)
def test_the_language_is_the_visitors_choice_else_its_accept_language_else_english(
    cookie, accepted, chosen
):
    assert i18n.choose(cookie, accepted).code == chosen


def test_directions():
    assert (FA.direction, EN.direction) == ("rtl", "ltr")
