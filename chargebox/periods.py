"""Periods of time as clients name them, turned into the stamps chargebox stores (pure).

A statement or a search covers `[from, to)`. `from`/`to` are ISO 8601 times with an
offset (`Z`, `+03:30`), or dates (`2026-12-01`: that day's midnight in Asia/Tehran); a
time without an offset is refused, since it could mean two instants. `day`, `month`
(Gregorian) and `jmonth` (Jalali, `1405-09` = Azar 1405) are whole days and months in
Asia/Tehran. Stored stamps are UTC text that sorts (clock.py), so a bound is one too.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from zoneinfo import ZoneInfo

import jdatetime

from chargebox.clock import parse, stamp
from chargebox.errors import ValidationError

TEHRAN = ZoneInfo("Asia/Tehran")
NAMES = ("from", "to", "day", "month", "jmonth")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
# A time: date, T, hours:minutes[:seconds[.fraction]], then Z or ±hh:mm (required).
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})"
)


@dataclasses.dataclass(frozen=True)
class Period:
    """`[start, end)`, two aware datetimes."""

    start: datetime.datetime
    end: datetime.datetime

    @property
    def bounds(self) -> tuple[str, str]:
        """The period as stored stamps: created_at >= first AND created_at < second."""
        return stamp(self.start), stamp(self.end)


def local(stored: str | datetime.datetime) -> str:
    """A stored stamp (or an aware datetime) as ISO 8601 in Asia/Tehran, with its offset;
    before 1946 (Tehran's +03:25:44, which no ISO 8601 offset writes) in UTC instead."""
    moment = stored if isinstance(stored, datetime.datetime) else parse(stored)
    shown = moment.astimezone(TEHRAN)
    if shown.utcoffset().seconds % 60:
        return stamp(moment)
    return shown.isoformat(timespec="microseconds")


class Localiser:
    """`local()` for a statement's many stamps, in order: Tehran's offset is whole minutes
    (since 1946) and changes on the hour if at all, so the local minute is worked out
    once per UTC minute and the seconds are copied as they are."""

    def __init__(self) -> None:
        self._minute = ""
        self._shown = ("", "")

    def __call__(self, stored: str) -> str:
        minute = stored[:16]
        if minute != self._minute:
            moment = parse(stored).astimezone(TEHRAN)
            offset = moment.utcoffset()
            if offset is None or offset.seconds % 60 or len(stored) != 27:
                return local(stored)  # before 1946 (seconds in the offset), or not ours
            self._minute, self._shown = minute, (moment.isoformat()[:16], _offset_text(offset))
        return self._shown[0] + stored[16:-1] + self._shown[1]


def _offset_text(offset: datetime.timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def instant(text: str, name: str) -> datetime.datetime:
    """A bound as a client wrote it: a time with its offset, or a date (Tehran midnight)."""
    try:
        if _DATE.fullmatch(text):
            moment = _midnight(datetime.date.fromisoformat(text))
        elif _TIME.fullmatch(text):
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        else:
            raise ValueError(text)
        stamp(moment)  # out of range near year 1 or 9999: refused below
        return moment
    except (ValueError, OverflowError):
        pass
    raise ValidationError(
        "{field} must be an ISO 8601 time with its offset (2026-12-01T08:30:00+03:30,"
        " 2026-12-01T05:00:00Z) or a date (2026-12-01: midnight in Asia/Tehran)",
        name,
    )


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=TEHRAN)


def _month(text: str, name: str) -> tuple[int, int]:
    found = _MONTH.fullmatch(text)
    if not found or not 1 <= int(found[2]) <= 12 or int(found[1]) < 1:
        raise ValidationError("{field} must be a month written YYYY-MM", name)
    return int(found[1]), int(found[2])


def _next_month(year: int, month: int) -> tuple[int, int]:
    """The month after, in either calendar: both have twelve."""
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _gregorian_month(text: str) -> Period:
    year, month = _month(text, "month")
    if year >= 9999:
        raise ValidationError("month must be before 9999-12", "month")
    return Period(_midnight(datetime.date(year, month, 1)),
                  _midnight(datetime.date(*_next_month(year, month), 1)))  # fmt: skip


def _jalali_month(text: str) -> Period:
    year, month = _month(text, "jmonth")
    if not 1 <= year <= 9000:
        raise ValidationError("jmonth must be a Jalali year from 1 to 9000", "jmonth")
    first = jdatetime.date(year, month, 1).togregorian()
    after = jdatetime.date(*_next_month(year, month), 1).togregorian()
    return Period(_midnight(first), _midnight(after))


def _day(text: str) -> Period:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        day = datetime.date.fromisoformat(text)
        return Period(_midnight(day), _midnight(day + datetime.timedelta(days=1)))
    except (ValueError, OverflowError):
        raise ValidationError("day must be a date written YYYY-MM-DD", "day") from None


def period(params: dict[str, str]) -> Period:
    """The one period `params` names (keys of NAMES); anything else is a 422."""
    given = [name for name in NAMES if name in params]
    try:
        made = _named(params, given)
        made.bounds  # noqa: B018 -- a period at the ends of the calendar cannot be stored
        local(made.start), local(made.end)  # nor shown in Tehran time (9999-12-31T23:00Z)
    except (ValueError, OverflowError):
        raise ValidationError("the period is outside the years 1 to 9998", given[0]) from None
    return made


def _named(params: dict[str, str], given: list[str]) -> Period:
    if given in (["from", "to"], ["day"], ["month"], ["jmonth"]):
        if given == ["day"]:
            return _day(params["day"])
        if given == ["month"]:
            return _gregorian_month(params["month"])
        if given == ["jmonth"]:
            return _jalali_month(params["jmonth"])
        return ordered(instant(params["from"], "from"), instant(params["to"], "to"))
    field = given[0] if given else "from"
    raise ValidationError(
        "give exactly one period: from and to (ISO 8601 times with an offset, or dates meaning"
        " midnight in Asia/Tehran), day=YYYY-MM-DD, month=YYYY-MM or jmonth=YYYY-MM (Jalali),"
        " in Asia/Tehran",
        field,
    )


def ordered(start: datetime.datetime, end: datetime.datetime) -> Period:
    if not start < end:
        raise ValidationError("from must be before to", "to")
    return Period(start, end)


def optional_range(params: dict[str, str]) -> tuple[str | None, str | None]:
    """A search's `from` and `to`, each optional, as stored stamps (None: unbounded)."""
    start = instant(params["from"], "from") if "from" in params else None
    end = instant(params["to"], "to") if "to" in params else None
    if start is not None and end is not None:
        ordered(start, end)
    return (None if start is None else stamp(start)), (None if end is None else stamp(end))


_NAIVE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?")


def tehran_if_naive(text: str) -> str:
    """A web form's `datetime-local` (no offset) read as Tehran time; anything else as typed."""
    if not _NAIVE.fullmatch(text):
        return text
    try:
        return datetime.datetime.fromisoformat(text).replace(tzinfo=TEHRAN).isoformat()
    except ValueError:
        return text
