"""HTTP refusals of docs/api.md against a real server process: every error code, in its JSON shape.

Covers 400 malformed_json, 401/403 auth, 404 unknown routes and ids, 405 with
Allow, 409 insufficient_credit, 413 payload_too_large and 422 validation_error,
and checks that a refused request records nothing. Helpers (`assert_error`,
which checks the one error shape, `sell`, `items`...) come from test_http_contract.
"""

from __future__ import annotations

import pytest

from tests.support import ADMIN_TOKEN, Api, reconciled_balances
from tests.test_http_contract import assert_error, balance_of, items, sell, unique_phone

BIG_ID = 999_999_999_999_999_999


def post_raw(api: Api, path: str, data: bytes | str, headers: dict | None = None):
    return api.request(
        "POST", path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )


# -----------------------------------------------------------------------------------------

EVERY_PROTECTED_ROUTE = [
    ("POST", "/api/sellers"),
    ("GET", "/api/sellers"),
    ("GET", "/api/sellers/1"),
    ("GET", "/api/me"),
    ("POST", "/api/credit-requests"),
    ("GET", "/api/credit-requests"),
    ("GET", "/api/credit-requests/1"),
    ("POST", "/api/credit-requests/1/approve"),
    ("POST", "/api/credit-requests/1/reject"),
    ("POST", "/api/sellers/1/adjustments"),
    ("POST", "/api/sales"),
    ("GET", "/api/sales"),
    ("GET", "/api/sales/1"),
    ("GET", "/api/ledger"),
    ("GET", "/api/phones"),
    ("POST", "/api/phones"),
    ("GET", "/api/audit"),
]
ADMIN_ONLY = [
    ("POST", "/api/sellers", {"name": "x"}),
    ("GET", "/api/sellers", None),
    ("GET", "/api/sellers/1", None),
    ("POST", "/api/credit-requests/1/approve", None),
    ("POST", "/api/credit-requests/1/reject", None),
    ("POST", "/api/sellers/1/adjustments", {"amount": 5, "reason": "r"}),
    ("GET", "/api/phones", None),
    ("POST", "/api/phones", {"number": "09121234567"}),
    ("GET", "/api/audit", None),
]
SELLER_ONLY = [
    ("GET", "/api/me", None),
    ("POST", "/api/credit-requests", {"amount": 5}),
    ("POST", "/api/sales", {"phone": "09121234567", "amount": 5}),
]


@pytest.mark.parametrize(("method", "path"), EVERY_PROTECTED_ROUTE)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer no-such-token",
        "Bearer ",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        f"Token {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        f"Bearer {ADMIN_TOKEN}x",
    ],
)
def test_a_missing_unknown_or_malformed_token_is_401_with_a_challenge(
    anonymous, method, path, authorization
):
    headers = {"Authorization": authorization} if authorization is not None else None
    response = anonymous.request(method, path, {"amount": 5}, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
def test_a_seller_on_an_admin_route_is_403(server, make_seller, method, path, body):
    seller, api = make_seller(credit=1_000)
    assert_error(api.request(method, path, body), 403, "forbidden")
    assert balance_of(api) == 1_000
    assert reconciled_balances(server.db_path)[seller["id"]] == 1_000


@pytest.mark.parametrize(("method", "path", "body"), SELLER_ONLY)
def test_the_admin_on_a_seller_only_route_is_403(admin, method, path, body):
    assert_error(admin.request(method, path, body), 403, "forbidden")


@pytest.mark.parametrize("path", ["/api/credit-requests", "/api/sales", "/api/ledger"])
def test_a_seller_may_not_list_another_sellers_records(make_seller, path):
    mine, api = make_seller()
    other, _ = make_seller()
    assert_error(api.get(f"{path}?seller_id={other['id']}"), 403, "forbidden")
    assert api.get(f"{path}?seller_id={mine['id']}").status_code == 200


def test_a_seller_reading_another_sellers_request_or_sale_gets_404(make_seller):
    _, owner = make_seller(credit=1_000)
    _, stranger = make_seller()
    request_id = owner.post("/api/credit-requests", {"amount": 5}).json()["id"]
    sale_id = sell(owner, 100).json()["id"]
    assert_error(stranger.get(f"/api/credit-requests/{request_id}"), 404, "not_found")
    assert_error(stranger.get(f"/api/sales/{sale_id}"), 404, "not_found")
    assert owner.get(f"/api/sales/{sale_id}").status_code == 200


# -----------------------------------------------------------------------------------------

MALFORMED = [
    b"",
    b" ",
    b"{",
    b"not json",
    b"{'amount': 5}",
    b'{"amount": 5',
    b"[]",
    b'[{"amount": 5}]',
    b"1",
    b'"text"',
    b"null",
    b"true",
    b"\xff\xfe{}",
    b'{"amount": 5, "note": "\xc3"}',
    b'{"amount": 5, "amount": 6}',
    b'{"amount": NaN}',
    b'{"amount": Infinity}',
    b'{"amount": -Infinity}',
    b'{"amount": 5} {}',
]


@pytest.mark.parametrize("body", MALFORMED)
def test_a_body_that_is_not_a_json_object_is_400_and_records_nothing(make_seller, body):
    _, api = make_seller()
    assert_error(post_raw(api, "/api/credit-requests", body), 400, "malformed_json")
    assert items(api, "/api/credit-requests") == []


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("admin", "/api/sellers"),
        ("seller", "/api/credit-requests"),
        ("admin", "/api/sellers/{id}/adjustments"),
        ("seller", "/api/sales"),
        ("admin", "/api/phones"),
    ],
)
def test_every_json_route_refuses_duplicate_keys_and_bad_utf8_with_400(
    admin, make_seller, who, path
):
    seller, api = make_seller(credit=5_000)
    caller, path = (admin if who == "admin" else api), path.format(id=seller["id"])
    duplicate = (
        b'{"name": "a", "number": "09121234567", "phone": "09121234567", '
        b'"amount": 5, "reason": "r", "amount": 6}'
    )
    assert_error(post_raw(caller, path, duplicate), 400, "malformed_json")
    assert_error(post_raw(caller, path, b'{"name": "\xe9"}'), 400, "malformed_json")
    assert balance_of(api) == 5_000


def test_a_name_in_utf8_round_trips(admin):
    created = post_raw(admin, "/api/sellers", '{"name": "فروشگاه علی"}'.encode())
    assert created.status_code == 201, created.text
    assert admin.get(created.headers["Location"]).json()["name"] == "فروشگاه علی"


# -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/api"),
        ("GET", "/api/nope"),
        ("GET", "/api/sellers/abc"),
        ("GET", "/api/sellers/-1"),
        ("GET", "/api/sellers/1234567890123456789012"),
        ("POST", "/api/credit-requests/1/cancel"),
        ("GET", "/api/sellers/1/adjustments/1"),
        ("GET", "/index.html"),
    ],
)
@pytest.mark.parametrize("authorized", [True, False])
def test_an_unknown_route_is_a_json_404(server, method, path, authorized):
    api = server.admin() if authorized else Api(server.url)
    assert_error(api.request(method, path), 404, "not_found")
    api.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/sellers/{big}", None),
        ("GET", "/api/credit-requests/{big}", None),
        ("GET", "/api/sales/{big}", None),
        ("POST", "/api/credit-requests/{big}/approve", None),
        ("POST", "/api/credit-requests/{big}/reject", None),
        ("POST", "/api/sellers/{big}/adjustments", {"amount": 5, "reason": "r"}),
        ("POST", "/api/sellers/{big}/adjustments", {"amount": -5, "reason": "r"}),
    ],
)
def test_an_unknown_id_is_404(admin, method, path, body):
    assert_error(admin.request(method, path.format(big=BIG_ID), body), 404, "not_found")


def test_a_seller_asking_for_an_unknown_id_gets_404(make_seller):
    _, api = make_seller()
    assert_error(api.get(f"/api/credit-requests/{BIG_ID}"), 404, "not_found")
    assert_error(api.get(f"/api/sales/{BIG_ID}"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/sellers", {"GET", "POST"}),
        ("PUT", "/api/me", {"GET"}),
        ("GET", "/api/credit-requests/1/approve", {"POST"}),
        ("GET", "/api/credit-requests/1/reject", {"POST"}),
        ("DELETE", "/api/sales/1", {"GET"}),
        ("PATCH", "/api/phones", {"GET", "POST"}),
        ("POST", "/health", {"GET"}),
        ("POST", "/api/audit", {"GET"}),
        ("PUT", "/api/sellers/1/adjustments", {"POST"}),
        ("DELETE", "/api/ledger", {"GET"}),
        ("POST", "/openapi.json", {"GET"}),
    ],
)
def test_a_known_route_with_a_wrong_method_is_405_with_allow(admin, method, path, allowed):
    response = admin.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    offered = {m.strip().upper() for m in response.headers["Allow"].split(",")}
    assert allowed <= offered and method not in offered
    assert ("HEAD" in offered) == ("GET" in offered)  # HEAD is answered wherever GET is
    if "HEAD" in offered:
        assert admin.request("HEAD", path).status_code != 405


# -----------------------------------------------------------------------------------------


def test_a_sale_over_the_balance_is_409_and_records_nothing(server, admin, make_seller):
    seller, api = make_seller(credit=1_000)
    phone = unique_phone()
    assert_error(sell(api, 1_001, phone), 409, "insufficient_credit")
    assert items(api, "/api/sales") == []
    assert [e["kind"] for e in items(api, "/api/ledger")] == ["credit"]
    assert admin.post("/api/phones", {"number": phone}).status_code == 201
    assert reconciled_balances(server.db_path)[seller["id"]] == 1_000
    exact = sell(api, 1_000, phone)
    assert (exact.status_code, exact.json()["balance_after"]) == (201, 0)
    assert_error(sell(api, 1, phone), 409, "insufficient_credit")
    assert reconciled_balances(server.db_path)[seller["id"]] == 0


def test_a_decrease_below_zero_is_409_and_records_nothing(server, admin, make_seller):
    seller, api = make_seller(credit=1_000)
    path = f"/api/sellers/{seller['id']}/adjustments"
    assert_error(admin.post(path, {"amount": -1_001, "reason": "r"}), 409, "insufficient_credit")
    assert len(items(api, "/api/ledger")) == 1
    assert reconciled_balances(server.db_path)[seller["id"]] == 1_000
    exact = admin.post(path, {"amount": -1_000, "reason": "r"})
    assert (exact.status_code, exact.json()["balance_after"]) == (201, 0)
    assert reconciled_balances(server.db_path)[seller["id"]] == 0


# -----------------------------------------------------------------------------------------

LIMIT = 64 * 1024


def padded(body: str, size: int) -> bytes:
    """`body` (a JSON object) padded with whitespace to exactly `size` bytes."""
    return (body[:-1] + " " * (size - len(body)) + "}").encode()


def test_a_body_of_exactly_64_kib_is_accepted_and_one_byte_more_is_413(server, make_seller):
    seller, api = make_seller(credit=5_000)
    body = f'{{"phone": "{unique_phone()}", "amount": 1000}}'
    assert_error(post_raw(api, "/api/sales", padded(body, LIMIT + 1)), 413, "payload_too_large")
    assert items(api, "/api/sales") == []
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000
    accepted = post_raw(api, "/api/sales", padded(body, LIMIT))
    assert accepted.status_code == 201, accepted.text
    assert reconciled_balances(server.db_path)[seller["id"]] == 4_000


def test_a_chunked_body_over_64_kib_is_413_and_records_nothing(server, make_seller):
    seller, api = make_seller(credit=5_000)
    body = padded(f'{{"phone": "{unique_phone()}", "amount": 1000}}', 3 * LIMIT)
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
    assert_error(post_raw(api, "/api/sales", chunks), 413, "payload_too_large")
    assert items(api, "/api/sales") == []
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


@pytest.mark.parametrize(
    ("method", "path", "who", "accept"),
    [
        ("GET", "/api/sales", "seller", "application/json"),
        ("GET", "/api/sellers", "nobody", "application/json"),  # 413, not 401
        ("DELETE", "/api/sales", "seller", "application/json"),  # 413, not 405
        ("POST", "/api/no-such-route", "admin", "application/json"),  # 413, not 404
        ("GET", "/metrics", "nobody", "application/json"),
        ("GET", "/no-such-page", "nobody", "application/json"),  # JSON, as its 404 would be
        ("POST", "/login", "nobody", "text/html"),  # a browser gets a page
        ("POST", "/login", "nobody", "*/*"),  # and anyone posting to a page's route
    ],
)
def test_a_large_body_is_413_whatever_the_method_and_path_before_anything_else(
    server, admin, make_seller, method, path, who, accept
):
    seller, api = make_seller(credit=5_000)
    caller = {"admin": admin, "seller": api, "nobody": Api(server.url)}[who]
    answer = caller.request(method, path, data=b" " * (LIMIT + 1), headers={"Accept": accept})
    assert answer.status_code == 413
    if path == "/login":
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "65,536 bytes" in answer.text
    else:
        assert_error(answer, 413, "payload_too_large")
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


@pytest.mark.parametrize(
    ("who", "path", "body"),
    [
        ("admin", "/api/sellers", '{"name": "x"}'),
        ("seller", "/api/credit-requests", '{"amount": 5}'),
        ("admin", "/api/sellers/{id}/adjustments", '{"amount": 5, "reason": "r"}'),
        ("admin", "/api/phones", '{"number": "{phone}"}'),
        ("admin", "/api/credit-requests/{request}/approve", "{}"),
    ],
)
def test_every_post_route_refuses_a_large_body_with_413_and_does_nothing(
    server, admin, make_seller, who, path, body
):
    seller, api = make_seller(credit=5_000)
    request_id = api.post("/api/credit-requests", {"amount": 7}).json()["id"]
    caller = admin if who == "admin" else api
    path, phone = path.format(id=seller["id"], request=request_id), unique_phone()
    body = padded(body.replace("{phone}", phone), 2 * LIMIT)
    assert_error(post_raw(caller, path, body), 413, "payload_too_large")
    statuses = [r["status"] for r in items(api, "/api/credit-requests")]
    assert statuses == ["approved", "pending"]
    assert items(admin, f"/api/sellers?after_id={seller['id']}") == []
    assert admin.post("/api/phones", {"number": phone}).status_code == 201
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


# -----------------------------------------------------------------------------------------

BAD_AMOUNTS = [
    "1.5",
    "1000.0",
    "1e3",
    "1E3",
    "1000e0",
    '"1000"',
    '"1e3"',
    "true",
    "false",
    "null",
    "0",
    "-0",
    "-5",
    "1000000001",
    "1e400",
    "100000000000000000000000000",
    "[1000]",
    '{"v": 1}',
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_a_bad_amount_is_422_on_amount_and_records_nothing(server, make_seller, amount):
    seller, api = make_seller(credit=5_000)
    requested = post_raw(api, "/api/credit-requests", f'{{"amount": {amount}}}')
    assert_error(requested, 422, "validation_error", "amount")
    sold = post_raw(api, "/api/sales", f'{{"phone": "{unique_phone()}", "amount": {amount}}}')
    assert_error(sold, 422, "validation_error", "amount")
    assert [r["status"] for r in items(api, "/api/credit-requests")] == ["approved"]
    assert items(api, "/api/sales") == []
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


@pytest.mark.parametrize("amount", [a for a in BAD_AMOUNTS if a != "-5"] + ["-1000000001"])
def test_a_bad_adjustment_amount_is_422_and_records_nothing(server, admin, make_seller, amount):
    seller, api = make_seller(credit=5_000)
    adjusted = post_raw(
        admin, f"/api/sellers/{seller['id']}/adjustments", f'{{"amount": {amount}, "reason": "r"}}'
    )
    assert_error(adjusted, 422, "validation_error", "amount")
    assert len(items(api, "/api/ledger")) == 1
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


@pytest.mark.parametrize(
    ("who", "path", "body", "field"),
    [
        ("seller", "/api/credit-requests", {}, "amount"),
        ("seller", "/api/credit-requests", {"amount": 5, "note": "x"}, "note"),
        ("seller", "/api/credit-requests", {"amount": 5, "seller_id": 1}, "seller_id"),
        ("seller", "/api/sales", {"amount": 5}, "phone"),
        ("seller", "/api/sales", {"phone": "09121234567"}, "amount"),
        ("seller", "/api/sales", {"phone": "09121234567", "amount": 5, "price": 1}, "price"),
        ("admin", "/api/sellers", {}, "name"),
        ("admin", "/api/sellers", {"name": "x", "balance": 10**6}, "balance"),
        ("admin", "/api/phones", {}, "number"),
        ("admin", "/api/phones", {"number": "09121234567", "total_charged": 5}, "total_charged"),
        ("admin", "/api/sellers/{id}/adjustments", {"amount": 5}, "reason"),
        ("admin", "/api/sellers/{id}/adjustments", {"reason": "r"}, "amount"),
        ("admin", "/api/sellers/{id}/adjustments", {"amount": 0, "reason": "r"}, "amount"),
        ("admin", "/api/sellers/{id}/adjustments", {"amount": 5, "reason": ""}, "reason"),
        ("admin", "/api/sellers/{id}/adjustments", {"amount": 5, "reason": "  "}, "reason"),
        ("admin", "/api/sellers/{id}/adjustments", {"amount": 5, "reason": None}, "reason"),
        ("admin", "/api/sellers/{id}/adjustments", {"amount": 5, "reason": "r" * 501}, "reason"),
    ],
)
def test_a_missing_unknown_or_empty_field_is_422_naming_it(
    server, admin, make_seller, who, path, body, field
):
    seller, api = make_seller(credit=5_000)
    caller = admin if who == "admin" else api
    assert_error(caller.post(path.format(id=seller["id"]), body), 422, "validation_error", field)
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000
    assert len(items(api, "/api/ledger")) == 1


BAD_PHONES = [
    "0912123456",
    "091212345678",
    "0912abc4567",
    "०९१२१२३४५६७",
    "０９１２１２３４５６７",
    "02112345678",
    "+982112345678",
    "+14155552671",
    "08121234567",
    "",
    "   ",
    "09121234567x",
    "+98+9121234567",
    "0912\n1234567",
    9121234567,
    None,
    ["09121234567"],
]


@pytest.mark.parametrize("phone", BAD_PHONES)
def test_a_phone_that_is_not_an_iranian_mobile_is_422(server, admin, make_seller, phone):
    seller, api = make_seller(credit=5_000)
    assert_error(
        api.post("/api/sales", {"phone": phone, "amount": 100}), 422, "validation_error", "phone"
    )
    assert_error(admin.post("/api/phones", {"number": phone}), 422, "validation_error", "number")
    assert items(api, "/api/sales") == []
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "a\x00b", 123, None, True, ["x"]])
def test_a_seller_name_that_is_empty_too_long_or_not_text_is_422(admin, name):
    assert_error(admin.post("/api/sellers", {"name": name}), 422, "validation_error", "name")


def test_a_seller_name_of_200_characters_is_accepted(admin):
    response = admin.post("/api/sellers", {"name": "x" * 200})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "x" * 200


LIST_PATHS = ["/api/sellers", "/api/credit-requests", "/api/sales", "/api/ledger", "/api/phones"]
BAD_QUERIES = [
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=abc", "limit"),
    ("limit=", "limit"),
    ("limit=-1", "limit"),
    ("limit=1.5", "limit"),
    ("limit=%EF%BC%95", "limit"),
    ("after_id=-1", "after_id"),
    ("after_id=x", "after_id"),
    ("bogus=1", "bogus"),
    ("limit=1&limit=2", "limit"),
    ("after_id=1&after_id=1", "after_id"),
    ("before_id=0", "before_id"),
    ("before_id=9223372036854775808", "before_id"),
    ("order=desc", "order"),
    ("order=", "order"),
    ("order=Newest", "order"),
]


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
def test_a_bad_list_parameter_is_422_naming_it(admin, path, query, field):
    assert_error(admin.get(f"{path}?{query}"), 422, "validation_error", field)


@pytest.mark.parametrize("path", LIST_PATHS)
def test_leading_zeros_are_no_part_of_a_list_parameters_size(admin, path):
    """`limit=0001` was taken and `after_id=` with 19 zeros and a 1 (20 characters, the
    value 1) refused: the length was checked, not the value (helper-111)."""
    zeros = "0" * 40
    assert admin.get(f"{path}?limit={zeros}2&after_id={zeros}1").status_code == 200
    assert admin.get(f"{path}?after_id={'0' * 5000}").status_code == 200  # no int() of 5,000
    too_big = f"{zeros}9223372036854775808"
    assert_error(admin.get(f"{path}?before_id={too_big}"), 422, "validation_error", "before_id")


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/api/credit-requests", "status=bogus", "status"),
        ("/api/credit-requests", "status=", "status"),
        ("/api/credit-requests", "status=PENDING", "status"),
        ("/api/credit-requests", "seller_id=abc", "seller_id"),
        ("/api/sales", "seller_id=-3", "seller_id"),
        ("/api/ledger", "seller_id=", "seller_id"),
        ("/api/sales", "status=pending", "status"),
        ("/api/sellers", "seller_id=1", "seller_id"),
        ("/api/phones", "seller_id=1", "seller_id"),
    ],
)
def test_a_filter_that_is_invalid_or_not_offered_by_the_list_is_422(admin, path, query, field):
    assert_error(admin.get(f"{path}?{query}"), 422, "validation_error", field)


# Every query parameter of every JSON route that takes one (web/api.py).
EVERY_QUERY_PARAMETER = [
    *((path, name) for path in LIST_PATHS for name in ("limit", "after_id", "before_id", "order")),
    *(("/api/sellers/1/keys", name) for name in ("limit", "after_id", "before_id", "order")),
    *(("/api/credit-requests", name) for name in ("seller_id", "status")),
    *(("/api/sales", name) for name in ("seller_id", "phone", "idempotency_key", "from", "to")),
    ("/api/ledger", "seller_id"),
    *(("/api/statements", name)
      for name in ("seller_id", "format", "from", "to", "day", "month", "jmonth", "jday")),
    ("/api/audit", "full"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "name"), EVERY_QUERY_PARAMETER)
def test_a_query_value_that_is_not_utf8_once_decoded_is_422_naming_its_parameter(admin, path, name):
    """It was a 422 without `field` (the whole query string was refused at once)."""
    assert_error(admin.get(f"{path}?{name}=%FF"), 422, "validation_error", name)
    assert_error(admin.get(f"{path}?{name}=ok%C3"), 422, "validation_error", name)


def test_a_query_parameter_whose_name_is_not_utf8_is_unknown_and_named_as_best_it_can_be(admin):
    error = assert_error(admin.get("/api/sales?li%FFmit=5"), 422, "validation_error")
    assert error["field"] == "li\ufffdmit"


def test_an_unknown_query_parameter_is_named_with_nothing_invisible_and_cut_short(admin):
    """A name a link sends is shown back on pages: its bidi controls (here a PDI, which
    closed the isolate it was shown in, then a right-to-left override) and other
    characters that draw nothing are shown as U+FFFD, and a long one is cut (helper-83)."""
    error = assert_error(admin.get("/api/sales?%E2%81%A9%E2%80%AEevil%20text=1"), 422,
                         "validation_error")  # fmt: skip
    assert error["field"] == "\ufffd\ufffdevil text"
    long = "call-us-" * 40
    error = assert_error(admin.get(f"/api/sales?{long}=1"), 422, "validation_error")
    assert error["field"] == long[:40] + "\u2026"


def test_a_seller_gets_422_for_bad_list_parameters_too(make_seller):
    _, api = make_seller()
    assert_error(api.get("/api/sales?limit=0"), 422, "validation_error", "limit")
    assert_error(api.get("/api/credit-requests?status=bogus"), 422, "validation_error", "status")
