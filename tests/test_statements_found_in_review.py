"""Statements and the sale search: defects found in the review of issue 15, each shown
over HTTP on a real server (both backends) and fixed."""

from __future__ import annotations

import csv
import datetime
import io
import socket
import sqlite3
import time

import jsonschema
import pytest

from chargebox import clock, periods
from chargebox.errors import ValidationError
from tests.support import ADMIN_TOKEN, ServerProcess, run_stress, socket_queues, wait_until
from tests.web_support import SELLER, text_of


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-12-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
        {"from": "9999-12-31T21:00:00Z", "to": "9999-12-31T22:00:00-00:30"},
    ],
)
def test_a_period_whose_ends_tehran_cannot_show_is_a_422_not_a_500(make_seller, params):
    """UTC can store 9999-12-31T23:59Z, but in Asia/Tehran it is the year 10000: the
    statement's from/to (shown in Tehran time) overflowed after the period was accepted."""
    _, seller = make_seller()
    got = seller.get("/api/statements", params=params)
    assert got.status_code == 422, got.text
    assert got.json()["error"]["code"] == "validation_error"
    with pytest.raises(ValidationError):
        periods.period(params)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-12-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"}, "to"),
        ({"from": "2026-12-01", "to": "9999-12-31T21:00:00Z"}, "to"),
        ({"from": "2026-12-01", "to": "9999-12-31T23:00:00-01:00"}, "to"),
        ({"from": "2026-12-01", "to": "0001-01-01"}, "to"),
        ({"from": "9999-12-31T20:31:00Z", "to": "9999-12-31T20:40:00Z"}, "from"),
        ({"from": "0001-01-01", "to": "2026-12-01"}, "from"),
        ({"day": "9999-12-31"}, "day"),
    ],
)
def test_a_period_at_the_end_of_the_calendar_names_the_parameter_at_fault(
    make_seller, params, field
):
    """A `to` that Tehran's time cannot show (the year 10000 there) was refused naming
    `from`, the first parameter given, whichever end was at fault."""
    _, seller = make_seller()
    got = seller.get("/api/statements", params=params)
    assert got.status_code == 422, got.text
    assert got.json()["error"]["field"] == field
    with pytest.raises(ValidationError) as refused:
        periods.period(params)
    assert refused.value.field == field
    assert refused.value.message == "the period is outside the years 1 to 9998"


@pytest.mark.parametrize("accept", ["text/csv;q=0.00", "text/csv; q=0.000", "text/csv;Q=0."])
def test_text_csv_with_a_zero_quality_is_not_asked_for(make_seller, accept):
    """RFC 9110: q=0, 0., 0.0, 0.00 and 0.000 all mean 'not acceptable'."""
    _, seller = make_seller()
    got = seller.get("/api/statements?day=2026-12-01", headers={"Accept": accept})
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"].startswith("application/json"), accept


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        ("text/csv;q=0.5, application/json", False),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv, application/json", True),
        ("text/csv, */*", True),
        ("*/*", False),
        ("application/json, text/csv;q=0.999", False),
    ],
)
def test_text_csv_is_answered_only_when_liked_no_less_than_json(make_seller, accept, csv):
    """A text/csv of lower quality than application/json asked for JSON, yet got CSV."""
    _, seller = make_seller()
    got = seller.get("/api/statements?day=2026-12-01", headers={"Accept": accept})
    assert got.status_code == 200, got.text
    wanted = "text/csv" if csv else "application/json"
    assert got.headers["Content-Type"].startswith(wanted), accept


STALLED_DEADLINE = 60  # seconds: a liveness bound (request timeout 2 s, checked every 1 s)


@pytest.mark.sqlite_only  # the fix is in the HTTP server; the checkpoint shows it on SQLite
def test_a_statement_its_client_stops_reading_ends_and_lets_sqlite_checkpoint(tmp_path):
    """A year's statement of a busy seller (~95 MB of JSON) to a client that reads nothing:
    the worker filled waitress's 64 MB of buffers and waited, its read snapshot open. The
    server marked the connection to close after CHARGEBOX_REQUEST_TIMEOUT, but waitress
    closes only when the socket turns writable, which it never does: the thread and the
    snapshot were held for good (every checkpoint busy, the WAL growing). Now the stalled
    connection is shut down, the worker's send fails, and the statement closes. (Its
    entries are read a chunk at a time since, each in a snapshot of its own, and it lends
    its turn while its client does not read: the WAL is free meanwhile, and the seller's
    next statement is served, either way; the connection's end is what shows the cut.)"""
    path = tmp_path / "history" / "chargebox.db"
    made = run_stress("history", "--db", str(path), "--entries", "420000", "--sellers", "1",
                      "--phones", "1000", "--quiet", timeout=600)  # fmt: skip
    assert made.returncode == 0, made.stderr
    server = ServerProcess(path, threads=4, env={"CHARGEBOX_REQUEST_TIMEOUT": "2"}).start()
    try:
        host, port = server.url.removeprefix("http://").split(":")
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(
            b"GET /api/statements?seller_id=1&from=2000-01-01&to=2100-01-01 HTTP/1.1\r\n"
            b"Host: x\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n\r\n"
        )
        stalled.settimeout(STALLED_DEADLINE)
        head = b""
        while b"\r\n" not in head:  # the statement streams: its read snapshot is open
            chunk = stalled.recv(64)
            assert chunk, "the statement's connection closed before its answer began"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 "), head
        admin = server.admin()
        adjusted = admin.post("/api/sellers/1/adjustments", {"amount": 1, "reason": "wal"})
        assert adjusted.status_code == 201, adjusted.text  # a write for the WAL to hold
        reader = sqlite3.connect(path, timeout=5)
        started = time.monotonic()
        while reader.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() - started < STALLED_DEADLINE, "a snapshot is still held"
            time.sleep(0.2)  # polling for the server to let the snapshot go, bounded above
        reader.close()

        def only_the_clients_end() -> bool:
            """The server's end has left ESTABLISHED (its FIN waits behind what the client
            never reads, so the client's end stays there)."""
            return all(client for client, _, _ in socket_queues(stalled.getsockname()[1]))

        wait_until(only_the_clients_end, "the server shuts the stalled one down", STALLED_DEADLINE)
        again = admin.get("/api/statements?seller_id=1&day=2000-01-01")
        assert again.status_code == 200, again.text
        assert admin.get("/health").status_code == 200
        admin.close()
        stalled.close()
    finally:
        assert server.stop() == 0


def test_an_empty_format_is_a_422_as_any_format_outside_json_and_csv(make_seller):
    """openapi.json: format is json or csv; `format=` was taken as no format (200)."""
    _, seller = make_seller()
    got = seller.get("/api/statements?day=2026-12-01&format=")
    assert got.status_code == 422, got.text
    assert got.json()["error"]["field"] == "format"


def test_csv_reasons_that_a_spreadsheet_would_run_are_quoted_and_amounts_are_not(
    admin, make_seller
):
    """OWASP's CSV injection advice, checked over HTTP (the code had it, no test did): an
    adjustment's or a refund's reason starting with =, +, - or @ starts with ' in the
    CSV, also behind invisible marks, and so does one starting with ' (tab and CR
    cannot start a reason: it is trimmed and refuses control characters), JSON keeps
    it as written, and a negative amount stays a number."""
    seller_row, seller = make_seller(credit=10_000)
    formulas = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                "\u200e=1+1", "\u2066=1+1\u2069", "\u2060=1+1", "'=quoted"]  # fmt: skip
    for reason in formulas:
        made = admin.post(f"/api/sellers/{seller_row['id']}/adjustments",
                          {"amount": -1, "reason": reason})  # fmt: skip
        assert made.status_code == 201, made.text
    sale = seller.post("/api/sales", {"phone": "09121234567", "amount": 1000}).json()
    refunded = admin.post(f"/api/sales/{sale['id']}/refund", {"reason": "=1+1"})
    assert refunded.status_code == 201, refunded.text
    for bad in ("\t=1", "\r=1"):
        refused = admin.post(f"/api/sales/{sale['id']}/refund", {"reason": bad + "\x00"})
        assert refused.status_code == 422, refused.text
    period = {"from": "2000-01-01", "to": "2100-01-01"}
    text = seller.get("/api/statements", params={**period, "format": "csv"}).text
    entries = [line for line in csv.DictReader(io.StringIO(text)) if line["line"] == "entry"]
    reasons = [line["reason"] for line in entries if line["reason"]]
    assert reasons == ["'" + reason for reason in [*formulas, "=1+1"]]
    amounts = [line["amount"] for line in entries]
    assert amounts == ["10000", *["-1"] * len(formulas), "-1000", "1000"]
    shown = seller.get("/api/statements", params=period).json()["entries"]
    assert [e["reason"] for e in shown if e["reason"]] == [*formulas, "=1+1"]


@pytest.mark.parametrize("params", [{"day": "1900-01-01"}, {"jmonth": "1300-01"}])
def test_a_statement_before_1946_shows_its_bounds_as_rfc_3339_date_times(make_seller, params):
    """Tehran's offset was +03:25:44 until 1946: `from`/`to` came out as
    1900-01-01T00:00:00.000000+03:25:44, which is no RFC 3339 date-time (openapi.json's
    format), and no ISO 8601 offset either. They are shown in UTC then: the same instant."""
    _, seller = make_seller()
    body = seller.get("/api/statements", params=params).json()
    checker = jsonschema.FormatChecker()
    for name in ("from", "to"):
        assert checker.conforms(body[name], "date-time"), body[name]
    start, end = periods.period(params).bounds
    assert (clock.stamp(_parsed(body["from"])), clock.stamp(_parsed(body["to"]))) == (
        start,
        end,
    )


def _parsed(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_sellers_find_a_sale_page_says_a_found_sale_was_refunded_and_when(world, admin):
    """A support desk that looks a refunded sale up by its order id must not be told it
    stands: the page showed phone, amount and balance, not the refund the API answers."""
    made = world.api.post("/api/sales", {"phone": "09351112244", "amount": 2_000},
                          headers={"Idempotency-Key": "order-refunded"})  # fmt: skip
    kept = world.api.post("/api/sales", {"phone": "09351112244", "amount": 1_000},
                          headers={"Idempotency-Key": "order-kept"})  # fmt: skip
    assert made.status_code == kept.status_code == 201
    sale = made.json()["id"]
    assert admin.post(f"/api/sales/{sale}/refund", {"reason": "not delivered"}).status_code == 201
    browser = world.browser(SELLER)
    page = browser.get("/seller/sales/found?phone=09351112244").text
    assert f'id="found-refunded-{sale}"' in page
    assert text_of(page, f"found-refunded-{sale}").startswith("refunded ")
    assert f'id="found-refunded-{kept.json()["id"]}"' not in page
