"""The statement downloads and the sale search on the pages, as a browser uses them.

The seller's page and the admin's seller page offer a day, a month and a Jalali month
as a CSV download (the same statement as GET /api/statements); the seller's search
finds its sales by phone, order id (Idempotency-Key) and Tehran time, and only its own.
"""

from __future__ import annotations

import csv
import io

from tests.web_support import ADMIN, SELLER, text_of

PHONE = "09121234567"


def sell(api, key: str, phone: str = PHONE) -> dict:
    made = api.post("/api/sales", {"phone": phone, "amount": 1000},
                    headers={"Idempotency-Key": key})  # fmt: skip
    assert made.status_code == 201, made.text
    return made.json()


def lines_of(answer) -> list[dict]:
    assert answer.status_code == 200, answer.text[:2000]
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(answer.text)))


def test_the_seller_and_the_admin_download_the_same_statement_from_their_pages(world):
    sell(world.api, "page-1")
    seller, admin = world.browser(SELLER), world.browser(ADMIN)
    page = seller.get("/seller").text
    for name in ("day", "month", "jmonth"):
        assert f'id="statement-{name}"' in page and 'action="/seller/statement"' in page
    sid = world.seller["id"]
    assert f'action="/admin/sellers/{sid}/statement"' in admin.get(f"/admin/sellers/{sid}").text
    query = "from=2000-01-01&to=2100-01-01&format=csv"
    mine = lines_of(seller.get(f"/seller/statement?{query}"))
    theirs = lines_of(admin.get(f"/admin/sellers/{sid}/statement?{query}"))
    assert mine == theirs
    assert [line["line"] for line in mine[:3]] == ["opening", "entry", "entry"]
    closing = next(line for line in mine if line["line"] == "closing")
    assert int(closing["balance_after"]) == world.balance() == 99_000
    assert lines_of(seller.get("/seller/statement?jmonth=1405-09"))[0]["line"] == "opening"


def test_a_bad_period_is_a_422_page_in_plain_words(world):
    answer = world.browser(SELLER).get("/seller/statement?day=2026-13-01")
    assert answer.status_code == 422 and answer.headers["Content-Type"].startswith("text/html")
    assert "day must be a date" in text_of(answer.text, "error-message")


def test_a_seller_finds_its_sale_by_phone_order_id_and_tehran_time_and_not_anothers(
    world, make_seller
):
    mine = sell(world.api, "order-77", "09351112233")
    _, other = make_seller(credit=10_000)
    sell(other, "order-77", "09351112233")
    browser = world.browser(SELLER)
    for query in ("phone=%DB%B0%DB%B9%DB%B3%DB%B5+111+2233", "idempotency_key=order-77",
                  "phone=09351112233&from=2000-01-01T00%3A00"):  # fmt: skip
        page = browser.get(f"/seller/sales/found?{query}")
        assert page.status_code == 200, page.text[:2000]
        rows = page.text.split('id="sales-found"')[1].split("</table>")[0]
        assert rows.count("<tr>") == 2 and f"<td>{mine['id']}</td>" in rows, query
    nothing = browser.get("/seller/sales/found?idempotency_key=order-78")
    assert 'id="sales-found"' not in nothing.text and "No sale matches." in nothing.text
    refused = browser.get("/seller/sales/found?phone=12345")
    assert refused.status_code == 422
    assert text_of(refused.text, "find-phone-error")
    assert 'id="find-form"' in browser.get("/seller/sales/found").text
