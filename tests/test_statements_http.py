"""GET /api/statements and the sale search of GET /api/sales, over HTTP on a real server.

A statement answers JSON or CSV (by `format`, or by `Accept`), streamed (chunked, no
Content-Length); a seller's support desk finds its sales by phone in any spelling, by
its own Idempotency-Key and by time, and never another seller's.
"""

from __future__ import annotations

import csv
import io

PHONE = "09121234567"


def sell(seller, key: str, phone: str = PHONE, amount: int = 1000) -> dict:
    made = seller.post("/api/sales", {"phone": phone, "amount": amount},
                       headers={"Idempotency-Key": key})  # fmt: skip
    assert made.status_code == 201, made.text
    return made.json()


def test_a_sellers_statement_adds_up_in_json_and_in_csv_and_is_streamed(make_seller):
    seller_row, seller = make_seller(credit=100_000)
    sold = [sell(seller, f"order-{n}") for n in range(3)]
    got = seller.get("/api/statements?from=2000-01-01&to=2100-01-01")
    assert got.status_code == 200, got.text
    assert "Content-Length" not in got.headers and got.headers["Transfer-Encoding"] == "chunked"
    body = got.json()
    assert body["opening_balance"] == 0 and body["closing_balance"] == 97_000
    assert [e["kind"] for e in body["entries"]] == ["credit", "sale", "sale", "sale"]
    assert [e["sale_id"] for e in body["entries"][1:]] == [sale["id"] for sale in sold]
    assert body["totals"]["sale"] == {"count": 3, "amount": -3000}
    assert body["entries"][0]["created_at"].endswith("+03:30")
    for asked in ({"headers": {"Accept": "text/csv"}}, {"params": {"format": "csv"}}):
        params = {"from": "2000-01-01", "to": "2100-01-01", **asked.get("params", {})}
        text = seller.get("/api/statements", params=params, headers=asked.get("headers"))
        assert text.headers["Content-Type"].startswith("text/csv")
        assert text.headers["Content-Disposition"].startswith("attachment; filename=")
        lines = list(csv.DictReader(io.StringIO(text.text)))
        assert [line["line"] for line in lines[:6]] == [
            "opening", "entry", "entry", "entry", "entry", "closing"
        ]  # fmt: skip
        assert lines[5]["balance_after"] == "97000" and lines[2]["phone"] == PHONE
    # The file is named by the period's first day in Tehran, as its lines are written.
    late = {"from": "2026-11-30T22:00:00Z", "to": "2026-12-01T22:00:00Z", "format": "csv"}
    named = seller.get("/api/statements", params=late).headers["Content-Disposition"]
    assert named == f'attachment; filename="statement-seller-{seller_row["id"]}-2026-12-01.csv"'
    old = seller.get("/api/statements", params={"day": "1930-01-01", "format": "csv"})
    assert old.headers["Content-Disposition"].endswith('-1930-01-01.csv"')  # shown in UTC
    # A Jalali day or month is named by its own calendar's first day, as it was asked for.
    for period, day in (
        ({"jday": "1405/09/10"}, "1405-09-10"),
        ({"jmonth": "1405-09"}, "1405-09-01"),
    ):
        jalali = seller.get("/api/statements", params={**period, "format": "csv"})
        assert jalali.headers["Content-Disposition"].endswith(f'-{day}.csv"'), period
    told = seller.get("/api/statements?day=2026-12-01&format=json",
                      headers={"Accept": "text/csv"})  # fmt: skip
    assert told.headers["Content-Type"].startswith("application/json")


def test_a_bad_period_or_format_is_a_422_naming_the_field(make_seller):
    _, seller = make_seller()
    for query, field in (
        ("", "from"),
        ("from=2026-12-01T10:00:00&to=2026-12-02", "from"),
        ("day=2026-12-01&month=2026-12", "day"),
        ("jmonth=1405-13", "jmonth"),
        ("day=2026-12-01&format=xml", "format"),
        ("day=2026-12-01&week=1", "week"),
    ):
        refused = seller.get(f"/api/statements?{query}")
        assert refused.status_code == 422, (query, refused.text)
        assert refused.json()["error"]["field"] == field, query


def test_the_admin_gets_any_sellers_statement_and_404_for_no_seller(admin, make_seller):
    seller_row, _ = make_seller(credit=5000)
    got = admin.get(f"/api/statements?seller_id={seller_row['id']}&from=2000-01-01&to=2100-01-01")
    assert got.status_code == 200 and got.json()["closing_balance"] == 5000
    missing = admin.get("/api/statements?seller_id=999999999&month=2026-12")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_support_desk_finds_a_sale_by_phone_by_its_order_id_and_by_time(admin, make_seller):
    seller_row, seller = make_seller(credit=100_000)
    _, other = make_seller(credit=100_000)
    first = sell(seller, "order-1001", "09351112233")
    second = sell(seller, "order-1002")
    theirs = sell(other, "order-1001", "09351112233")  # the same order id, another seller's
    by_phone = seller.get("/api/sales", params={"phone": "+98 ۹۳۵ ۱۱۱ ۲۲۳۳"}).json()["items"]
    assert [sale["id"] for sale in by_phone] == [first["id"]]
    by_key = seller.get("/api/sales?idempotency_key=order-1001").json()["items"]
    assert [sale["id"] for sale in by_key] == [first["id"]]
    assert [s["id"] for s in other.get("/api/sales?idempotency_key=order-1001").json()["items"]
            ] == [theirs["id"]]  # fmt: skip
    assert seller.get("/api/sales?idempotency_key=order-9").json()["items"] == []
    since = seller.get("/api/sales", params={"from": second["created_at"]}).json()["items"]
    assert [sale["id"] for sale in since] == [second["id"]]
    until = seller.get("/api/sales", params={"to": second["created_at"]}).json()["items"]
    assert [sale["id"] for sale in until] == [first["id"]]
    both = seller.get("/api/sales", params={"phone": PHONE, "from": "2000-01-01"}).json()
    assert [sale["id"] for sale in both["items"]] == [second["id"]]
    found = admin.get("/api/sales", params={"seller_id": seller_row["id"],
                                            "idempotency_key": "order-1002"})  # fmt: skip
    assert [sale["id"] for sale in found.json()["items"]] == [second["id"]]


def test_a_sale_search_that_cannot_be_read_is_a_422_naming_the_field(admin, make_seller):
    _, seller = make_seller()
    for api, query, field in (
        (seller, "phone=12345", "phone"),
        (seller, "from=2026-12-01T10:00", "from"),
        (seller, "from=2026-12-02&to=2026-12-01", "to"),
        (seller, "idempotency_key=", "idempotency_key"),
        (admin, "idempotency_key=order-1", "seller_id"),
    ):
        refused = api.get(f"/api/sales?{query}")
        assert refused.status_code == 422, (query, refused.text)
        assert refused.json()["error"]["field"] == field, query


def test_a_refund_is_in_the_statement_with_its_sales_phone_and_its_own_total(admin, make_seller):
    _, seller = make_seller(credit=10_000)
    sale = sell(seller, "order-r", "09351234567", 4000)
    refunded = admin.post(f"/api/sales/{sale['id']}/refund", {"reason": "not delivered"})
    assert refunded.status_code == 201, refunded.text
    got = seller.get("/api/statements?from=2000-01-01&to=2100-01-01").json()
    assert [e["kind"] for e in got["entries"]] == ["credit", "sale", "refund"]
    assert got["entries"][2]["refund_of"] == sale["id"]
    assert got["entries"][2]["phone"] == "09351234567"
    assert got["totals"]["refund"] == {"count": 1, "amount": 4000}
    assert got["closing_balance"] == 10_000
