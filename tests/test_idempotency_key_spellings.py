"""An Idempotency-Key spelt with an underscore must not be silently dropped.

Found in review: waitress drops every header whose name holds `_` (so that it cannot
pose as another in the WSGI environ). `Idempotency_Key: order-77` therefore reaches
the application as no key at all, the sale runs unkeyed, and the client's retry
with the same header sells again: one order, two charges, the harm issue 10
item 3 closed for a repeated header. framing.Parser already folds `_` into
`-` when it counts repeats (so `Idempotency-Key` + `Idempotency_Key` is a 400),
yet lets the underscore spelling alone through. Refuse it (400 bad_request),
like a repeated key, so that nothing is sold without the key the client sent.
"""

from __future__ import annotations

import socket

from tests.support import new_seller, rows_on_disk


def raw_sale(url: str, key: str, header: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    body = b'{"phone": "09121234567", "amount": 7}'
    request = (
        b"POST /api/sales HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
        + b"\r\nContent-Type: application/json\r\n" + header + b"\r\nConnection: close\r\n"
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_an_idempotency_key_spelt_with_an_underscore_never_sells_twice(fresh_server):
    admin_api = fresh_server.admin()
    seller, key = new_seller(admin_api, "underscore", 1_000)
    admin_api.close()
    for _attempt in range(2):  # the order, then the client's retry with the same header
        status = raw_sale(fresh_server.url, key, b"Idempotency_Key: order-77")
        assert status.startswith(b"HTTP/1.1 4"), f"the key was dropped and it sold: {status}"
    sales = rows_on_disk(
        fresh_server.db_path, "SELECT count(*) FROM sale WHERE seller_id = ?", (seller["id"],)
    )
    assert sales == [(0,)], f"one order, {sales[0][0]} sales"
