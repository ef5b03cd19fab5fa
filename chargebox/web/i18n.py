"""The pages' two languages: Persian (right to left, Persian digits, Jalali dates) and English.

A page's language is the visitor's choice, remembered in the `lang` cookie, or else the
best of its `Accept-Language` that we speak, or else English (API clients and `curl` send
none, and the JSON API stays English whatever is asked). Everything a page shows in
words comes from a message catalogue, gettext through Babel:

    chargebox/web/locale/messages.pot                 the English strings, extracted
    chargebox/web/locale/fa/LC_MESSAGES/messages.po   their Persian, edited by hand
    chargebox/web/locale/fa/LC_MESSAGES/messages.mo   what the service reads (compiled)

A new string is written in English inside `_()` (in a template: `{{_('...')}}`, or
`ngettext(singular, plural, n)` for a count; in a page handler: `html.gettext('...')`;
in a table of fixed texts: `N_('...')`, translated where shown), then:

    pybabel extract -F babel.cfg --project chargebox --no-location --sort-output \
        -o chargebox/web/locale/messages.pot .
    pybabel update -i chargebox/web/locale/messages.pot -d chargebox/web/locale -D messages
    (translate the new entries of messages.po)
    pybabel compile -d chargebox/web/locale -D messages

A ChargeboxError's message has a domain of its own, `errors`, made the same way from
babel-errors.cfg (chargebox/web/refusals.py says how). tests/test_i18n.py checks both
domains: it fails while a string in the code has no Persian, a translation is fuzzy or
drops a placeholder, or the .mo is older than the .po. The service needs only the
standard library's `gettext` to read the .mo; Babel is a tool of the test extra.

Numbers, amounts and times are formatted here too, never in a template: Persian shows
`۵۰٬۰۰۰ تومان` and Jalali dates (`۱۴۰۵/۰۹/۱۰ ۰۳:۰۳`), English `50,000 toman` and
Gregorian ones; both in Asia/Tehran time, where the people who read them are.
Pure: no request, no bottle; `html.language()` picks the request's language.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import functools
import gettext
import re
from collections.abc import Iterator
from pathlib import Path

import jdatetime

from chargebox.clock import parse
from chargebox.periods import TEHRAN

LOCALE = Path(__file__).parent / "locale"
LANGUAGES = ("fa", "en")  # the order of the language switch
DEFAULT = "en"
COOKIE = "lang"
NAMES = {"fa": "فارسی", "en": "English"}  # each language's name in itself
_PERSIAN_DIGITS = str.maketrans("0123456789,", "۰۱۲۳۴۵۶۷۸۹٬")


def N_(message: str) -> str:
    """Marks a string for the catalogue where it is written (a table of fixed texts);
    it is translated where it is shown, in that page's language."""
    return message


def isolate(text: str) -> str:
    """User text inside a sentence, wrapped in bidi isolates (FSI ... PDI) so that a
    right-to-left name or reason cannot reorder the words around it."""
    return f"\u2068{text}\u2069"


@functools.cache
def catalogue(code: str, domain: str = "messages") -> gettext.NullTranslations:
    """The compiled catalogue of one language and domain; English is the source itself."""
    if code == "en":
        return gettext.NullTranslations()
    return gettext.translation(domain, LOCALE, languages=[code])


@dataclasses.dataclass(frozen=True)
class Language:
    """One page's language: its words, its direction, and how it writes numbers and times."""

    code: str

    @property
    def direction(self) -> str:
        return "rtl" if self.code == "fa" else "ltr"

    def gettext(self, message: str) -> str:
        return catalogue(self.code).gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        """The form of a sentence for `count` things; `{n}` in it is the count, written
        in this language's digits."""
        chosen = catalogue(self.code).ngettext(singular, plural, count)
        return chosen.replace("{n}", self.number(count))

    def digits(self, text: str) -> str:
        """Latin digits (and the comma between thousands) in this language's script."""
        return text.translate(_PERSIAN_DIGITS) if self.code == "fa" else text

    def number(self, value: int) -> str:
        """An integer with its thousands separated: `50,000`, `۵۰٬۰۰۰`. A negative one in
        Persian as `signed` writes it (`−۵۰٬۰۰۰` isolated left to right), since `-۵۰٬۰۰۰`
        alone would show as `۵۰٬۰۰۰-` in a right-to-left line."""
        if value < 0 and self.direction == "rtl":
            return self.signed(value)
        return self.digits(f"{value:,}")

    def plain_number(self, value: int) -> str:
        """An integer without separators (an id, a count of one digit group)."""
        return self.digits(str(value))

    def toman(self, amount: int) -> str:
        return self.gettext("{amount} toman").format(amount=self.number(amount))

    def signed(self, amount: int) -> str:
        """A change of balance with its sign: `+50,000`, `−50,000` (U+2212); in Persian
        isolated left to right, so that a right-to-left line keeps the sign on the number's
        left as in `−۵۰٬۰۰۰`."""
        sign = "+" if amount > 0 else "\u2212"
        shown = f"{sign}{self.number(abs(amount))}"
        return f"\u2066{shown}\u2069" if self.direction == "rtl" else shown

    def when(self, stamp: str | None) -> str:
        """A stored UTC stamp as date and time in Tehran: `2026-12-01 03:03`, or
        Jalali `۱۴۰۵/۰۹/۱۰ ۰۳:۰۳`; '' for none."""
        if not stamp:
            return ""
        moment = parse(stamp).astimezone(TEHRAN)
        if self.code == "fa":
            shown = jdatetime.datetime.fromgregorian(datetime=moment)
            return self.digits(shown.strftime("%Y/%m/%d %H:%M"))
        return moment.strftime("%Y-%m-%d %H:%M")

    def today(self) -> str:
        """Today in Tehran, as `day` writes it (a date field's example)."""
        return self.day(datetime.datetime.now(TEHRAN).date())

    def day(self, day: datetime.date) -> str:
        """A Tehran calendar day: `2026-12-01`, or Jalali `۱۴۰۵/۰۹/۱۰`."""
        if self.code == "fa":
            return self.digits(jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d"))
        return day.isoformat()


LANGUAGE = {code: Language(code) for code in LANGUAGES}


def choose(cookie: str | None, accepted: dict[str, int]) -> Language:
    """The visitor's language: the one it chose (`cookie`), or the one it accepts most
    (`accepted`: each Accept-Language tag, lower case, with its quality in thousandths;
    `fa-IR` counts as `fa`; the first of equals wins), or English."""
    if cookie in LANGUAGE:
        return LANGUAGE[cookie]
    best, best_quality = DEFAULT, 0
    for tag, quality in accepted.items():  # in the header's order
        code = tag.partition("-")[0].strip()
        if code in LANGUAGE and quality > best_quality:
            best, best_quality = code, quality
    return LANGUAGE[best]


# --- for Babel's extraction (babel.cfg): the strings of bottle's templates ------------------

_CALL = re.compile(
    r"""\b(_|ngettext)\(\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r"""(?:\s*,\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"))?"""
)


def extract_templates(fileobj, keywords, comment_tags, options) -> Iterator[tuple]:
    """Babel's extraction method for views/*.tpl: each `_('...')` and
    `ngettext('...', '...', n)` in a template, with its line."""
    for number, line in enumerate(fileobj.read().decode("utf-8").splitlines(), start=1):
        for found in _CALL.finditer(line):
            function, first, second = found.groups()
            texts = tuple(ast.literal_eval(text) for text in (first, second) if text)
            yield number, function, texts if function == "ngettext" else texts[0], []
