"""The seller's and the admin's forms against a real server process, sent as a browser would.

Persian digits and separators, idempotent selling, refusals shown beside their
field with what was typed kept, approve/reject/adjust/create, and escaping of
hostile and right-to-left names, refunds through their confirmation page. A refusal is
checked to change nothing.
"""

from __future__ import annotations

import html
import re

import pytest

from tests.support import ADMIN_TOKEN, new_seller, reconciled_balances
from tests.web_support import ADMIN, SELLER, Browser, refused, text_of, value_of

PHONE = "09121234567"


# --- a seller's forms -------------------------------------------------------------------------


def test_a_seller_requests_credit_and_sells_with_persian_digits_and_separators(world):
    seller = world.browser(SELLER)
    asked = seller.post_form("/seller/credit-requests", {"amount": "۱٬۰۰۰٬۰۰۰"})
    ident = int(re.fullmatch(r"/seller\?requested=(\d+)", asked.headers["Location"])[1])
    request = world.api.get(f"/api/credit-requests/{ident}").json()
    assert (request["amount"], request["status"]) == (1_000_000, "pending")
    notice = text_of(seller.get(asked.headers["Location"]).text, "notice")
    assert f"#{ident} for 1,000,000 toman" in notice
    sold = seller.post_form("/seller/sales", {"phone": "۰۹۱۲ ۳۴۵ ۶۷۸۹", "amount": "۲٬۵۰۰"})
    ident = int(re.fullmatch(r"/seller\?sold=(\d+)", sold.headers["Location"])[1])
    sale = world.api.get(f"/api/sales/{ident}").json()
    assert (sale["phone"], sale["amount"], world.balance()) == ("09123456789", 2500, 97_500)
    notice = text_of(seller.get(sold.headers["Location"]).text, "notice")
    assert "Sold 2,500 toman of charge to 09123456789" in notice


def test_the_same_sell_form_posted_twice_sells_once_and_both_land_on_the_same_sale(world):
    seller = world.browser(SELLER)
    key = value_of(seller.get("/seller").text, "sale-form-key")
    form = {"phone": PHONE, "amount": "3000", "idempotency_key": key}
    first, second = seller.post_form("/seller/sales", form), seller.post_form("/seller/sales", form)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert re.fullmatch(r"/seller\?sold=\d+", first.headers["Location"])
    assert len(world.api.get("/api/sales").json()["items"]) == 1
    assert world.balance() == 97_000


def test_the_same_credit_form_posted_twice_files_one_request(world):
    seller = world.browser(SELLER)
    key = value_of(seller.get("/seller").text, "credit-form-key")
    form = {"amount": "250000", "idempotency_key": key}
    first, second = (seller.post_form("/seller/credit-requests", form) for _ in range(2))
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    asked = world.api.get("/api/credit-requests").json()["items"]
    assert [request["amount"] for request in asked] == [100_000, 5000, 250_000]  # + one


def test_another_sellers_sale_is_not_shown_as_a_notice(world, admin):
    _, key = new_seller(admin, "stranger", 10_000)
    stranger = world.browser()
    stranger.sign_in(key)
    sold = world.browser(SELLER).post_form("/seller/sales", {"phone": PHONE, "amount": "9"})
    assert 'id="notice"' not in stranger.get(sold.headers["Location"]).text


def test_selling_over_the_balance_is_a_409_page_keeping_what_was_typed(world):
    seller = world.browser(SELLER)
    key = value_of(seller.get("/seller").text, "sale-form-key")
    form = {"phone": PHONE, "amount": "200,000", "idempotency_key": key}
    answer = seller.post_form("/seller/sales", form)
    assert answer.status_code == 409
    assert text_of(answer.text, "sale-amount-error").startswith("Not enough credit")
    assert value_of(answer.text, "sale-phone") == PHONE
    assert value_of(answer.text, "sale-amount") == "200,000"
    assert value_of(answer.text, "idempotency_key") not in ("", key)  # a fresh try, a fresh key
    assert text_of(answer.text, "balance") == "100,000 toman" and world.balance() == 100_000
    assert world.api.get("/api/sales").json()["items"] == []


@pytest.mark.parametrize(
    "phone, amount, field",
    [
        ("0912", "1000", "phone"),
        ('"><script>x()</script>', "9", "phone"),
        *((PHONE, typed, "amount") for typed in ("1.5", "abc", "0")),
        *((None, typed, "amount") for typed in ("1.5", "abc", "0", "-5", "9" * 5000)),  # credit
    ],
    ids=lambda value: value[:12] if isinstance(value, str) else None,
)
def test_a_badly_typed_seller_form_is_a_422_page_naming_the_field(world, phone, amount, field):
    seller, form = world.browser(SELLER), "credit" if phone is None else "sale"
    fields = {"amount": amount} if phone is None else {"phone": phone, "amount": amount}
    path = "/seller/credit-requests" if phone is None else "/seller/sales"
    answer = refused(world.server, 422, seller.post_form, path, fields)
    assert text_of(answer.text, f"{form}-{field}-error"), answer.text
    assert "<script>x()" not in answer.text
    for name, typed in fields.items():  # what was typed is shown again, escaped
        assert value_of(answer.text, f"{form}-{name}") == typed


def test_a_refused_sales_number_is_shown_back_as_it_reads_not_in_reversed_groups(world):
    """Arabic-Indic digits typed in groups, shown back as typed in the left-to-right field,
    read in reverse group order (٦٧٨٩ ٣٤٥ ٠٩١٢: each group a right-to-left number), and a
    clerk could mend it into a wrong one (Persian pages' review, s36): the number as a
    sale reads it. One that does not read stays as typed, beside its error."""
    seller = world.browser(SELLER)
    grouped = "\u0660\u0669\u0661\u0662 \u0663\u0664\u0665 \u0666\u0667\u0668\u0669"
    answer = refused(world.server, 422, seller.post_form, "/seller/sales",
                     {"phone": grouped, "amount": "abc"})  # fmt: skip
    assert value_of(answer.text, "sale-phone") == "09123456789"
    assert value_of(answer.text, "sale-amount") == "abc"
    answer = refused(world.server, 422, seller.post_form, "/seller/sales",
                     {"phone": "\u0660\u0669\u0661\u0662", "amount": "5"})  # fmt: skip
    assert value_of(answer.text, "sale-phone") == "\u0660\u0669\u0661\u0662"


@pytest.mark.parametrize(
    "typed", ["1,5", "1_000", "1" + "\u066c" * 100], ids=["1,5", "1_000", "1+100sep"]
)
def test_a_misplaced_thousands_separator_in_the_sell_form_is_a_422_page_and_sells_nothing(
    world, typed
):
    seller, fields = world.browser(SELLER), {"phone": PHONE, "amount": typed}
    answer = refused(world.server, 422, seller.post_form, "/seller/sales", fields)
    assert "groups of three" in text_of(answer.text, "sale-amount-error")
    assert value_of(answer.text, "sale-amount") == typed
    assert world.api.get("/api/sales").json()["items"] == []
    assert world.balance() == 100_000


def test_the_credit_and_adjust_forms_refuse_misplaced_separators_beside_the_amount(world):
    seller, admin = world.browser(SELLER), world.browser(ADMIN)
    adjust = f"/admin/sellers/{world.seller['id']}/adjustments"
    for browser, path, form, fields in (
        (seller, "/seller/credit-requests", "credit", {"amount": ",1000"}),
        (admin, adjust, "adjust", {"amount": "-1,0,0,0", "reason": "fix"}),
    ):
        answer = refused(world.server, 422, browser.post_form, path, fields)
        assert "groups of three" in text_of(answer.text, f"{form}-amount-error")
        for name, typed in fields.items():
            assert value_of(answer.text, f"{form}-{name}") == typed


# --- the admin's forms ----------------------------------------------------------------------


def test_the_admin_creates_a_seller_whose_key_is_shown_once_and_works_on_the_api(world, server):
    admin = world.browser(ADMIN)
    answer = admin.post_form("/admin/sellers", {"name": "  Shop Ahmad  "})
    assert answer.status_code == 201
    key, ident = text_of(answer.text, "api-key"), text_of(answer.text, "new-seller-id")
    api = server.seller(key)
    me, _ = api.get("/api/me"), api.close()
    assert (me.status_code, me.json()["name"], str(me.json()["id"])) == (200, "Shop Ahmad", ident)
    assert key not in admin.get(f"/admin/sellers/{ident}").text


def test_approve_and_reject_buttons_decide_once_in_plain_words(fresh_server):
    admin_api = fresh_server.admin()
    _, key = new_seller(admin_api, "buyer")
    seller = fresh_server.seller(key)
    first, second = (
        seller.post("/api/credit-requests", {"amount": a}).json()["id"] for a in (7000, 9)
    )
    admin = Browser(fresh_server.url)
    admin.sign_in(ADMIN_TOKEN)
    page = admin.get("/admin").text
    assert all(f'id="{b}-{i}"' in page for b in ("approve", "reject") for i in (first, second))
    approved = admin.post_form(f"/admin/credit-requests/{first}/approve", {})
    assert approved.headers["Location"] == f"/admin?approved={first}"
    assert "is approved" in text_of(admin.get(approved.headers["Location"]).text, "notice")
    again = admin.post_form(f"/admin/credit-requests/{first}/approve", {})
    assert again.status_code == 409
    assert text_of(again.text, "problem") == f"Credit request {first} is already approved"
    rejected = admin.post_form(f"/admin/credit-requests/{second}/reject", {})
    assert rejected.headers["Location"] == f"/admin?rejected={second}"
    assert admin.post_form(f"/admin/credit-requests/{second}/approve", {}).status_code == 409
    assert seller.get(f"/api/credit-requests/{second}").json()["status"] == "rejected"
    assert reconciled_balances(fresh_server.db_path) == {1: 7000}
    for client in (admin.http, admin_api, seller):
        client.close()


def test_the_admin_adjusts_a_balance_both_ways_with_a_reason(world):
    admin, path = world.browser(ADMIN), f"/admin/sellers/{world.seller['id']}"
    for typed, balance in (("\u22122,000", 98_000), ("+۵۰۰", 98_500)):
        answer = admin.post_form(path + "/adjustments", {"amount": typed, "reason": "fix"})
        assert answer.status_code == 303
        assert re.fullmatch(rf"{path}\?adjusted=\d+", answer.headers["Location"])
        notice = text_of(admin.get(answer.headers["Location"]).text, "notice")
        assert "fix" in notice and f"{balance:,} toman" in notice
    assert world.balance() == 98_500


def test_the_same_adjust_form_posted_twice_adjusts_once_and_both_land_on_the_same_entry(world):
    admin, path = world.browser(ADMIN), f"/admin/sellers/{world.seller['id']}"
    key = value_of(admin.get(path).text, "idempotency_key")
    form = {"amount": "-4,000", "reason": "late fee", "idempotency_key": key}
    first, second = (admin.post_form(path + "/adjustments", form) for _ in range(2))
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert world.balance() == 96_000
    entries = world.api.get("/api/ledger").json()["items"]
    assert [entry["reason"] for entry in entries if entry["kind"] == "adjustment"] == ["late fee"]
    assert value_of(admin.get(path).text, "idempotency_key") != key  # the next form, a new key


def test_adjusting_an_unknown_seller_is_a_404_page_and_changes_nothing(world):
    admin = world.browser(ADMIN)
    form = {"amount": "5000", "reason": "ghost"}
    answer = refused(world.server, 404, admin.post_form, "/admin/sellers/999999/adjustments", form)
    assert text_of(answer.text, "error-message") == "Seller 999999 does not exist"


def test_an_adjustment_below_zero_is_a_409_page_and_changes_nothing(world):
    admin, path = world.browser(ADMIN), f"/admin/sellers/{world.seller['id']}/adjustments"
    form = {"amount": "-100001", "reason": "too much"}
    answer = refused(world.server, 409, admin.post_form, path, form)
    assert text_of(answer.text, "adjust-amount-error").startswith("Not enough credit")
    assert value_of(answer.text, "adjust-reason") == "too much"


def test_the_admin_refunds_a_sale_from_the_sellers_page_after_confirming_it_once(world):
    """The seller's page links each sale to its confirmation page; only that page's form
    refunds (CSRF, its own key: a double post refunds once). Then both pages mark the sale
    refunded, and the confirmation page no longer offers a form."""
    admin, seller_page = world.browser(ADMIN), f"/admin/sellers/{world.seller['id']}"
    sale = world.api.post("/api/sales", {"phone": PHONE, "amount": 3_000}).json()["id"]
    link = f"/admin/sales/{sale}/refund"
    assert f'href="{link}"' in admin.get(seller_page).text  # asked for from the seller's page
    confirm = admin.get(link)
    assert confirm.status_code == 200 and "Refund 3,000 toman" in confirm.text
    blank = refused(world.server, 422, admin.post_form, link, {"reason": "  "})
    assert text_of(blank.text, "refund-reason-error")
    form = {
        "reason": "operator did not deliver",
        "idempotency_key": value_of(confirm.text, "idempotency_key"),
    }
    first, second = (admin.post_form(link, form) for _ in range(2))
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert re.fullmatch(rf"{seller_page}\?refunded=\d+", first.headers["Location"])
    notice = text_of(admin.get(first.headers["Location"]).text, "notice")
    assert "Sale refunded: +3,000 toman" in notice and "100,000 toman" in notice
    assert world.balance() == 100_000
    refunds = [e for e in world.api.get("/api/ledger").json()["items"] if e["kind"] == "refund"]
    assert [(e["refund_of"], e["amount"]) for e in refunds] == [(sale, 3_000)]
    assert f'id="refunded-{sale}"' in world.browser(SELLER).get("/seller").text
    assert f'id="refunded-{sale}"' in admin.get(seller_page).text
    assert f'href="{link}"' not in admin.get(seller_page).text
    again = admin.get(link)
    assert 'id="already-refunded"' in again.text and 'id="refund-form"' not in again.text
    late = refused(world.server, 409, admin.post_form, link, {"reason": "twice"})
    assert 'id="already-refunded"' in late.text  # the page says so, with no form to send


def test_refunding_an_unknown_sale_is_a_404_page_and_changes_nothing(world):
    admin = world.browser(ADMIN)
    assert admin.get("/admin/sales/999999999/refund").status_code == 404
    answer = refused(world.server, 404, admin.post_form, "/admin/sales/999999999/refund",
                     {"reason": "ghost"})  # fmt: skip
    assert text_of(answer.text, "error-message") == "Sale 999999999 does not exist"


def test_the_audit_page_shows_the_green_verdict(world):
    answer = world.browser(ADMIN).get("/admin/audit")
    assert answer.status_code == 200
    assert 'class="verdict good" id="verdict"' in answer.text
    assert text_of(answer.text, "verdict") == "✓ The books are consistent"


def test_hostile_and_persian_seller_names_are_shown_escaped_and_intact(world, admin):
    hostile, persian = "<script>alert(1)</script>", "فروشگاه «علی» ۱۲"
    (bad, key), (good, _) = new_seller(admin, hostile), new_seller(admin, persian)
    browser, own = world.browser(ADMIN), world.browser()
    own.sign_in(key)
    pages = [browser.get(f"/admin?after_id={bad['id'] - 1}").text, own.get("/seller").text]
    pages += [browser.get(f"/admin/sellers/{s['id']}").text for s in (bad, good)]
    assert all(hostile not in page for page in pages)
    assert all(html.escape(hostile) in page for page in pages[:3])
    assert persian in pages[0] and persian in pages[3]
