"""A seller's statement of a period: opening balance, every entry, closing balance, totals.

An entry belongs to `[from, to)` by its `created_at`. Stamps are not in entry order on
every deployment (on PostgreSQL a stamp is taken before the seller's row lock, and app
hosts' clocks differ), so the opening is not the balance_after of the "last entry
before from": it is the sum of the seller's entries stamped before `from`. Then
opening + the period's entries = closing, and one period's closing is the next one's
opening, whatever the stamps' order. The opening and the ids the period's entries lie
between are read in one read snapshot, then the entries in chunks, each in a snapshot of
its own (never the whole period in memory, never the write lock), and rendered as JSON
or CSV piece by piece. Entries never change, and a seller's later ones have higher ids
(SQLite: one writer; PostgreSQL: its seq, taken under its row lock), so the chunks are
the rows the first snapshot saw; and a client that reads slowly holds no snapshot while
it does (SQLite's WAL could not be checkpointed past it, nor PostgreSQL vacuum). The
next piece is made once the client has taken what it was sent (`Rendered`), the
statement's turn lent meanwhile (`Turns`): never buffered whole. Reads only.

What it reads is the period's size, not the seller's history (schema version 5's index
on the seller's entries by stamp). The entries are walked along the seller's ledger order
only between the first and the last of those stamped in the period, keeping the ones that
are. The opening is summed on the shorter side of `from`, judged by where the period lies
in the seller's ledger: the entries stamped before it, or the seller's newest balance_after
less those stamped from it on (each entry's balance_after is the sum of the entries up to
it, I3, and sealed). Both are exact.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import unicodedata
from collections.abc import Iterator

from chargebox.audit_checks import KINDS
from chargebox.clock import parse
from chargebox.periods import Localiser, Period, local
from chargebox.queries import LEDGER_ENTRY, Queries
from chargebox.statement_turns import Turns

CHUNK = 1_000  # entries per read
FORMATS = ("json", "csv")
# A statement waits for its client once it has this much unsent, till half is sent, its
# turn lent meanwhile (statement_turns): made as fast as it is read, never buffered whole.
UNSENT = 256 << 10
# The WSGI environ's key for what the answer's connection holds unsent (the server's
# connections._Channel): `unsent()`, and `wait_unsent_below(most)`, which raises
# ClientDisconnected if the connection closes meanwhile.
CLIENT = "chargebox.client"
# The opening, along the stamp index: the sum of what was stamped before `from`, or the
# seller's newest balance_after (sealed, in ledger order) less what was stamped from it
# on, whichever reads less; judged by the seller's ends, each read along an index.
_SPAN = (
    "SELECT (SELECT min(created_at) FROM ledger_entry WHERE seller_id = ?),"
    " (SELECT max(created_at) FROM ledger_entry WHERE seller_id = ?),"
    " (SELECT min({order}) FROM ledger_entry WHERE seller_id = ?),"
    " (SELECT max({order}) FROM ledger_entry WHERE seller_id = ?)"
)
_BEFORE = (
    "SELECT COALESCE(CAST(SUM(amount) AS BIGINT), 0) FROM ledger_entry"
    " WHERE seller_id = ? AND created_at < ?"
)
_SINCE = (
    "SELECT COALESCE((SELECT balance_after FROM ledger_entry WHERE seller_id = ?"
    " ORDER BY {order} DESC LIMIT 1), 0) - COALESCE(CAST(SUM(amount) AS BIGINT), 0)"
    " FROM ledger_entry WHERE seller_id = ? AND created_at >= ?"
)
# The first and the last of the seller's entries, in ledger order, stamped in the period.
# `+ 0`: PostgreSQL would find a bare min(seq) by walking the seq index from the seller's
# first entry, filtering on the stamp (its min/max plan), instead of the period's stamps.
_ENDS = (
    "SELECT min({order} + 0), max({order} + 0) FROM ledger_entry"
    " WHERE seller_id = ? AND created_at >= ? AND created_at < ?"
)
_COLUMNS = tuple(name for name in LEDGER_ENTRY.columns if name != "seller_id")
# A sale's entry and a refund's show the sale's phone. Keyset paging along the seller's
# own index: (seller_id, id) on SQLite, (seller_id, seq) on PostgreSQL, where a seller's
# seq and id orders are one (both taken under its row lock); between the ends, the
# entries stamped outside the period (stamps need not follow that order) left out.
# `|| ''` keeps the stamps off their index: the walk is along the ledger order (with
# statistics older than the period, PostgreSQL would otherwise read and sort the whole
# period for each chunk).
_CHUNK = (
    "SELECT e.{order} AS cursor, {columns}, sale.phone FROM ledger_entry AS e"
    " LEFT JOIN sale ON sale.id = COALESCE(e.sale_id, e.refund_of)"
    " WHERE e.seller_id = ? AND e.{order} > ? AND e.{order} <= ?"
    " AND (e.created_at || '') >= ? AND (e.created_at || '') < ? ORDER BY e.{order} LIMIT ?"
)
ENTRY = (*_COLUMNS, "phone")  # an entry as a statement shows it
CSV_COLUMNS = ("line", *ENTRY)
_REASON = ENTRY.index("reason")


class Statement:
    """One seller's statement, to be read until `close()` (or exhausted): see above."""

    def __init__(self, database, seller_id: int, period: Period, chunk: int = CHUNK,
                 turns: Turns | None = None) -> None:  # fmt: skip
        self.seller_id = seller_id
        self.period = period
        self.chunk = chunk
        self.reads = 0  # chunks read so far (tests check the reading is chunked)
        self._turn = None if turns is None else turns.take(seller_id)  # given back by close()
        self._database = database
        try:
            with database.snapshot() as db:
                Queries(db).seller(seller_id)  # NotFound before anything is streamed
                start, end = period.bounds
                order = "seq" if database.dialect == "postgresql" else "id"
                self._ends = db.rows(_ENDS.format(order=order), (seller_id, start, end))[0]
                read = opening(db, seller_id, start, self._ends[0], order)
                self.opening = db.rows(*read)[0][0]
        except BaseException:
            self.close()
            raise
        columns = ", ".join(f"e.{name}" for name in _COLUMNS)
        self._sql = _CHUNK.format(order=order, columns=columns)
        self.totals = {kind: {"count": 0, "amount": 0} for kind in KINDS}
        self.count = 0
        self.closing = self.opening

    def entries(self) -> Iterator[list[list]]:
        """The period's entries, a chunk at a time, in the seller's ledger order, each the
        values of ENTRY; the closing balance and the totals are complete once this is
        exhausted."""
        start, end = self.period.bounds
        first, last = self._ends
        if first is None:  # nothing stamped in the period
            return
        cursor, shown = first - 1, Localiser()
        kind, amount, created_at = (ENTRY.index(name) for name in ("kind", "amount", "created_at"))
        while True:
            with self._database.snapshot() as db:  # a chunk's own (see above)
                found = db.rows(self._sql, (self.seller_id, cursor, last, start, end, self.chunk))
            self.reads += 1
            if not found:
                return
            cursor = found[-1][0]
            rows = []
            for row in found:
                row = list(row[1:])
                row[created_at] = shown(row[created_at])
                total = self.totals.setdefault(row[kind], {"count": 0, "amount": 0})
                total["count"] += 1
                total["amount"] += row[amount]
                self.closing += row[amount]
                rows.append(row)
            self.count += len(rows)
            yield rows
            if len(rows) < self.chunk:
                return

    def head(self) -> dict:
        return {
            "seller_id": self.seller_id,
            "from": local(self.period.start),
            "to": local(self.period.end),
            "opening_balance": self.opening,
        }

    def tail(self) -> dict:
        return {"closing_balance": self.closing, "count": self.count, "totals": self.totals}

    @contextlib.contextmanager
    def lent(self) -> Iterator[bool]:
        """Its turn lent to other statements meanwhile, if it may be (the value: was it?),
        taken back after, before any that asked since; kept lent if the body raises:
        closing gives it back."""
        if self._turn is None or not self._turn.lend():
            yield False
            return
        yield True
        self._turn.take_back()

    def close(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn()


def opening(reader, seller_id: int, start: str, first: int | None, order: str
            ) -> tuple[str, tuple]:  # fmt: skip
    """The read of a seller's balance before the stamp `start` that reads fewer entries:
    is the period's `first` entry (ledger order) nearer the seller's first or last entry?
    For a period with none, is `start` nearer the seller's first stamp or its last?"""
    low_stamp, high_stamp, low, high = reader.rows(_SPAN.format(order=order), (seller_id,) * 4)[0]
    before = _BEFORE, (seller_id, start)
    since = _SINCE.format(order=order), (seller_id, seller_id, start)
    if low_stamp is None or start <= low_stamp:  # nothing stamped before it
        return before
    if start > high_stamp:  # nothing stamped from it on
        return since
    if first is not None:  # by position: a stamp far out (a host's clock) misleads less
        return before if first - low < high - first else since
    return before if parse(start) - parse(low_stamp) < parse(high_stamp) - parse(start) else since


class Rendered:
    """A statement as bytes, piece by piece (a WSGI body: iterable, with `close`). A CSV
    `for_spreadsheets` starts with a UTF-8 byte order mark: without one, Excel reads the
    file in the machine's code page and shows Persian text as gibberish. (An API client's
    CSV reader would take the mark for part of the first column's name.) Given its
    `client` (the environ's CLIENT), the next piece is made once the client holds fewer
    than UNSENT bytes unsent, the statement's turn lent while it waits (if it may be)."""

    def __init__(self, statement: Statement, fmt: str, for_spreadsheets: bool = False,
                 client=None) -> None:  # fmt: skip
        self.statement = statement
        self._client = client
        self.media_type = (
            "text/csv; charset=utf-8" if fmt == "csv" else "application/json; charset=utf-8"
        )
        mark = codecs.BOM_UTF8 if for_spreadsheets else b""
        self._pieces = _csv(statement, mark) if fmt == "csv" else _json(statement)

    def __iter__(self) -> Iterator[bytes]:
        client = self._client
        try:
            for piece in self._pieces:
                yield piece  # written (to the client, or to its buffers) when this resumes
                if client is not None and client.unsent() >= UNSENT:
                    with self.statement.lent() as lent:
                        if lent:  # else written ahead, into waitress's buffers
                            client.wait_unsent_below(UNSENT // 2)
        finally:
            self.close()

    def close(self) -> None:
        self._pieces.close()
        self.statement.close()


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one a line


def _dumps(value: object) -> str:
    return _COMPACT.encode(value)


def _json(statement: Statement) -> Iterator[bytes]:
    yield (_dumps(statement.head())[:-1] + ',"entries":[').encode()
    first = True
    for rows in statement.entries():
        entries = [dict(zip(ENTRY, row, strict=True)) for row in rows]
        text = _dumps(entries)[1:-1]  # one encoding per chunk: the list without its brackets
        yield (text if first else "," + text).encode()
        first = False
    yield ("]," + _dumps(statement.tail())[1:]).encode()


def _csv(statement: Statement, mark: bytes) -> Iterator[bytes]:
    """CSV lines after `mark`: `opening`, each `entry`, `closing` (its absence shows a
    cut-short download), then a `total` line per kind (amount, and the count in `id`)."""
    head = statement.head()
    opening = _line("opening", balance_after=head["opening_balance"], created_at=head["from"])
    yield mark + _lines([CSV_COLUMNS, opening])
    for rows in statement.entries():
        for row in rows:
            row[_REASON] = _cell(row[_REASON])
        yield _lines(["entry", *row] for row in rows)
    tail = statement.tail()
    closing = _line("closing", balance_after=tail["closing_balance"], created_at=head["to"])
    totals = (
        _line("total", kind=kind, id=total["count"], amount=total["amount"])
        for kind, total in tail["totals"].items()
    )
    yield _lines([closing, *totals])


def _line(line: str, **values: object) -> list:
    return [line, *(_cell(values.get(name)) for name in CSV_COLUMNS[1:])]


def _cell(value: object) -> object:
    """A cell as text; text that a spreadsheet would run as a formula is quoted with ',
    also behind invisible marks (LRM, ZWNJ, BOM, isolates: a name or reason may start
    with them), and so is text that starts with ' itself (else `'=x` and `=x` would
    read alike)."""
    if isinstance(value, str) and _first_shown(value) in _FORMULA:
        return "'" + value
    return "" if value is None else value


_FORMULA = ("=", "+", "-", "@", "\t", "\r", "'")


def _first_shown(text: str) -> str:
    """The first character of `text` that is not a format character, a combining mark or
    a space (LRM, ZWNJ, U+2060, a soft hyphen, an isolate...), or ''."""
    for char in text:
        if unicodedata.category(char) not in ("Cf", "Mn", "Me", "Zs"):
            return char
    return ""


def _lines(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")
