"""Integer toman amounts: parsing, validation and the limits (pure, no I/O).

Money is a Python `int` here and everywhere else. `bool` is an `int` subclass
and is refused explicitly, as are floats, strings and None, whatever they hold.
"""

from __future__ import annotations

import re

from chargebox.config import MAX_BALANCE
from chargebox.errors import ValidationError
from chargebox.phones import ASCII_DIGITS

# What people type between thousands in a form: comma, Arabic comma and thousands
# separator (U+066C), apostrophe, underscore, spaces (also no-break) and right-to-left
# marks. The Arabic decimal separator (U+066B) is not one of them: 1٫5 is refused.
_SEPARATORS = dict.fromkeys(map(ord, ",\u060c\u066c'_ \u00a0\u202f\u200e\u200f"))
_SIGNS = {"-": -1, "\u2212": -1, "+": 1}
_WHOLE = re.compile(r"[0-9]+", re.ASCII)
_TOO_MANY_DIGITS = 30  # far above any limit: the range check then names the limit


def _require_int(value: object, field: str) -> int:
    if type(value) is not int:  # refuses bool, float, str, None, Decimal
        raise ValidationError(f"{field} must be a JSON integer number of toman", field)
    return value


def parse_amount(value: object, max_amount: int, field: str = "amount") -> int:
    """A positive amount: an integer in 1..max_amount."""
    amount = _require_int(value, field)
    if not 1 <= amount <= max_amount:
        raise ValidationError(f"{field} must be between 1 and {max_amount:,} toman", field)
    return amount


def parse_signed_amount(value: object, max_amount: int, field: str = "amount") -> int:
    """A non-zero adjustment: an integer with 1 <= |amount| <= max_amount."""
    amount = _require_int(value, field)
    if amount == 0 or abs(amount) > max_amount:
        raise ValidationError(
            f"{field} must be a non-zero integer between -{max_amount:,} and {max_amount:,}",
            field,
        )
    return amount


def amount_from_text(text: str, field: str = "amount", signed: bool = False) -> int:
    """The integer a person typed into a form: `50000`, `50,000`, `۵۰٬۰۰۰` (and `-5000`
    when `signed`). Only the notation is read here; the range is parse_amount's job."""
    compact = text.strip().translate(_SEPARATORS).translate(ASCII_DIGITS)
    sign = 1
    if signed and compact[:1] in _SIGNS:
        sign, compact = _SIGNS[compact[0]], compact[1:]
    if not _WHOLE.fullmatch(compact):
        example = "-50000 or 50000" if signed else "50000"
        raise ValidationError(f"{field} must be a whole number of toman, such as {example}", field)
    return sign * int(compact[:_TOO_MANY_DIGITS])


def check_balance(balance: int) -> int:
    """Assert a balance is inside 0..MAX_BALANCE (invariant I1 and the ceiling)."""
    if type(balance) is not int or not 0 <= balance <= MAX_BALANCE:
        raise AssertionError(f"balance out of range: {balance!r}")
    return balance
