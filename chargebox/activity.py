"""Sales and balances over time, in Tehran days and hours: what the chart pages draw.

The database sums sales per UTC half hour (queries.py: plain text functions that both
backends share); whole Tehran hours and days are made of those here, with the zone's
own rules, so a sale at 20:29 UTC counts on one Tehran day and one at 20:31 on the next
(Asia/Tehran is UTC+03:30; its offsets since 1946 are all whole half hours). A period
with no sales is a zero, never a gap. There is no index on created_at: each read starts
at the id `Queries.first_id_since` finds for its start less `SLACK`, so a year of history
before the window costs some twenty lookups, not a scan. No SQL, no writes here.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

from chargebox.clock import stamp
from chargebox.periods import TEHRAN
from chargebox.queries import Queries

DAYS = 30  # days of sales and of balances shown
HOURS = 48  # hours of sales shown
TOP = 10  # sellers ranked
# How far before its window a read starts, in case ids and stamps disagree a little
# (stamps are taken before a write's id on hosts whose clocks may differ by seconds).
SLACK = datetime.timedelta(hours=1)
UTC = datetime.UTC


@dataclasses.dataclass(frozen=True)
class Total:
    """What sold in one period: its start (a Tehran date, or an aware Tehran hour)."""

    start: datetime.date | datetime.datetime
    amount: int
    sales: int


def days_ending(now: datetime.datetime, days: int) -> list[datetime.date]:
    """The last `days` Tehran dates, today (at `now`) last."""
    today = now.astimezone(TEHRAN).date()
    return [today - datetime.timedelta(days=back) for back in range(days - 1, -1, -1)]


def hours_ending(now: datetime.datetime, hours: int) -> list[datetime.datetime]:
    """The starts of the last `hours` Tehran hours, the current one last."""
    this_hour = now.astimezone(TEHRAN).replace(minute=0, second=0, microsecond=0)
    first = this_hour.astimezone(UTC) - datetime.timedelta(hours=hours - 1)
    return [(first + datetime.timedelta(hours=n)).astimezone(TEHRAN) for n in range(hours)]


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=TEHRAN)


def _local(row: dict) -> datetime.datetime:
    """A half-hour row's start, in Tehran."""
    start = datetime.datetime.fromisoformat(row["hour"] + ":00+00:00")
    return (start + datetime.timedelta(minutes=30 * row["half"])).astimezone(TEHRAN)


def _window(queries: Queries, table: str, start: datetime.datetime, end: datetime.datetime):
    return queries.first_id_since(table, stamp(start - SLACK)), stamp(start), stamp(end)


def sales_per_day(queries: Queries, now: datetime.datetime, seller_id: int | None = None,
                  days: int = DAYS) -> list[Total]:  # fmt: skip
    """Sales per Tehran day over the last `days` (of one seller, or of all), oldest first."""
    return _per_day(_sales(queries, now, days, seller_id), now, days)


def sales_per_hour(queries: Queries, now: datetime.datetime, hours: int = HOURS) -> list[Total]:
    """Sales of all sellers per Tehran hour over the last `hours`, oldest first."""
    return _per_hour(_sales(queries, now, math.ceil(hours / 24) + 1), now, hours)


def sales_per_day_and_hour(queries: Queries, now: datetime.datetime) -> tuple[list, list]:
    """sales_per_day() and sales_per_hour() of all sellers from one read: the last HOURS
    lie inside the last DAYS."""
    rows = _sales(queries, now, DAYS)
    return _per_day(rows, now, DAYS), _per_hour(rows, now, HOURS)


def _sales(queries: Queries, now: datetime.datetime, days: int, seller_id: int | None = None
           ) -> list[tuple[datetime.datetime, int, int]]:  # fmt: skip
    """(Tehran start, amount, sales) of each UTC half hour with sales in the last `days`."""
    dates = days_ending(now, days)
    end = _midnight(dates[-1] + datetime.timedelta(days=1))
    window = _window(queries, "sale", _midnight(dates[0]), end)
    return [(_local(row), int(row["amount"]), int(row["sales"]))  # int(): a BIGINT sum
            for row in queries.sales_by_half_hour(*window, seller_id)]  # fmt: skip


def _per_day(rows: list, now: datetime.datetime, days: int) -> list[Total]:
    return _totals(days_ending(now, days), rows, lambda start: start.date())


def _per_hour(rows: list, now: datetime.datetime, hours: int) -> list[Total]:
    return _totals(hours_ending(now, hours), rows, lambda start: start.replace(minute=0))


def _totals(keys: list, rows: list, key_of) -> list[Total]:
    """A total for each key (a day, an hour), zero where no row falls."""
    totals = {key: [0, 0] for key in keys}
    for start, amount, sales in rows:
        if (key := key_of(start)) in totals:
            totals[key][0] += amount
            totals[key][1] += sales
    return [Total(key, amount, sales) for key, (amount, sales) in totals.items()]


def top_sellers(queries: Queries, now: datetime.datetime, days: int = DAYS,
                limit: int = TOP) -> list[dict]:  # fmt: skip
    """The `limit` sellers with the most sales (amount) in the last `days` Tehran days:
    seller_id, name, amount, sales; most first."""
    dates = days_ending(now, days)
    end = _midnight(dates[-1] + datetime.timedelta(days=1))
    rows = queries.top_sellers(*_window(queries, "sale", _midnight(dates[0]), end), limit)
    return [{**row, "amount": int(row["amount"]), "sales": int(row["sales"])} for row in rows]


def closing_balances(queries: Queries, seller_id: int, now: datetime.datetime,
                     days: int = DAYS) -> list[tuple[datetime.date, int]]:  # fmt: skip
    """A seller's balance at the end of each of the last `days` Tehran days (today: now),
    from its ledger's balance_after (0 before its first entry, as every seller starts)."""
    dates = days_ending(now, days)
    start, end = _midnight(dates[0]), _midnight(dates[-1] + datetime.timedelta(days=1))
    from_id, _, until = _window(queries, "ledger_entry", start, end)
    before = dates[0] - datetime.timedelta(days=1)  # rows of earlier days: the opening
    closing: dict[datetime.date, int] = {}
    for row in queries.balances_by_half_hour(seller_id, from_id, until):  # oldest first
        day = before if row["hour"] is None else max(_local(row).date(), before)
        closing[day] = int(row["balance_after"])
    shown, balance = [], closing.get(before, 0)
    for day in dates:
        balance = closing.get(day, balance)
        shown.append((day, balance))
    return shown
