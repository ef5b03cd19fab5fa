"""HTTP contract of docs/api.md against a real server process: routes, auth, idempotency, paging.

Every test makes its own sellers on the shared `server`, so tests are independent
and order-free; none assumes global counts. Auth refusals, error codes and
refusals that record nothing live in `test_http_errors.py`, which shares the
helpers defined here. After money moves, the books are
re-added from a fresh sqlite3 connection (`reconciled_balances`).
"""

from __future__ import annotations

import itertools
import re

import pytest

import chargebox
from tests.support import ADMIN_TOKEN, Api, reconciled_balances

_numbers = itertools.count(1)
KEY_RE = re.compile(r"\S+")

SELLER_KEYS = {"id", "name", "balance", "status", "created_at"}
REQUEST_KEYS = {"id", "seller_id", "amount", "status", "created_at", "decided_at"}
SALE_KEYS = {"id", "seller_id", "phone", "amount", "balance_after", "created_at", "refunded_at"}
SALE_KEYS |= {"refund_entry_id"}
ENTRY_KEYS = {"id", "seller_id", "kind", "amount", "balance_after", "created_at"}
PHONE_KEYS = {"id", "number", "total_charged"}


def unique_phone() -> str:
    """A mobile number no other test of this module sells to."""
    return f"0991{next(_numbers):07d}"


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    """The one error shape of docs/api.md: JSON, never HTML, with a request id."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "<html" not in response.text.lower()
    assert response.headers.get("X-Request-Id")
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "field"}
    if field is not None:
        assert error["field"] == field
    return error


def sell(api: Api, amount: int, phone: str | None = None, key: str | None = None):
    headers = {"Idempotency-Key": key} if key is not None else None
    return api.post(
        "/api/sales", {"phone": phone or unique_phone(), "amount": amount}, headers=headers
    )


def balance_of(api: Api) -> int:
    return api.get("/api/me").json()["balance"]


def items(api: Api, path: str) -> list[dict]:
    response = api.get(path)
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["items"]
    return response.json()["items"]


# --- public routes -----------------------------------------------------------------------


def test_health_answers_ok_and_the_release_to_anyone(anonymous):
    response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"status": "ok", "version": chargebox.__version__}


def test_openapi_document_is_openapi_3_and_describes_every_route(anonymous):
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert str(document.get("openapi", "")).startswith("3.")
    paths = {re.sub(r"\{[^}]*\}", "{}", path): ops for path, ops in document["paths"].items()}
    expected = [
        ("get", "/health"),
        ("post", "/api/sellers"),
        ("get", "/api/sellers"),
        ("get", "/api/sellers/{}"),
        ("get", "/api/me"),
        ("post", "/api/credit-requests"),
        ("get", "/api/credit-requests"),
        ("post", "/api/credit-requests/{}/approve"),
        ("post", "/api/credit-requests/{}/reject"),
        ("post", "/api/sellers/{}/adjustments"),
        ("post", "/api/sales"),
        ("get", "/api/sales"),
        ("get", "/api/ledger"),
        ("get", "/api/phones"),
        ("post", "/api/phones"),
        ("get", "/api/audit"),
        ("get", "/openapi.json"),
    ]
    missing = [(m, p) for m, p in expected if m not in paths.get(p, {})]
    assert missing == []


# --- sellers -----------------------------------------------------------------------------


def test_creating_a_seller_answers_201_with_location_and_a_one_time_api_key(admin):
    response = admin.post("/api/sellers", {"name": "  Ali Rezaei  "})
    assert response.status_code == 201, response.text
    seller = response.json()
    assert set(seller) == SELLER_KEYS | {"api_key"}
    assert seller["name"] == "Ali Rezaei"
    assert seller["balance"] == 0
    assert KEY_RE.fullmatch(seller["api_key"])
    with_key = Api(admin.url, seller["api_key"])
    assert with_key.get("/api/me").json()["id"] == seller["id"]
    with_key.close()
    assert response.headers["Location"] == f"/api/sellers/{seller['id']}"
    shown = admin.get(f"/api/sellers/{seller['id']}")
    assert shown.status_code == 200
    assert shown.json() == {k: seller[k] for k in SELLER_KEYS}


def test_admin_lists_sellers_with_balances_and_never_their_keys(admin, make_seller):
    seller, _ = make_seller(credit=7_000, name="Sara")
    listed = items(admin, f"/api/sellers?after_id={seller['id'] - 1}&limit=1")
    assert listed == [admin.get(f"/api/sellers/{seller['id']}").json()]
    assert set(listed[0]) == SELLER_KEYS
    assert listed[0]["balance"] == 7_000 and listed[0]["name"] == "Sara"


def test_a_seller_reads_itself_at_me(make_seller):
    seller, api = make_seller(credit=2_500)
    response = api.get("/api/me")
    assert response.status_code == 200
    assert response.json() == {**seller, "balance": 2_500}


# --- credit requests ---------------------------------------------------------------------


def test_requesting_credit_answers_201_pending_with_location(admin, make_seller):
    seller, api = make_seller()
    response = api.post("/api/credit-requests", {"amount": 1_000_000_000})
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == REQUEST_KEYS
    assert created["seller_id"] == seller["id"]
    assert (created["amount"], created["status"], created["decided_at"]) == (
        1_000_000_000,
        "pending",
        None,
    )
    assert response.headers["Location"] == f"/api/credit-requests/{created['id']}"
    for reader in (api, admin):
        shown = reader.get(response.headers["Location"])
        assert (shown.status_code, shown.json()) == (200, created)
    assert balance_of(api) == 0


def test_approving_credits_the_seller_exactly_once(server, admin, make_seller):
    seller, api = make_seller()
    request_id = api.post("/api/credit-requests", {"amount": 4_000}).json()["id"]
    approved = admin.post(f"/api/credit-requests/{request_id}/approve")
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert set(body) == REQUEST_KEYS
    assert (body["id"], body["status"], body["amount"]) == (request_id, "approved", 4_000)
    assert isinstance(body["decided_at"], str)
    again = admin.post(f"/api/credit-requests/{request_id}/approve")
    assert_error(again, 409, "not_pending")
    rejected = admin.post(f"/api/credit-requests/{request_id}/reject")
    assert_error(rejected, 409, "not_pending")
    assert balance_of(api) == 4_000
    assert [e["kind"] for e in items(api, "/api/ledger")] == ["credit"]
    assert api.get(f"/api/credit-requests/{request_id}").json() == body
    assert reconciled_balances(server.db_path)[seller["id"]] == 4_000


def test_a_rejected_request_credits_nothing_and_cannot_be_approved(server, admin, make_seller):
    seller, api = make_seller()
    request_id = api.post("/api/credit-requests", {"amount": 4_000}).json()["id"]
    rejected = admin.post(f"/api/credit-requests/{request_id}/reject")
    assert rejected.status_code == 200, rejected.text
    assert set(rejected.json()) == REQUEST_KEYS
    assert rejected.json()["status"] == "rejected"
    assert isinstance(rejected.json()["decided_at"], str)
    assert_error(admin.post(f"/api/credit-requests/{request_id}/approve"), 409, "not_pending")
    assert_error(admin.post(f"/api/credit-requests/{request_id}/reject"), 409, "not_pending")
    assert balance_of(api) == 0
    assert items(api, "/api/ledger") == []
    assert reconciled_balances(server.db_path)[seller["id"]] == 0


def test_admin_filters_credit_requests_by_status_and_seller(admin, make_seller):
    seller, api = make_seller()
    ids = [api.post("/api/credit-requests", {"amount": n}).json()["id"] for n in (1, 2, 3)]
    admin.post(f"/api/credit-requests/{ids[0]}/approve")
    admin.post(f"/api/credit-requests/{ids[1]}/reject")
    base = f"/api/credit-requests?seller_id={seller['id']}"
    for status, expected in (("approved", ids[0]), ("rejected", ids[1]), ("pending", ids[2])):
        assert [r["id"] for r in items(admin, f"{base}&status={status}")] == [expected]
        assert [r["id"] for r in items(api, f"/api/credit-requests?status={status}")] == [expected]
    assert [r["id"] for r in items(admin, base)] == ids


# --- money -------------------------------------------------------------------------------


def test_an_adjustment_answers_201_with_its_ledger_entry(server, admin, make_seller):
    seller, api = make_seller()
    path = f"/api/sellers/{seller['id']}/adjustments"
    up = admin.post(path, {"amount": 900, "reason": "goodwill"})
    assert up.status_code == 201, up.text
    entry = up.json()
    assert set(entry) >= ENTRY_KEYS
    assert (entry["seller_id"], entry["kind"], entry["amount"], entry["balance_after"]) == (
        seller["id"],
        "adjustment",
        900,
        900,
    )
    down = admin.post(path, {"amount": -300, "reason": "typo fix"})
    assert down.status_code == 201, down.text
    assert (down.json()["amount"], down.json()["balance_after"]) == (-300, 600)
    assert items(api, "/api/ledger") == [entry, down.json()]
    assert balance_of(api) == 600
    assert reconciled_balances(server.db_path)[seller["id"]] == 600


def test_a_sale_answers_201_with_location_and_debits_the_balance(server, admin, make_seller):
    seller, api = make_seller(credit=10_000)
    phone = unique_phone()
    response = sell(api, 3_000, phone)
    assert response.status_code == 201, response.text
    sale = response.json()
    assert set(sale) == SALE_KEYS
    assert (sale["seller_id"], sale["phone"], sale["amount"], sale["balance_after"]) == (
        seller["id"],
        phone,
        3_000,
        7_000,
    )
    assert response.headers["Location"] == f"/api/sales/{sale['id']}"
    assert response.headers.get("Idempotent-Replayed") is None
    for reader in (api, admin):
        shown = reader.get(f"/api/sales/{sale['id']}")
        assert (shown.status_code, shown.json()) == (200, sale)
    assert items(api, "/api/sales") == [sale]
    assert balance_of(api) == 7_000
    assert reconciled_balances(server.db_path)[seller["id"]] == 7_000


def test_the_ledger_after_a_flow_has_each_movement_with_running_balances(
    server, admin, make_seller
):
    seller, api = make_seller()
    request_id = api.post("/api/credit-requests", {"amount": 10_000}).json()["id"]
    admin.post(f"/api/credit-requests/{request_id}/approve")
    sale_id = sell(api, 3_000).json()["id"]
    for amount in (-1_000, 500):
        admin.post(f"/api/sellers/{seller['id']}/adjustments", {"amount": amount, "reason": "r"})
    ledger = items(api, "/api/ledger")
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in ledger] == [
        ("credit", 10_000, 10_000),
        ("sale", -3_000, 7_000),
        ("adjustment", -1_000, 6_000),
        ("adjustment", 500, 6_500),
    ]
    assert ledger[0]["credit_request_id"] == request_id
    assert ledger[1]["sale_id"] == sale_id
    assert [e["id"] for e in ledger] == sorted(e["id"] for e in ledger)
    assert items(admin, f"/api/ledger?seller_id={seller['id']}") == ledger
    assert reconciled_balances(server.db_path)[seller["id"]] == 6_500
    audit = admin.get("/api/audit")
    assert audit.status_code == 200
    assert audit.json()["consistent"] is True
    rows = [row for row in audit.json()["sellers"] if row["seller_id"] == seller["id"]]
    assert rows == [
        {"seller_id": seller["id"], "balance": 6_500, "ledger_sum": 6_500, "consistent": True}
    ]


# --- phones ------------------------------------------------------------------------------


def test_registering_a_phone_answers_201_then_200_for_the_same_number(admin):
    phone = unique_phone()
    created = admin.post("/api/phones", {"number": phone})
    assert created.status_code == 201, created.text
    assert set(created.json()) >= PHONE_KEYS
    assert (created.json()["number"], created.json()["total_charged"]) == (phone, 0)
    existing = admin.post("/api/phones", {"number": "+98 " + phone[1:]})
    assert existing.status_code == 200, existing.text
    assert existing.json() == created.json()


def test_phone_totals_add_up_every_sale_to_that_number(admin, make_seller):
    phone = unique_phone()
    phone_id = admin.post("/api/phones", {"number": phone}).json()["id"]
    (_, first), (_, second) = make_seller(credit=5_000), make_seller(credit=5_000)
    assert sell(first, 1_000, phone).status_code == 201
    assert sell(second, 2_500, phone).status_code == 201
    assert sell(second, 9_000, phone).status_code == 409
    listed = items(admin, f"/api/phones?after_id={phone_id - 1}&limit=1")
    assert [(p["id"], p["number"], p["total_charged"]) for p in listed] == [
        (phone_id, phone, 3_500)
    ]


def test_a_sale_registers_its_number(admin, make_seller):
    _, api = make_seller(credit=5_000)
    phone = unique_phone()
    assert sell(api, 1_200, phone).status_code == 201
    existing = admin.post("/api/phones", {"number": phone})
    assert existing.status_code == 200, existing.text
    assert existing.json()["total_charged"] == 1_200


ACCEPTED_FORMS = [
    "09121234567",
    "9121234567",
    "+989121234567",
    "989121234567",
    "00989121234567",
    "0912 123 4567",
    "0912-123-4567",
    "+98 912 123-4567",
    "۰۹۱۲۱۲۳۴۵۶۷",
    "٠٩١٢١٢٣٤٥٦٧",
    "\u200f۰۹۱۲ ۱۲۳ ۴۵۶۷\u200f",
    "\u200f+۹۸۹۱۲۱۲۳۴۵۶۷",
]


@pytest.mark.parametrize("form", ACCEPTED_FORMS)
def test_every_accepted_phone_form_is_answered_in_normal_form(admin, make_seller, form):
    registered = admin.post("/api/phones", {"number": form})
    assert registered.status_code in (200, 201), registered.text
    assert registered.json()["number"] == "09121234567"
    _, api = make_seller(credit=100)
    sale = sell(api, 100, form)
    assert sale.status_code == 201, sale.text
    assert sale.json()["phone"] == "09121234567"


# --- lists and paging --------------------------------------------------------------------


def test_each_seller_sees_only_its_own_items_in_lists(admin, make_seller):
    sellers = [make_seller(credit=1_000), make_seller(credit=1_000)]
    for _, api in sellers:
        api.post("/api/credit-requests", {"amount": 7})
        assert sell(api, 100).status_code == 201
    for seller, api in sellers:
        for path in ("/api/credit-requests", "/api/sales", "/api/ledger"):
            own = items(api, path)
            assert own and {row["seller_id"] for row in own} == {seller["id"]}
            assert items(admin, f"{path}?seller_id={seller['id']}") == own
    sales = [items(api, "/api/sales")[0] for _, api in sellers]
    first = min(sale["id"] for sale in sales)
    assert items(admin, f"/api/sales?after_id={first - 1}&limit=2") == sales


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_walks_a_list_in_id_order_without_gaps_or_overlaps(make_seller, limit):
    _, api = make_seller()
    created = [api.post("/api/credit-requests", {"amount": n}).json()["id"] for n in range(1, 8)]
    seen, after_id, pages = [], 0, 0
    while True:
        page = items(api, f"/api/credit-requests?limit={limit}&after_id={after_id}")
        assert len(page) <= limit
        if not page:
            break
        seen += [row["id"] for row in page]
        after_id, pages = page[-1]["id"], pages + 1
    assert seen == created
    assert pages == -(-len(created) // limit)
    assert [r["id"] for r in items(api, f"/api/credit-requests?after_id={created[3]}")] == created[
        4:
    ]
    assert len(items(api, "/api/credit-requests?limit=1000")) == len(created)


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_every_list_pages_newest_first_too(admin, make_seller, limit):
    """`order=newest`: each list read down from its newest, each next page below the last
    id shown (`before_id`), is the same items as oldest first, reversed; `before_id` and
    `after_id` bound either order; a seller's search of its sales, newest first too."""
    make_seller()  # two sellers at least
    seller, api = make_seller(credit=10_000)
    for n in range(1, 6):
        api.post("/api/credit-requests", {"amount": n})
        assert sell(api, n, "09121234567" if n % 2 else None).status_code == 201
    assert admin.post(f"/api/sellers/{seller['id']}/keys", {"label": "till"}).status_code == 201
    mine = f"seller_id={seller['id']}"
    for who, path in [
        (admin, "/api/sellers"),
        (admin, f"/api/sellers/{seller['id']}/keys"),
        (admin, "/api/phones"),
        (admin, "/api/sales"),
        (admin, "/api/ledger"),
        (admin, f"/api/credit-requests?{mine}"),
        (api, "/api/credit-requests?status=pending"),
        (api, "/api/sales?phone=09121234567"),
        (api, "/api/ledger"),
    ]:
        join = "&" if "?" in path else "?"
        oldest = [row["id"] for row in items(who, f"{path}{join}limit=1000")]
        assert len(oldest) >= 2, path
        seen, cursor = [], ""
        while page := items(who, f"{path}{join}order=newest&limit={limit}{cursor}"):
            assert len(page) <= limit
            seen += [row["id"] for row in page]
            cursor = f"&before_id={page[-1]['id']}"
        assert seen == oldest[::-1], path
        low, high = oldest[0], oldest[-1]
        between = f"{path}{join}limit=1000&after_id={low}&before_id={high}"
        assert [row["id"] for row in items(who, between)] == oldest[1:-1], path
        assert [row["id"] for row in items(who, f"{between}&order=newest")] == oldest[-2:0:-1]
        assert items(who, f"{path}{join}order=oldest&limit=1000") == items(
            who, f"{path}{join}limit=1000"
        )


# --- idempotent sales --------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_sale_and_charges_once(server, make_seller):
    seller, api = make_seller(credit=10_000)
    phone = unique_phone()
    first = sell(api, 4_000, phone, key="order-1")
    assert first.status_code == 201, first.text
    assert first.headers.get("Idempotent-Replayed") is None
    for _ in range(2):
        again = sell(api, 4_000, phone, key="order-1")
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
    assert len(items(api, "/api/sales")) == 1
    assert balance_of(api) == 6_000
    assert reconciled_balances(server.db_path)[seller["id"]] == 6_000


def test_the_same_key_with_another_body_is_422_and_charges_nothing(server, make_seller):
    seller, api = make_seller(credit=10_000)
    phone = unique_phone()
    assert sell(api, 4_000, phone, key="order-2").status_code == 201
    assert_error(sell(api, 4_001, phone, key="order-2"), 422, "idempotency_key_reused")
    assert_error(sell(api, 4_000, unique_phone(), key="order-2"), 422, "idempotency_key_reused")
    assert balance_of(api) == 6_000
    assert reconciled_balances(server.db_path)[seller["id"]] == 6_000


def test_a_key_refused_for_credit_stays_refused_after_the_balance_grows(server, admin, make_seller):
    seller, api = make_seller(credit=1_000)
    phone = unique_phone()
    refused = sell(api, 5_000, phone, key="order-3")
    assert_error(refused, 409, "insufficient_credit")
    admin.post(f"/api/sellers/{seller['id']}/adjustments", {"amount": 10_000, "reason": "top"})
    replayed = sell(api, 5_000, phone, key="order-3")
    assert (replayed.status_code, replayed.json()) == (409, refused.json())
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert balance_of(api) == 11_000
    assert sell(api, 5_000, phone, key="order-3b").status_code == 201
    assert reconciled_balances(server.db_path)[seller["id"]] == 6_000


def _post_as(url, token, body, headers):
    other = Api(url, token)
    try:
        return other.post("/api/sales", body, headers=headers)
    finally:
        other.close()


def _refuse_401(server, api, body, headers):
    return _post_as(server.url, None, body, headers)


def _refuse_401_unknown(server, api, body, headers):
    return _post_as(server.url, "cbk_not-a-key", body, headers)


def _refuse_403(server, api, body, headers):
    return _post_as(server.url, ADMIN_TOKEN, body, headers)


def _refuse_413(server, api, body, headers):
    return api.post("/api/sales", {**body, "pad": "x" * 70_000}, headers=headers)


def _refuse_422(server, api, body, headers):
    return api.post("/api/sales", {**body, "amount": 0}, headers=headers)


def _refuse_400(server, api, body, headers):
    return api.request("POST", "/api/sales", data=b'{"phone": ', headers=headers)


@pytest.mark.parametrize(
    ("refuse", "status"),
    [
        (_refuse_401, 401),
        (_refuse_401_unknown, 401),
        (_refuse_403, 403),
        (_refuse_413, 413),
        (_refuse_422, 422),
        (_refuse_400, 400),
    ],
)
def test_a_request_refused_before_execution_does_not_use_up_its_key(
    server, make_seller, refuse, status
):
    seller, api = make_seller(credit=10_000)
    body, headers = {"phone": unique_phone(), "amount": 2_000}, {"Idempotency-Key": "order-4"}
    assert refuse(server, api, body, headers).status_code == status
    executed = api.post("/api/sales", body, headers=headers)
    assert executed.status_code == 201, executed.text
    assert executed.headers.get("Idempotent-Replayed") is None
    assert balance_of(api) == 8_000
    assert reconciled_balances(server.db_path)[seller["id"]] == 8_000


def test_keys_are_scoped_to_the_seller(server, make_seller):
    (first, first_api), (second, second_api) = make_seller(5_000), make_seller(5_000)
    phone = unique_phone()
    one = sell(first_api, 1_000, phone, key="shared-key")
    two = sell(second_api, 1_000, phone, key="shared-key")
    assert (one.status_code, two.status_code) == (201, 201)
    assert two.headers.get("Idempotent-Replayed") is None
    assert one.json()["id"] != two.json()["id"]
    assert two.json()["seller_id"] == second["id"]
    balances = reconciled_balances(server.db_path)
    assert (balances[first["id"]], balances[second["id"]]) == (4_000, 4_000)


@pytest.mark.parametrize("key", ["", "k" * 256, "ключ".encode(), "tab\there"])
def test_an_invalid_idempotency_key_is_422_and_charges_nothing(server, make_seller, key):
    seller, api = make_seller(credit=5_000)
    response = api.post(
        "/api/sales", {"phone": unique_phone(), "amount": 1_000}, headers={"Idempotency-Key": key}
    )
    assert_error(response, 422, "validation_error")
    assert items(api, "/api/sales") == []
    assert reconciled_balances(server.db_path)[seller["id"]] == 5_000


@pytest.mark.parametrize("key", ["k" * 255, "a", "~ !printable ASCII /:=+"])
def test_a_key_of_1_to_255_printable_characters_is_accepted(make_seller, key):
    _, api = make_seller(credit=5_000)
    phone = unique_phone()
    assert sell(api, 1_000, phone, key=key).status_code == 201
    assert sell(api, 1_000, phone, key=key).headers["Idempotent-Replayed"] == "true"
    assert balance_of(api) == 4_000
