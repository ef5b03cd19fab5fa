"""Integer toman amounts: parsing, validation and the limits (pure, no I/O).

Money is a Python `int` here and everywhere else. `bool` is an `int` subclass
and is refused explicitly, as are floats, strings and None, whatever they hold.
"""

from __future__ import annotations

from chargebox.config import MAX_BALANCE
from chargebox.errors import ValidationError


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


def check_balance(balance: int) -> int:
    """Assert a balance is inside 0..MAX_BALANCE (invariant I1 and the ceiling)."""
    if type(balance) is not int or not 0 <= balance <= MAX_BALANCE:
        raise AssertionError(f"balance out of range: {balance!r}")
    return balance
