"""The time as chargebox stores it: ISO 8601 UTC text with microseconds (pure).

Such stamps sort as text, so ranges and "expired" are plain comparisons in SQL.
"""

from __future__ import annotations

import datetime


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
