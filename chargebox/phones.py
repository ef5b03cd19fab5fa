"""Normalising Iranian mobile numbers to the form 09121234567 (pure, no I/O).

Only ASCII, Persian (U+06F0-06F9) and Arabic-Indic (U+0660-0669) digits are
digits here: Python's int(), str.isdigit() and regex \\d accept every Unicode
digit, so none of them is used. Bidi marks and no-break spaces pasted from
right-to-left interfaces are dropped before parsing; a bidi override is refused:
`0912\\u202e1234567` would be charged as 09121234567 and show as 09127654321.
Arabic-Indic digits are right-to-left numbers (bidi AN): mixed with other digits and
split they show a third order (`0912 ١٢٣ ٤٥٦٧` as `0912 ٤٥٦٧ ١٢٣`), so such a mix is
refused (unsplit, `۰۹١٢1234567`, it shows as typed). A number split by spaces behind
an RLM, or all in Arabic-Indic digits, shows its groups right to left in a
left-to-right field: it is read so where it was written (a Persian or Arabic text), it
is charged in the order it was typed, and it is a documented form, so it is accepted.
"""

from __future__ import annotations

import re

from chargebox.errors import ValidationError
from chargebox.text import refuse_overrides

# Persian and Arabic-Indic digits to ASCII; money.py reads typed amounts with it too.
ASCII_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
# Invisible marks that right-to-left UIs add (not the overrides: refused), and the
# separators we accept (spaces: the plain one, tab, and the no-break ones: U+00A0, figure
# U+2007, narrow U+202F).
_IGNORED = dict.fromkeys(
    map(
        ord,
        "\u200c\u200d\u200e\u200f\u202a\u202b\u202c"
        "\u2066\u2067\u2068\u2069\ufeff\u00a0\u2007\u202f \t-",
    )
)
_MOBILE = re.compile(r"(?:\+98|0098|98|0)?(9[0-9]{9})", re.ASCII)
_ARABIC_INDIC = frozenset("٠١٢٣٤٥٦٧٨٩")
_LEFT_TO_RIGHT_DIGITS = frozenset("0123456789۰۱۲۳۴۵۶۷۸۹")  # bidi EN: ASCII and Persian
_DIGITS = _ARABIC_INDIC | _LEFT_TO_RIGHT_DIGITS
MAX_INPUT_LENGTH = 64


def normalize_phone(value: object, field: str = "phone") -> str:
    """Return the normal form `09XXXXXXXXX` or raise ValidationError."""
    if not isinstance(value, str) or len(value) > MAX_INPUT_LENGTH:
        raise ValidationError("{field} must be a string holding an Iranian mobile number", field)
    if not value.isascii():  # no direction at play in ASCII
        refuse_overrides(value, field)
        _refuse_reordered_groups(value, field)
    compact = value.translate(_IGNORED).translate(ASCII_DIGITS)
    match = _MOBILE.fullmatch(compact)
    if match is None:
        raise ValidationError("{field} must be an Iranian mobile number such as 09121234567", field)
    return "0" + match.group(1)


def _refuse_reordered_groups(value: str, field: str) -> None:
    at = [i for i, ch in enumerate(value) if ch in _DIGITS]
    digits = value[at[0] : at[-1] + 1] if at else ""
    mixed = not _ARABIC_INDIC.isdisjoint(digits) and not _LEFT_TO_RIGHT_DIGITS.isdisjoint(digits)
    if mixed and not _DIGITS.issuperset(digits):
        raise ValidationError(
            "{field} mixes Arabic-Indic digits with other digits, split: its digit groups"
            " may show in another order than they are read; write it in one script",
            field,
        )
