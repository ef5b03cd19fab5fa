"""Periods of time as clients name them, turned into the stamps chargebox stores (pure).

A statement or a search covers `[from, to)`. `from`/`to` are ISO 8601 times with an
offset (`Z`, `+03:30`), or dates (`2026-12-01`: that day's midnight in Asia/Tehran); a
time without an offset is refused, since it could mean two instants. `day`, `month`
(Gregorian), `jday` (Jalali, `1405/09/10` = 10 Azar 1405 = 2026-12-01) and `jmonth`
(`1405-09` = Azar 1405) are whole days and months in Asia/Tehran; a Jalali date may be
written with `/` or `-` and in Persian or Arabic-Indic digits, as people in Iran write it,
and `jalali_instant` reads a Persian page's search bound, a Jalali date with an optional
time of day; on a page, a date typed with a Gregorian year is Gregorian (`as_typed`).
Stored stamps are UTC text that sorts (clock.py), so a bound is one too.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from zoneinfo import ZoneInfo

import jdatetime

from chargebox.clock import parse, stamp
from chargebox.errors import ValidationError, phrase
from chargebox.phones import ASCII_DIGITS

TEHRAN = ZoneInfo("Asia/Tehran")
NAMES = ("from", "to", "day", "month", "jmonth", "jday")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_JMONTH = re.compile(r"([0-9]{4})[-/]([0-9]{1,2})")  # 1405-09, 1405/09, 1405/9 (as jday)
JMONTH_WRITTEN = phrase("{field} must be a month written YYYY/MM or YYYY-MM, its month 1 to 12")
# A Jalali day as people write it: 1405/09/10, 1405-09-10, 1405/9/10 (one separator).
_JDAY = r"([0-9]{4})([/-])([0-9]{1,2})\2([0-9]{1,2})"
_JALALI_DAY = re.compile(_JDAY)
# ... and a time of day after it, if any: 1405/09/10 14:30, 1405/09/10 14:30:05.
_JALALI_TIME = re.compile(_JDAY + r"(?: +([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?")
# Years a Persian page's search bound reads as Gregorian: someone typed today's Gregorian
# date there (2026-12-01), not a day of Jalali 2026 (Gregorian 2647). Jalali dates in use
# are 13xx and 14xx; Jalali 1900-2199 are Gregorian 2521-2820.
GREGORIAN_YEARS = range(1900, 2200)
# A time: date, T, hours:minutes[:seconds[.fraction]], then Z or ±hh:mm (required).
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})"
)


@dataclasses.dataclass(frozen=True)
class Period:
    """`[start, end)`, two aware datetimes; `jalali` when named by a Jalali day or month."""

    start: datetime.datetime
    end: datetime.datetime
    jalali: bool = dataclasses.field(default=False, compare=False)  # the bounds are the period

    @property
    def first_day(self) -> str:
        """The Tehran day it starts on, YYYY-MM-DD in its own calendar (a file's name)."""
        if not self.jalali:
            return tehran_day(self.start)
        day = jdatetime.date.fromgregorian(date=_in_tehran(self.start).date())
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"

    @property
    def bounds(self) -> tuple[str, str]:
        """The period as stored stamps: created_at >= first AND created_at < second."""
        return stamp(self.start), stamp(self.end)


def local(stored: str | datetime.datetime) -> str:
    """A stored stamp (or an aware datetime) as ISO 8601 in Asia/Tehran, with its offset;
    before mid-1935 (Tehran's +03:25:44, which no ISO 8601 offset writes) in UTC instead."""
    moment = stored if isinstance(stored, datetime.datetime) else parse(stored)
    shown = _in_tehran(moment)
    if shown.utcoffset().seconds % 60:
        return stamp(moment)
    return shown.isoformat(timespec="microseconds")


def tehran_day(moment: datetime.datetime) -> str:
    """The day (YYYY-MM-DD) an aware moment falls on in Tehran, at any date."""
    return _in_tehran(moment).date().isoformat()


def _in_tehran(moment: datetime.datetime) -> datetime.datetime:
    """An aware moment in Tehran's zone, through UTC: one already in it (a day's midnight
    made by `_midnight`) would keep its offset, even where that hour never was."""
    return moment.astimezone(datetime.UTC).astimezone(TEHRAN)


class Localiser:
    """`local()` for a statement's many stamps, in order: Tehran's offset is whole minutes
    (since mid-1935) and changes on the hour if at all, so the local minute is worked out
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
                return local(stored)  # before mid-1935 (seconds in the offset), or not ours
            self._minute, self._shown = minute, (moment.isoformat()[:16], _offset_text(offset))
        return self._shown[0] + stored[16:-1] + self._shown[1]


def _offset_text(offset: datetime.timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _plus_sent_bare(text: str) -> str:
    """An offset's `+` sent unescaped in a query string arrives as a space: put it back
    (2026-12-01T08:30:00 03:30). A space can mean nothing else there."""
    if len(text) > 6 and text[-6] == " " and "T" in text:
        return text[:-6] + "+" + text[-5:]
    return text


def instant(text: str, name: str) -> datetime.datetime:
    """A bound as a client wrote it: a time with its offset, or a date (Tehran midnight);
    one the database cannot store (near year 1 or 9999) is a 422 naming `name` too."""
    try:
        if _DATE.fullmatch(text):
            moment = _midnight(datetime.date.fromisoformat(text))
        elif _TIME.fullmatch(text := _plus_sent_bare(text)):
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        else:
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise ValidationError(
            "{field} must be an ISO 8601 time with its offset (2026-12-01T08:30:00+03:30,"
            " 2026-12-01T05:00:00Z) or a date (2026-12-01: midnight in Asia/Tehran)",
            name,
        ) from None
    _within_the_calendar(name, moment, stamp)
    return moment


def _within_the_calendar(name: str, moment: datetime.datetime, *uses) -> None:
    """Refuse a bound that one of `uses` cannot take (stored as a stamp near year 1 or
    9999, shown in Tehran time near the end of 9999), naming `name`, its own field."""
    try:
        for use in uses:
            use(moment)
    except (ValueError, OverflowError):
        raise ValidationError("the period is outside the years 1 to 9998", name) from None


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=TEHRAN)


_AFTER_THE_LAST_YEAR = _midnight(datetime.date(9999, 1, 1))  # a period ends by then


def latin_digits(text: str) -> str:
    """Persian and Arabic-Indic digits typed into a form, as 0-9 (the rest unchanged)."""
    return text.translate(ASCII_DIGITS)


def as_typed(params: dict[str, str]) -> dict[str, str]:
    """A page's period as a person typed it: a `jday` or `jmonth` with a Gregorian year
    (GREGORIAN_YEARS: `2026/12/01`, `2026-12`) is that Gregorian `day` or `month`, or a
    422 naming the field it was typed in. The API's `jday` and `jmonth` stay Jalali,
    whatever their year."""
    typed = dict(params)
    day = _JALALI_DAY.fullmatch(typed.get("jday", ""))
    if day and int(day[1]) in GREGORIAN_YEARS and "day" not in typed:
        typed["day"] = _typed_day("jday", int(day[1]), int(day[3]), int(day[4])).isoformat()
        del typed["jday"]
    month = _JMONTH.fullmatch(typed.get("jmonth", ""))
    if month and int(month[1]) in GREGORIAN_YEARS and "month" not in typed:
        if not 1 <= int(month[2]) <= 12:
            raise ValidationError(JMONTH_WRITTEN, "jmonth")
        del typed["jmonth"]
        typed["month"] = f"{month[1]}-{int(month[2]):02d}"
    return typed


def _typed_day(name: str, year: int, month: int, day: int) -> datetime.date:
    """A day typed into a Jalali field: Gregorian if its year is in GREGORIAN_YEARS, else
    Jalali; a 422 naming `name` if that calendar has no such day."""
    if year not in GREGORIAN_YEARS:
        return _jalali_date(name, year, month, day)
    try:
        return datetime.date(year, month, day)
    except ValueError:
        raise ValidationError("{field}: {year:04d}-{month:02d}-{day:02d} is not a day", name,
                              year=year, month=month, day=day) from None  # fmt: skip


def _month(text: str, name: str, pattern: re.Pattern = _MONTH) -> tuple[int, int]:
    found = pattern.fullmatch(text)
    if not found or not 1 <= int(found[2]) <= 12 or int(found[1]) < 1:
        if pattern is _JMONTH:  # which also takes 1405/09 (a Persian page's example)
            raise ValidationError(JMONTH_WRITTEN, name)
        raise ValidationError("{field} must be a month written YYYY-MM", name)
    return int(found[1]), int(found[2])


def _next_month(year: int, month: int) -> tuple[int, int]:
    """The month after, in either calendar: both have twelve."""
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _gregorian_month(text: str) -> Period:
    year, month = _month(text, "month")  # 9999-12: its end, 10000-01-01, is a ValueError
    return Period(_midnight(datetime.date(year, month, 1)),
                  _midnight(datetime.date(*_next_month(year, month), 1)))  # fmt: skip


def _jalali_month(text: str) -> Period:
    year, month = _month(latin_digits(text), "jmonth", _JMONTH)
    _jalali_year(year, "jmonth")
    first = jdatetime.date(year, month, 1).togregorian()
    after = jdatetime.date(*_next_month(year, month), 1).togregorian()
    return Period(_midnight(first), _midnight(after), jalali=True)


def _jalali_year(year: int, name: str) -> None:
    if not 1 <= year <= 9000:  # jdatetime's own calendar ends in 9377
        raise ValidationError("{field} must be a Jalali year from 1 to 9000", name)


def _jalali_date(name: str, year: int, month: int, day: int) -> datetime.date:
    """The Gregorian date of a Jalali one; not a day of the Jalali calendar (month 13, day
    0, Esfand 30 of a common year): a 422 naming the field."""
    _jalali_year(year, name)
    try:
        return jdatetime.date(year, month, day).togregorian()
    except ValueError:
        raise ValidationError(
            "{field}: {year:04d}/{month:02d}/{day:02d} is not a day of the Jalali calendar",
            name, year=year, month=month, day=day,
        ) from None  # fmt: skip


def _whole_day(day: datetime.date) -> Period:
    return Period(_midnight(day), _midnight(day + datetime.timedelta(days=1)))


def _day(text: str) -> Period:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise ValidationError("day must be a date written YYYY-MM-DD", "day") from None
    return _whole_day(day)  # 9999-12-31 has no next day: refused by period()


def _jalali_day(text: str) -> Period:
    found = _JALALI_DAY.fullmatch(latin_digits(text))
    if not found:
        raise ValidationError("{field} must be a Jalali date written YYYY/MM/DD", "jday")
    day = _whole_day(_jalali_date("jday", int(found[1]), int(found[3]), int(found[4])))
    return dataclasses.replace(day, jalali=True)


def jalali_instant(text: str, name: str, through_the_day: bool = False) -> str:
    """A search bound typed on a Persian page, a Jalali date in Tehran with an optional
    time of day (`۱۴۰۵/۰۹/۱۰`, `1405-09-10 14:30`, any digits), as an ISO 8601 instant
    in UTC; a date alone is its Tehran midnight, the start of its `jday`, or with
    `through_the_day` (a search's end, "up to that day") the midnight after it, so that
    one day typed as both bounds finds that day. A year of GREGORIAN_YEARS makes it a
    Gregorian date, written the same ways. Else a 422 naming the field `name`."""
    found = _JALALI_TIME.fullmatch(latin_digits(text.strip()))
    if not found:
        raise ValidationError(
            "{field} must be a Jalali date, with a time of day if need be:"
            " 1405/09/10 or 1405/09/10 14:30 (Tehran time)",
            name,
        )
    day = _typed_day(name, int(found[1]), int(found[3]), int(found[4]))
    hour, minute, second = (int(found[group] or 0) for group in (5, 6, 7))
    if hour > 23 or minute > 59 or second > 59:
        raise ValidationError("{field}: {hour:02d}:{minute:02d} is not a time of day", name,
                              hour=hour, minute=minute)  # fmt: skip
    if through_the_day and found[5] is None:  # (no day typed here is the calendar's last)
        day += datetime.timedelta(days=1)
    moment = datetime.datetime.combine(day, datetime.time(hour, minute, second), TEHRAN)
    return moment.astimezone(datetime.UTC).isoformat()


def period(params: dict[str, str]) -> Period:
    """The one period `params` names (keys of NAMES); anything else is a 422. A period at
    the ends of the calendar, which cannot be stored or shown in Tehran time
    (9999-12-31T23:00Z), names the parameter that gave the end at fault: `to` for its end."""
    given = [name for name in NAMES if name in params]
    try:
        made = _named(params, given)
    except (ValueError, OverflowError):  # a day or month whose end is past 9999
        raise ValidationError("the period is outside the years 1 to 9998", given[0]) from None
    first, last = ("from", "to") if given == ["from", "to"] else (given[0], given[0])
    _within_the_calendar(first, made.start, stamp, local)
    _within_the_calendar(last, made.end, stamp, local)
    if made.end > _AFTER_THE_LAST_YEAR:  # the documented years: 9999 is refused whole
        raise ValidationError("the period is outside the years 1 to 9998", last)
    return made


def _named(params: dict[str, str], given: list[str]) -> Period:
    if given in (["from", "to"], ["day"], ["month"], ["jmonth"], ["jday"]):
        if given == ["day"]:
            return _day(params["day"])
        if given == ["jday"]:
            return _jalali_day(params["jday"])
        if given == ["month"]:
            return _gregorian_month(params["month"])
        if given == ["jmonth"]:
            return _jalali_month(params["jmonth"])
        return ordered(instant(params["from"], "from"), instant(params["to"], "to"))
    field = given[0] if given else "from"
    raise ValidationError(
        "give exactly one period: from and to (ISO 8601 times with an offset, or dates meaning"
        " midnight in Asia/Tehran), day=YYYY-MM-DD, month=YYYY-MM, jday=YYYY/MM/DD or"
        " jmonth=YYYY-MM (Jalali), in Asia/Tehran",
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


# A browser's `datetime-local`: seconds and their fraction when the field's step asks for them.
_NAIVE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?")


def tehran_if_naive(text: str, name: str) -> str:
    """A web form's `datetime-local` (no offset) read as Tehran time, as the UTC instant it
    is (before 1946 Tehran's offset had seconds, which no ISO 8601 offset writes); a time
    with its offset or a date as typed (`instant` reads them); anything else a 422 worded
    for the person who typed it. One the calendar cannot take is a 422 naming `name`."""
    if not _NAIVE.fullmatch(text):
        if _DATE.fullmatch(text) or _TIME.fullmatch(_plus_sent_bare(text)):
            return text
        raise ValidationError("{field} must be a date and time in Tehran, as 2026-12-01T14:30,"
                              " or a date, as 2026-12-01", name)  # fmt: skip
    try:
        moment = datetime.datetime.fromisoformat(text).replace(tzinfo=TEHRAN)
    except ValueError:
        return text
    _within_the_calendar(name, moment, stamp)
    return moment.astimezone(datetime.UTC).isoformat()
