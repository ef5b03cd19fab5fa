"""Integer toman amounts: parsing, validation and the limits (pure, no I/O).

Money is a Python `int` here and everywhere else. `bool` is an `int` subclass
and is refused explicitly, as are floats, strings and None, whatever they hold.
"""

from __future__ import annotations

import re

from chargebox.config import MAX_BALANCE
from chargebox.errors import ValidationError, phrase
from chargebox.phones import ASCII_DIGITS

# A typed amount: digits of one script (Python's \d and int() take every script's
# digits, so none of them is used), thousands in groups of three split by one kind of
# separator: comma, Arabic comma (U+060C), Arabic thousands separator (U+066C),
# apostrophe, space or no-break space (U+00A0, U+202F). Never `_`, `.` or the Arabic
# decimal separator (U+066B): 1٫5 and 1.000 are refused, not guessed at.
_SCRIPTS = tuple(map(frozenset, ("0123456789", "۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩")))
_DIGIT = "[0-9\u06f0-\u06f9\u0660-\u0669]"
_GROUPED = rf"{_DIGIT}{{1,3}}([,\u060c\u066c' \u00a0\u202f]){_DIGIT}{{3}}(?:\1{_DIGIT}{{3}})*+"
_NUMBER = re.compile(rf"{_DIGIT}++|{_GROUPED}")  # possessive: linear on any input
# Stripped around the number and its sign: whitespace, and the invisible marks that
# right-to-left interfaces paste (LRM, RLM, ALM, embeddings, isolates, BOM). Not the
# overrides U+202D/U+202E: they would show 0001 as 1000.
_AROUND = "".join(filter(str.isspace, map(chr, range(0x3001))))
_AROUND += (
    "\u200b\u200c\u200d\u200e\u200f\u061c\u202a\u202b\u202c\u2060\u2066\u2067\u2068\u2069\ufeff"
)
_SIGNS = {"-": -1, "\u2212": -1, "+": 1}
_TOO_MANY_DIGITS = 30  # far above any limit: the range check then names the limit
# What a typed amount that is not a number is told, unsigned and signed.
_UNGROUPED = {
    False: phrase(
        "{field} must be a whole number of toman, such as 50,000 or 50000;"
        " thousands separators only between groups of three"
    ),
    True: phrase(
        "{field} must be a whole number of toman, such as -50,000 or 50000;"
        " thousands separators only between groups of three"
    ),
}
_MIXED = {
    False: phrase(
        "{field} must be a whole number of toman, such as 50,000 or 50000,"
        " in one kind of digits: 0-9, ۰-۹ or ٠-٩"
    ),
    True: phrase(
        "{field} must be a whole number of toman, such as -50,000 or 50000,"
        " in one kind of digits: 0-9, ۰-۹ or ٠-٩"
    ),
}


def _require_int(value: object, field: str) -> int:
    if type(value) is not int:  # refuses bool, float, str, None, Decimal
        raise ValidationError("{field} must be a JSON integer number of toman", field)
    return value


def parse_amount(value: object, max_amount: int, field: str = "amount") -> int:
    """A positive amount: an integer in 1..max_amount."""
    amount = _require_int(value, field)
    if not 1 <= amount <= max_amount:
        raise ValidationError(
            "{field} must be between 1 and {max_amount:,} toman", field, max_amount=max_amount
        )
    return amount


def parse_signed_amount(value: object, max_amount: int, field: str = "amount") -> int:
    """A non-zero adjustment: an integer with 1 <= |amount| <= max_amount."""
    amount = _require_int(value, field)
    if amount == 0 or abs(amount) > max_amount:
        raise ValidationError(
            "{field} must be a non-zero integer between -{max_amount:,} and {max_amount:,}",
            field,
            max_amount=max_amount,
        )
    return amount


def amount_from_text(text: str, field: str = "amount", signed: bool = False) -> int:
    """The integer a person typed into a form: `50000`, `50,000`, `۵۰٬۰۰۰` (and `-5000`
    when `signed`). Only the notation is read here; the range is parse_amount's job."""
    body, sign = text.strip(_AROUND), 1
    if signed and body[:1] in _SIGNS:
        sign, body = _SIGNS[body[0]], body[1:].lstrip(_AROUND)
    number = _NUMBER.fullmatch(body)
    if number is None:
        raise ValidationError(_UNGROUPED[signed], field)
    digits = body.replace(number[1], "") if number[1] else body
    if not any(script.issuperset(digits) for script in _SCRIPTS):
        raise ValidationError(_MIXED[signed], field)
    significant = digits.translate(ASCII_DIGITS).lstrip("0")
    return sign * int(significant[:_TOO_MANY_DIGITS] or "0")


def check_balance(balance: int) -> int:
    """Assert a balance is inside 0..MAX_BALANCE (invariant I1 and the ceiling)."""
    if type(balance) is not int or not 0 <= balance <= MAX_BALANCE:
        raise AssertionError(f"balance out of range: {balance!r}")
    return balance
