"""Where a table's rows begin to be stamped at a time: its ids, found by bisection.

The charts (activity.py) read a period's sales and entries as ranges of ids: there is no
index on created_at (every sale would pay for one), but ids follow the time, give or take
the clocks' slack. Reads only.
"""

from __future__ import annotations

import bisect
import datetime

from chargebox.clock import parse, stamp


def first_ids_since(reader, table: str, stamps: list[str], latest: str,
                    slack: datetime.timedelta) -> list[int]:  # fmt: skip
    """For each stamp (ascending), the lowest id of `table` (sale or ledger_entry) from
    which rows are stamped that or later, found by bisecting the primary key: ids follow
    created_at, which has no index. All the stamps are bisected together, one statement
    a step (a probe of the key per stamp still searching): some 20 round trips in all,
    however many stamps. Ascending, as the stamps: each answer is at least the one
    before it (with ids out of their stamps' order, bisections apart could cross).

    A probe passes over a row stamped after `latest` (the end of what is drawn and a
    margin) or more than `slack` before the table's first row: a clock that jumped for
    a while (set right since), or a host's reset to 1970. Met by a probe, one such row
    sent every bisection on that side astray: weeks of sales drawn as none, and their
    sum on one day."""
    assert table in ("sale", "ledger_entry"), table
    (ends,) = reader.dicts(  # apart: SQLite scans the table for min() and max() in one
        f"SELECT (SELECT min(id) FROM {table}) AS low, (SELECT max(id) FROM {table}) AS high,"
        f" (SELECT created_at FROM {table} ORDER BY id LIMIT 1) AS first"
    )
    if ends["low"] is None:
        return [1] * len(stamps)
    floor = stamp(parse(ends["first"]) - slack) if ends["first"] <= latest else None
    within = (latest,) if floor is None else (latest, floor)  # (see above)
    probe = (f"(SELECT id FROM {table} WHERE id >= ? AND created_at <= ?"
             f"{' AND created_at >= ?' * (len(within) - 1)} ORDER BY id LIMIT 1)")  # fmt: skip
    bounds = [[ends["low"], ends["high"] + 1] for _ in stamps]  # [low, high) each
    while searching := [n for n, (low, high) in enumerate(bounds) if low < high]:
        middles = sorted({sum(bounds[n]) // 2 for n in searching})
        rows = reader.dicts(
            f"SELECT id, created_at FROM {table} WHERE id IN"
            f" ({', '.join([probe] * len(middles))}) ORDER BY id",
            tuple(value for middle in middles for value in (middle, *within)),
        )
        ids = [row["id"] for row in rows]
        for n in searching:
            middle = sum(bounds[n]) // 2  # its row: the first found at or above it
            at = bisect.bisect_left(ids, middle)
            row = rows[at] if at < len(rows) else None
            if row is None or row["created_at"] >= stamps[n]:
                bounds[n][1] = middle
            else:
                bounds[n][0] = row["id"] + 1
    found = [low for low, _ in bounds]
    return [max(found[: n + 1]) for n in range(len(found))]
