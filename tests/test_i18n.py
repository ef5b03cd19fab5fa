"""The pages' catalogues are whole, and numbers, amounts and times read right in both languages.

Two gettext domains, each extracted by Babel with its own mapping file (the same
extraction as the commands in chargebox/web/i18n.py and chargebox/web/refusals.py):
`messages`, every string the code and the templates put in `_()` or `ngettext()`
(babel.cfg), and `errors`, every message of a ChargeboxError a page may show
(babel-errors.cfg). Each string must have a Persian translation, not fuzzy, with the
same placeholders; the compiled .mo the service reads must say what the .po says.
"""

from __future__ import annotations

import datetime
import gettext
import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from chargebox.web import i18n

ROOT = Path(__file__).resolve().parent.parent
FA, EN = i18n.LANGUAGE["fa"], i18n.LANGUAGE["en"]
# Each domain and the mapping file its extraction reads.
DOMAINS = {"messages": "babel.cfg", "errors": "babel-errors.cfg"}
domains = pytest.mark.parametrize("domain", DOMAINS)


def extracted(domain: str) -> dict[object, list[str]]:
    """Each msgid of the domain (a tuple for a plural), with where it is."""
    with open(ROOT / DOMAINS[domain], encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    found: dict[object, list[str]] = {}
    for filename, line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        found.setdefault(message, []).append(f"{filename}:{line}")
    return found


def singular(message):  # a plural's msgid is (singular, plural)
    return message[0] if isinstance(message, tuple) else message


def persian_po(domain: str):
    path = i18n.LOCALE / "fa" / "LC_MESSAGES" / f"{domain}.po"
    with open(path, "rb") as po:
        return read_po(po, locale="fa")


@domains
def test_every_string_of_the_pages_has_a_persian_translation(domain):
    catalogue = persian_po(domain)
    missing, fuzzy = [], []
    for message, places in extracted(domain).items():
        entry = catalogue.get(singular(message))
        texts = [] if entry is None else entry.string
        texts = list(texts) if isinstance(texts, tuple) else [texts]
        if entry is None or not all(texts):
            missing.append(f"{message!r} ({places[0]})")
        elif entry.fuzzy:
            fuzzy.append(repr(message))
    assert not missing, f"untranslated in {domain}.po (see chargebox/web/i18n.py):\n" + "\n".join(
        missing
    )
    assert not fuzzy, "fuzzy translations: " + ", ".join(fuzzy)


@domains
def test_the_catalogue_keeps_no_string_the_code_no_longer_uses(domain):
    used = {singular(m) for m in extracted(domain)}
    stale = [singular(e.id) for e in persian_po(domain) if e.id and singular(e.id) not in used]
    assert not stale, f"in {domain}.po but not in the code: {stale}"


def placeholders(text: str) -> tuple[set[tuple[str, str]], set[str]]:
    """A format string's placeholders as (name, format spec), and the conversions it uses."""
    fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text)]
    named = {(name, spec) for name, spec, _ in fields if name is not None}
    return named, {conv for name, _, conv in fields if name is not None and conv}


@domains
def test_each_translation_keeps_the_placeholders_of_its_english(domain):
    """The same names with the same format specs (`{amount:,}` stays `{amount:,}`: the
    number is written the same way, in Persian digits); a translation converts nothing:
    where the English says `{label!r}`, the Persian quotes «{label}» itself."""
    for entry in persian_po(domain):
        if not entry.id:
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        wanted, _ = placeholders(ids[-1])
        for text in strings:
            named, conversions = placeholders(text)
            assert named == wanted, (entry.id, text)
            assert not conversions, f"{text!r}: quote «{{name}}» instead of {{name!r}}"


@domains
def test_the_compiled_catalogue_says_what_the_po_says(domain):
    path = i18n.LOCALE / "fa" / "LC_MESSAGES" / f"{domain}.mo"
    with open(path, "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for entry in persian_po(domain):
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
    assert EN.signed(5_000) == "+5,000"  # a left-to-right line needs no isolate


def test_a_negative_number_keeps_its_minus_on_the_left_in_persian():
    # An ASCII hyphen before Persian digits shows as ۵٬۰۰۰- in a right-to-left line.
    assert FA.number(-5_000) == "\u2066\u2212۵٬۰۰۰\u2069" == FA.signed(-5_000)
    assert FA.toman(-5_000) == "\u2066\u2212۵٬۰۰۰\u2069 تومان"
    assert FA.number(0) == "۰" and FA.number(5_000) == "۵٬۰۰۰"
    assert EN.number(-5_000) == "-5,000"  # a left-to-right line reads it right as it is


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
