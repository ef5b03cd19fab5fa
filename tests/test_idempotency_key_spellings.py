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


def test_spaces_around_a_key_are_not_part_of_it_in_the_header_nor_in_the_search(server, admin):
    """HTTP drops the spaces around a header's value: `order 7 ` made the key `order 7`,
    while the search for `order 7 ` found nothing, and a client reconciling by order id
    might sell it again (helper-111). Every way in reads a key so now."""
    seller, key = new_seller(admin, "Key With A Space", credit=100)
    own = server.seller(key)
    made = own.post("/api/sales", {"phone": "09121234567", "amount": 5},
                    headers={"Idempotency-Key": "order 7 "})  # fmt: skip
    assert made.status_code == 201, made.text
    for spelt in ("order%207%20", "%20order%207", "order+7"):
        found = own.get(f"/api/sales?idempotency_key={spelt}").json()["items"]
        assert [sale["id"] for sale in found] == [made.json()["id"]], spelt
    blank = own.get("/api/sales?idempotency_key=%20%20")
    assert blank.status_code == 422 and blank.json()["error"]["field"] == "idempotency_key"
    own.close()


def test_an_idempotency_key_in_a_posts_query_is_refused_not_dropped(server, admin):
    """`POST /api/sales?idempotency_key=order-1` (the search's name for a key) ran the
    sale unkeyed, and the retry sold again (helper-111): 422, nothing written. Other
    query parameters of a POST are ignored, as version 1 did."""
    seller, key = new_seller(admin, "Key In The Query", credit=100)
    own = server.seller(key)
    body = {"phone": "09121234567", "amount": 10}
    for spelt in ("idempotency_key", "Idempotency-Key", "IDEMPOTENCY_KEY", "idempotencyKey",
                  "idempotency-key+", "Idempotency.Key", "x_idempotency_key",
                  "idempotence_key"):  # fmt: skip
        refused = own.post(f"/api/sales?{spelt}=order-1", body)
        assert refused.status_code == 422, refused.text
        named = spelt.replace("+", " ")  # as the query's `+` is read
        assert refused.json()["error"] == {**refused.json()["error"], "field": named}
        asked = own.post(f"/api/credit-requests?{spelt}=order-1", {"amount": 5})
        assert asked.status_code == 422, asked.text
        assert admin.post(f"/api/sellers/{seller['id']}/adjustments?{spelt}=a",
                          {"amount": 1, "reason": "r"}).status_code == 422  # fmt: skip
    assert own.get("/api/sales").json()["items"] == []
    assert own.post("/api/sales?note=x", body).status_code == 201  # ignored, as ever
    # a write that takes no key ignores its query, as ever (the document lists no 422)
    assert admin.post(f"/api/sellers/{seller['id']}/suspend?idempotency_key=x").status_code == 200
    assert admin.post(f"/api/sellers/{seller['id']}/reactivate").status_code == 200
    # A key remembered by the server and revoked since: its 401 comes first, as ever.
    (listed,) = admin.get(f"/api/sellers/{seller['id']}/keys").json()["items"]
    revoked = admin.post(f"/api/sellers/{seller['id']}/keys/{listed['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    late = own.post("/api/sales?idempotency_key=order-2", body)
    assert late.status_code == 401, late.text
    own.close()


def test_an_idempotency_key_under_another_headers_name_is_refused_not_dropped(server, admin):
    """`X-Idempotency-Key: order-1` (another API's name for it) ran the sale unkeyed, and
    the retry sold again: 422 naming the header, nothing written, on each keyed write.
    Other headers are ignored, as version 1 did."""
    seller, key = new_seller(admin, "Key Under Another Name", credit=100)
    own = server.seller(key)
    body = {"phone": "09121234567", "amount": 10}
    for spelt in ("X-Idempotency-Key", "Idempotence-Key", "x-idempotence-key", "IdempotencyKey"):
        refused = own.post("/api/sales", body, headers={spelt: "order-1"})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "validation_error" and "header Idempotency-Key" in error["message"]
        assert error["field"].lower() == spelt.lower(), error
        asked = own.post("/api/credit-requests", {"amount": 5}, headers={spelt: "order-1"})
        assert asked.status_code == 422, asked.text
        adjusted = admin.post(f"/api/sellers/{seller['id']}/adjustments",
                              {"amount": 1, "reason": "r"}, headers={spelt: "a"})  # fmt: skip
        assert adjusted.status_code == 422, adjusted.text
    assert own.get("/api/sales").json()["items"] == []
    # beside Idempotency-Key: the same key is no other (helper-118); another is refused
    other = own.post("/api/sales", body, headers={"Idempotency-Key": "o", "X-Idempotency-Key": "p"})
    assert other.status_code == 422, other.text
    kept = own.post("/api/sales", body, headers={"Idempotency-Key": "order-1", "X-Note": "k"})
    assert kept.status_code == 201, kept.text
    same = {"Idempotency-Key": "order-1", "X-Idempotency-Key": "order-1"}
    again = own.post("/api/sales", body, headers=same)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    own.close()


def test_another_key_headers_name_spelt_with_an_underscore_never_sells_twice(fresh_server):
    """helper-118: waitress drops a header whose name holds `_`, so `X_Idempotency_Key`
    never reached the check above, and the retry sold again: 400, like `Idempotency_Key`."""
    admin_api = fresh_server.admin()
    seller, key = new_seller(admin_api, "underscores", 1_000)
    admin_api.close()
    for header in (b"X_Idempotency_Key: order-9", b"Idempotence_Key: order-9",
                   b"x-idempotency_key: order-9"):  # fmt: skip
        for _attempt in range(2):
            status = raw_sale(fresh_server.url, key, header)
            assert status.startswith(b"HTTP/1.1 400"), f"{header}: it sold: {status}"
    sales = rows_on_disk(
        fresh_server.db_path, "SELECT count(*) FROM sale WHERE seller_id = ?", (seller["id"],)
    )
    assert sales == [(0,)], f"three orders, {sales[0][0]} sales"
