"""The time as chargebox stores it: ISO 8601 UTC text with microseconds (pure).

Such stamps sort as text, so ranges and "expired" are plain comparisons in SQL.
"""

from __future__ import annotations

import datetime

_TICK = datetime.timedelta(microseconds=1)  # the finest step a stamp shows


def now(later: datetime.timedelta = datetime.timedelta(0)) -> str:
    """The time (plus `later`) as `2026-11-24T10:31:02.123456Z`."""
    return stamp(datetime.datetime.now(datetime.UTC) + later)


def stamp(moment: datetime.datetime) -> str:
    """An aware datetime as chargebox stores times: `2026-11-24T10:31:02.123456Z`."""
    utc = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"  # a 4-digit year, so it sorts


def parse(stored: str) -> datetime.datetime:
    """A stored stamp as an aware datetime (UTC)."""
    return datetime.datetime.fromisoformat(stored.replace("Z", "+00:00"))


def after(stored: str | None) -> str:
    """Now, or a microsecond after `stored` if the clock is not past it (set back, or
    another host's behind): a stamp that sorts after the one before it."""
    at = now()
    if stored is None or stored < at:
        return at
    return stamp(parse(stored) + _TICK)
