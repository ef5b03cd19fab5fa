"""Requests broken at the HTTP level: refused before routing, in the error shape, changing nothing.

These are sent over a raw socket, since an HTTP library would refuse to send
them. Each refusal must carry a code that the README's error table and the
served OpenAPI document both list; `internal_error` is for bugs only. And the
framing of an answer with no body: a HEAD's.
"""

from __future__ import annotations

import json
import re
import socket
import types
import urllib.parse
from pathlib import Path

import pytest
from waitress.adjustments import Adjustments
from waitress.parser import HTTPRequestParser
from waitress.task import WSGITask

from chargebox.framing import Parser, Task
from tests.support import ROOT, exchange


def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send `head` (request line and headers, without the blank line) and `body` as they are."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload)


def sale_head(key: str, length: int, *extra: str) -> bytes:
    lines = [
        "POST /api/sales HTTP/1.1",
        "Host: chargebox",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "Connection: close",
        *extra,
    ]
    return "\r\n".join(lines).encode("latin-1")


SALE = json.dumps({"phone": "09121234567", "amount": 1000}).encode()


@pytest.fixture
def funded(make_seller):
    """A seller with 100,000 toman, its key, and a way to see that nothing moved."""
    seller, api = make_seller(credit=100_000)
    key = api.session.headers["Authorization"].removeprefix("Bearer ")

    def untouched() -> None:
        assert api.get("/api/me").json()["balance"] == 100_000
        assert api.get("/api/sales").json()["items"] == []

    return key, api, untouched


def documented_codes() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    in_readme = set(re.findall(r"^\| \d{3} \| `(\w+)` \|", readme, re.MULTILINE))
    schema = json.loads((ROOT / "chargebox" / "openapi.json").read_text())
    error = schema["components"]["schemas"]["Error"]["properties"]["error"]
    return in_readme & set(error["properties"]["code"]["enum"])


def assert_refused(answer: tuple[int, dict], status: int, code: str) -> None:
    got_status, body = answer
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert code in documented_codes(), f"{code} is missing from the README or openapi.json"


def test_a_sale_repeating_its_idempotency_key_is_400_and_a_retry_with_one_key_sells_once(
    server, funded
):
    """waitress would join the two values into one key `a, b`: one order, two charges."""
    key, api, untouched = funded
    head = sale_head(key, len(SALE), "Idempotency-Key: order-1", "Idempotency-Key: order-2")
    assert_refused(raw_request(server.url, head, SALE), 400, "bad_request")
    untouched()
    for _ in range(2):
        sold = api.post("/api/sales", json.loads(SALE), headers={"Idempotency-Key": "order-1"})
        assert sold.status_code == 201, sold.text
    assert [s["amount"] for s in api.get("/api/sales").json()["items"]] == [1000]


@pytest.mark.parametrize(
    "extra",
    [
        ("Authorization: Bearer someone-else",),
        ("Content-Type: text/plain",),
        ("Content-Type: application/json",),
        ("Host: elsewhere",),
        ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    ],
    ids=["authorization", "content-type", "same-content-type", "host", "transfer-encoding"],
)
def test_a_repeated_meaningful_header_is_400_bad_request_and_changes_nothing(server, funded, extra):
    key, _, untouched = funded
    assert_refused(
        raw_request(server.url, sale_head(key, len(SALE), *extra), SALE), 400, "bad_request"
    )
    untouched()


@pytest.mark.parametrize(
    "folded",
    [
        ("Idempotency-Key: order-1", " Authorization: Bearer someone-else"),
        ("Idempotency-Key: order-1", "\tmore"),
        ("X-Note: a", " b"),
    ],
    ids=["folded-into-the-key", "tab-folded-key", "any-header"],
)
def test_a_header_folded_onto_the_next_line_is_400_bad_request_and_changes_nothing(
    server, funded, folded
):
    """waitress would join a line that starts with a space or a tab to the one before
    (RFC 9112's obs-fold): one key `order-1 Authorization: ...` here, where a proxy in
    front may read a second header."""
    key, _, untouched = funded
    assert_refused(raw_request(server.url, sale_head(key, len(SALE), *folded), SALE), 400,
                   "bad_request")  # fmt: skip
    untouched()


def test_a_folded_header_is_refused_with_its_request_line_kept_for_the_log():
    """Refused after waitress read the request line, as the other header refusals are:
    the access log and the metrics name its method and path (helper-82)."""
    parser = Parser(Adjustments())
    parser.received(b"POST /api/sales HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n b\r\n"
                    b"Content-Length: 0\r\n\r\n")  # fmt: skip
    assert parser.completed and "folded" in parser.error.body
    assert (parser.command, parser.path) == ("POST", "/api/sales")


@pytest.mark.parametrize("encoding", ["gzip", "chunked, identity", "deflate, chunked"])
def test_a_transfer_encoding_other_than_chunked_is_501_unsupported_and_changes_nothing(
    server, funded, encoding
):
    key, _, untouched = funded
    head = sale_head(key, len(SALE)).replace(
        f"Content-Length: {len(SALE)}".encode(), f"Transfer-Encoding: {encoding}".encode()
    )
    assert_refused(raw_request(server.url, head, SALE), 501, "unsupported_transfer_encoding")
    untouched()


def test_chunked_applied_twice_is_400_bad_request_and_changes_nothing(server, funded):
    """RFC 9112 forbids chunked twice; waitress read it as once, a proxy may not."""
    key, _, untouched = funded
    head = sale_head(key, len(SALE)).replace(
        f"Content-Length: {len(SALE)}".encode(), b"Transfer-Encoding: chunked, chunked"
    )
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SALE), SALE)
    assert_refused(raw_request(server.url, head, body), 400, "bad_request")
    untouched()


@pytest.mark.parametrize(
    "extra, length",
    [
        ((f"Content-Length: {len(SALE)}",), len(SALE)),  # repeated, even with one value
        ((), f"+{len(SALE)}"),
        ((), "-1"),
        ((), f"{len(SALE)}, {len(SALE)}"),
        (("X-Note: a\x01b",), len(SALE)),
        (("X-Note: a\x7fb",), len(SALE)),
        (("Bad Header: x",), len(SALE)),
    ],
    ids=["repeated-length", "signed-plus", "signed-minus", "listed", "control", "delete", "space"],
)
def test_a_malformed_request_is_400_bad_request_and_changes_nothing(server, funded, extra, length):
    key, _, untouched = funded
    head = sale_head(key, length, *extra)
    assert_refused(raw_request(server.url, head, SALE), 400, "bad_request")
    untouched()


@pytest.mark.parametrize(
    "broken, said",
    [
        ("{header}\nX-Note: a", "Bare CR or LF found in header line"),
        ("{header}\rX-Note: a", "Bare CR or LF found in header line"),
        (" {header}", "Malformed header line"),
    ],
    ids=["bare-lf", "bare-cr", "leading-space"],
)
def test_a_malformed_header_line_is_400_and_its_words_are_not_sent_back(
    server, funded, broken, said
):
    """waitress's refusal quotes the line it could not read; the answer says what was wrong
    without it: a seller's key (or the admin's token) in an error body would be kept by
    whatever logs the client's errors (docs/api.md: messages never hold a token)."""
    key, _, untouched = funded
    line = broken.format(header=f"Authorization: Bearer {key}")
    head = f"GET /api/me HTTP/1.1\r\n{line}\r\nHost: chargebox\r\nConnection: close"
    status, body = raw_request(server.url, head.encode("latin-1"))
    assert_refused((status, body), 400, "bad_request")
    assert body["error"]["message"] == f"the HTTP request is malformed: {said}", body
    assert key not in json.dumps(body) and key[-8:] not in json.dumps(body)
    untouched()


def test_a_chunked_body_with_trailer_fields_is_400_and_sells_nothing(server, funded):
    """waitress drops a chunked body's trailer: an Idempotency-Key sent there would be
    lost, the sale run unkeyed and each retry sold again. Without a trailer, it sells."""
    key, api, untouched = funded
    head = sale_head(key, 0, "Transfer-Encoding: chunked").replace(b"Content-Length: 0\r\n", b"")
    chunked = f"{len(SALE):x}\r\n".encode() + SALE + b"\r\n0\r\n"
    status, body = raw_request(server.url, head, chunked + b"Idempotency-Key: order 7\r\n\r\n")
    assert_refused((status, body), 400, "bad_request")
    assert "trailer" in body["error"]["message"], body
    untouched()
    assert raw_request(server.url, head, chunked + b"\r\n")[0] == 201
    assert api.get("/api/me").json()["balance"] == 99_000


@pytest.mark.parametrize("size", ["200000", "ffffffffffffffffffffff"])
def test_a_chunk_announced_past_the_limit_is_413_as_announced_and_sells_nothing(
    server, funded, size
):
    """waitress counted only the bytes that came: a chunk announced past the limit, its
    bytes never sent, got no answer until the request timeout (helper-134). Refused as
    a Content-Length past the limit is, at once, with the connection left to close."""
    key, _, untouched = funded
    head = sale_head(key, 0, "Transfer-Encoding: chunked").replace(b"Content-Length: 0\r\n", b"")
    status, body = raw_request(server.url, head, f"{size}\r\n".encode() + SALE + b"\r\n0\r\n")
    assert_refused((status, body), 413, "payload_too_large")
    untouched()
    parser = Parser(Adjustments(max_request_body_size=1 << 20))
    sent = head + b"\r\n\r\n" + f"{size}\r\n".encode()
    while sent and not parser.completed:
        sent = sent[parser.received(sent) :]
    assert parser.completed and parser.error is not None and parser.error.code == 413


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_a_chunked_body_whose_end_comes_in_two_reads_is_read_whole(cut):
    """The last CRLF cut in two (a slow link, a proxy's segments): waitress keeps the "\r"
    it has read as a trailer begun, and once the "\n" came, no trailer was sent at all
    (helper-126: a 400 at random)."""
    sent = (b"POST /api/sales HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(SALE):x}\r\n".encode() + SALE + b"\r\n0\r\n\r\n")  # fmt: skip
    parser = Parser(Adjustments())
    for part in (sent[:-cut], sent[-cut:]):  # each read fed whole, as a channel feeds it
        while part and not parser.completed:
            part = part[parser.received(part) :]
    assert parser.completed and parser.error is None, parser.error
    assert parser.get_body_stream().read() == SALE


def test_a_request_target_outside_ascii_is_400_saying_to_percent_encode_it(server, funded):
    """curl sends a URL's Persian digits as they are; HTTP allows ASCII only there (waitress
    said "Bad URI"). The same value percent-encoded, as browsers send it, is found."""
    key, _, _ = funded
    phone = "۰۹۱۲۱۲۳۴۵۶۷"
    head = f"GET /api/sales?phone={phone} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}"
    status, body = raw_request(server.url, (head + "\r\nConnection: close").encode())
    assert_refused((status, body), 400, "bad_request")
    assert "percent-encode" in body["error"]["message"], body
    for target in (f"//api/sales?phone={phone}", f"/api/sales?phone={phone}&x=//"):
        raw = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close".encode()
        status, body = raw_request(server.url, raw)  # `//...`: waitress splits it unread
        assert status == 400 and "percent-encode" in body["error"]["message"], body
    encoded = head.replace(phone, urllib.parse.quote(phone)).encode()
    status, body = raw_request(server.url, encoded + b"\r\nConnection: close")
    assert status == 200 and body["items"] == [], body


def test_a_request_line_without_its_version_is_400_and_sells_nothing(server, funded):
    """waitress ran `POST /api/sales` (no `HTTP/1.1`) as HTTP/1.0, its headers read, where
    HTTP/0.9 has none and a proxy in front may read it otherwise."""
    key, _, untouched = funded
    head = sale_head(key, len(SALE)).replace(b" HTTP/1.1\r\n", b"\r\n", 1)
    status, body = raw_request(server.url, head, SALE)
    assert_refused((status, body), 400, "bad_request")
    assert "version" in body["error"]["message"], body
    untouched()


def test_a_body_framed_both_ways_is_400_and_the_request_hidden_behind_it_never_runs(server, funded):
    """Content-Length and Transfer-Encoding together: a proxy that reads the length would
    pass on, as this request's body, what the server reads as a second request."""
    key, _, untouched = funded
    hidden = sale_head(key, len(SALE)) + b"\r\n\r\n" + SALE
    head = sale_head(key, 5 + len(hidden), "Transfer-Encoding: chunked")
    first = head.replace(b"Connection: close", b"Connection: keep-alive")
    received = exchange(server.url, first + b"\r\n\r\n0\r\n\r\n" + hidden)
    assert received.count(b"HTTP/1.1 ") == 1, received  # one answer; the connection closed
    status = int(received.split(b" ")[1])
    assert_refused((status, json.loads(received.partition(b"\r\n\r\n")[2])), 400, "bad_request")
    untouched()


def test_headers_ended_with_bare_line_feeds_are_400_at_once_not_left_waiting(server, funded):
    _, _, untouched = funded
    for sent in (
        b"GET /health HTTP/1.1\nHost: chargebox\n\n",
        b"\r\n\nPOST /api/sales HTTP/1.1\nHost: chargebox\nContent-Length: 2\n\r\n{}",
    ):
        received = exchange(server.url, sent)
        assert received.startswith(b"HTTP/1.1 400 "), received  # its own request line, read
        body = json.loads(received.partition(b"\r\n\r\n")[2])
        assert_refused((400, body), 400, "bad_request")
    untouched()


def test_headers_of_300_kb_are_431_headers_too_large_and_change_nothing(server, funded):
    key, _, untouched = funded
    head = sale_head(key, len(SALE), "X-Padding: " + "a" * 300_000)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # waitress answers once it has read its limit of 256 KiB, and closes.
        sock.sendall(head[: 256 * 1024])  # its limit exactly: nothing is left unread
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status = int(received.split(b" ")[1])
    head, _, payload = received.partition(b"\r\n\r\n")
    assert_refused((status, json.loads(payload)), 431, "headers_too_large")
    for header in (b"Cache-Control: no-store", b"X-Content-Type-Options: nosniff"):
        assert header in head.split(b"\r\n"), head  # as on every answer of the app
    untouched()


def test_every_refusal_code_of_the_http_layer_is_documented():
    from chargebox.framing import WAITRESS_ERRORS

    codes = {code for code, _ in WAITRESS_ERRORS.values()}
    assert codes <= documented_codes(), codes - documented_codes()
    assert "internal_error" not in codes


def test_readme_and_openapi_list_the_same_error_codes():
    readme = (ROOT / "README.md").read_text()
    in_readme = set(re.findall(r"^\| \d{3} \| `(\w+)` \|", readme, re.MULTILINE))
    schema = json.loads(Path(ROOT / "chargebox" / "openapi.json").read_text())
    enum = schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert in_readme == set(enum["enum"])


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_head_of_a_streamed_statement_sends_no_body_bytes(server, funded, fmt):
    """A statement streams (no Content-Length): waitress framed its HEAD as chunked and
    sent a last chunk after the headers, bytes a client reads as the next answer's."""
    key, api, _ = funded
    head = (f"HEAD /api/statements?day=2026-12-05&format={fmt} HTTP/1.1\r\nHost: chargebox\r\n"
            f"Authorization: Bearer {key}\r\n\r\n").encode()  # fmt: skip
    received = exchange(server.url, head)
    status, _, rest = received.partition(b"\r\n")
    headers, _, after = rest.partition(b"\r\n\r\n")
    assert status.split()[1] == b"200", received
    assert b"transfer-encoding" not in headers.lower() and after == b"", received


class _Recorder:
    """What a waitress task writes to its channel, one entry per write."""

    def __init__(self, app) -> None:
        self.adj = Adjustments()
        self.server = types.SimpleNamespace(application=app, adj=self.adj, effective_port=80,
                                            server_name="chargebox")  # fmt: skip
        self.addr = ("127.0.0.1", 50000)
        self.connected = True
        self.writes: list[bytes] = []

    def write_soon(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def check_client_disconnected(self) -> bool:
        return False


def _answered(task_class, head: bytes, app) -> tuple[list[bytes], bool]:
    """What a task of `task_class` writes for `app`, and whether it closes the connection."""
    parser = HTTPRequestParser(Adjustments())
    parser.received(head + b"\r\n\r\n")
    channel = _Recorder(app)
    task = task_class(channel, parser)
    task.service()
    return channel.writes, task.close_on_finish


def _app(status: str, chunks: list[bytes], declared: int | None):
    def app(environ, start_response):
        headers = [("Content-Type", "application/json")]
        if declared is not None:
            headers.append(("Content-Length", str(declared)))
        start_response(status, headers)
        return iter(chunks)  # not a list of one: waitress would size that itself

    return app


_GET = b"GET /api/me HTTP/1.1\r\nHost: chargebox"
_ONE = b'{"id": 1}'


@pytest.mark.parametrize(
    ("status", "chunks", "declared", "head", "writes"),
    [
        ("201 Created", [_ONE], 9, _GET, 1),  # a sale's answer: head and body together
        ("200 OK", [_ONE], 9, b"GET /api/me HTTP/1.0", 1),  # and closed after it
        ("200 OK", [_ONE], 20, _GET, 1),  # fewer bytes than declared: closed after
        ("200 OK", [_ONE], 4, _GET, 2),  # more than declared: cut, as waitress cuts it
        ("200 OK", [b'{"id":', b" 1}"], 9, _GET, 2),  # the first chunk with the head
        ("200 OK", [b"x" * 100_000], 100_000, _GET, 2),  # over ONE_SEND_MAX: no copy
        ("200 OK", [b'{"items": []}'], None, _GET, 3),  # streamed: head, chunk, last chunk
        ("204 No Content", [], 0, _GET, 1),  # no body: the head alone
    ],
    ids=["sized", "http-1.0", "short", "long", "chunks", "large", "streamed", "no-body"],
)
def test_an_answer_is_the_same_bytes_as_waitress_sends_and_a_sized_one_is_one_write(
    status, chunks, declared, head, writes
):
    """framing.Task sends a sized answer's head and body in one write (one system call,
    not two); the bytes and the connection's fate are waitress's own, whatever the
    answer's framing."""
    theirs, they_close = _answered(WSGITask, head, _app(status, chunks, declared))
    ours, we_close = _answered(Task, head, _app(status, chunks, declared))
    strip = re.compile(rb"^Date: .*\r\n", re.MULTILINE)
    assert strip.sub(b"", b"".join(ours)) == strip.sub(b"", b"".join(theirs))
    assert we_close == they_close
    assert len(ours) == writes, ours


def test_an_answer_whose_buffer_fails_once_it_is_handed_over_is_not_answered_again():
    """waitress answers 500 only while no head was written; the one write hands the head
    over with the body, so a buffer that then fails (a temporary file it cannot make) ends
    the connection, as it does after waitress's own write of the head."""

    class Failing(_Recorder):
        def write_soon(self, data: bytes) -> int:
            raise OSError("no room for a buffer")

    parser = HTTPRequestParser(Adjustments())
    parser.received(_GET + b"\r\n\r\n")
    task = Task(Failing(_app("200 OK", [_ONE], 9)), parser)
    with pytest.raises(OSError):
        task.service()
    assert task.wrote_header and task.close_on_finish


def test_cookie_headers_sent_apart_are_read_as_one_headers_pairs(server):
    """A proxy that passes a browser's several `Cookie` headers through: waitress joined
    them with ", ", and the session at the seam read as `S, pref=x`, no session (a
    sign-out on every page). They are joined with "; " now, as an HTTP/2 proxy joins them
    (helper-90's LOW, s33); a single header's commas are left as they were sent."""
    from chargebox.web.sessions import SESSION_COOKIE
    from tests.test_trusted_proxy import cookie_value, sign_in

    _, signed = sign_in(server.url, {})
    session = cookie_value(signed, SESSION_COOKIE)
    pages = {
        where: exchange(server.url, b"GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        + cookies.format(session=session).encode() + b"\r\n")
        for where, cookies in (
            ("first", "Cookie: chargebox_session={session}\r\nCookie: pref=x\r\n"),
            ("last", "Cookie: pref=x\r\nCookie: lang=en\r\n"
                     "Cookie: chargebox_session={session}\r\n"),
            ("one", "Cookie: pref=x, chargebox_session={session}\r\n"),
        )
    }  # fmt: skip
    assert pages["first"].startswith(b"HTTP/1.1 200 "), pages["first"][:200]
    assert pages["last"].startswith(b"HTTP/1.1 200 "), pages["last"][:200]
    assert pages["one"].startswith(b"HTTP/1.1 303 ")  # one pair: `pref`, its value with a comma
    parser = Parser(Adjustments())
    parser.received(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1, b=2\r\ncookie:  c=3 \r\n\r\n")
    assert parser.headers["COOKIE"] == "a=1, b=2; c=3"
