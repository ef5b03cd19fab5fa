"""The time as chargebox stores it: ISO 8601 UTC text with microseconds (pure).

Such stamps sort as text, so ranges and "expired" are plain comparisons in SQL.
"""

from __future__ import annotations

import datetime


def now(later: datetime.timedelta = datetime.timedelta(0)) -> str:
    """The time (plus `later`) as `2026-11-24T10:31:02.123456Z`."""
    stamp = (datetime.datetime.now(datetime.UTC) + later).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")
