"""The web pages in a real browser: Debian's Chromium, headless, driven by Playwright.

Each test works as a person would: it types into the fields and clicks the
buttons of pages served by a real server process, then checks the books from
a fresh connection. Every page visited is saved as a PNG under
tests/artifacts/screenshots/ (or $CHARGEBOX_ARTIFACTS), desktop and phone size.
Without Chromium the tests skip, except under CI=true, where they must run.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support import ADMIN_TOKEN, ROOT, new_seller, reconciled_balances, running_server

CHROMIUM = os.environ.get("CHARGEBOX_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google,
# which this machine's closed network refuses; the sandbox cannot run as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("CHARGEBOX_ARTIFACTS", ROOT / "tests" / "artifacts")) / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def chromium() -> Browser:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (CI's .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, new_server):
    with new_server(tmp_path_factory.mktemp("browser")) as process:
        yield process


@pytest.fixture(scope="module", autouse=True)
def screenshots():
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    yield SHOTS


class Person:
    """One browser profile (its own cookies) at one screen size, on the site."""

    def __init__(self, chromium: Browser, url: str, viewport=DESKTOP, javascript=True,
                 **context) -> None:  # fmt: skip
        """`context`: more of playwright's new_context options (locale="fa-IR", ...)."""
        self.url = url
        self.context = chromium.new_context(
            viewport=viewport, java_script_enabled=javascript, **context
        )
        self.page: Page = self.context.new_page()
        self.size = "phone" if viewport == PHONE else "desktop"

    def open(self, path: str) -> Page:
        self.page.goto(self.url + path)
        return self.page

    def sign_in(self, token: str) -> Page:
        self.open("/login")
        self.page.fill("#login-token", token)
        self.page.click("#login-button")
        return self.page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=SHOTS / f"{name}-{self.size}.png", full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def people(chromium, site):
    opened: list[Person] = []

    def person(**options) -> Person:
        opened.append(Person(chromium, site.url, **options))
        return opened[-1]

    yield person
    for one in opened:
        one.close()


def create_seller(admin: Person, name: str) -> tuple[int, str]:
    admin.open("/admin")
    admin.page.fill("#seller-name", name)
    admin.page.click("#create-seller-button")
    expect(admin.page.locator("h1")).to_contain_text(name)
    return int(admin.page.inner_text("#new-seller-id")), admin.page.inner_text("#api-key")


def funded_seller(site, credit: int, name: str = "فروشگاه موبایل") -> tuple[int, str]:
    """A seller with `credit` toman, made through the JSON API: (id, API key)."""
    admin_api = site.admin()
    seller, key = new_seller(admin_api, name, credit)
    admin_api.close()
    return seller["id"], key


def signed_in_seller(site, people, credit: int, **options) -> tuple[int, Person]:
    """A funded seller, signed in in a browser of its own."""
    seller_id, key = funded_seller(site, credit, **options)
    seller = people()
    seller.sign_in(key)
    return seller_id, seller


def fill_sale(seller: Person, phone: str, amount: str) -> None:
    seller.page.fill("#sale-phone", phone)
    seller.page.fill("#sale-amount", amount)


def submit_and_send_again(person: Person, button: str) -> None:
    """Click `button`, then send its form's very request again from the same browser
    (same cookie, same fields, same key), as a browser retrying it would. Both must end
    on the same page."""
    with person.page.expect_request(lambda r: r.method == "POST") as sent:
        person.page.click(button)
    person.page.wait_for_url(re.compile(r"\?(sold|adjusted|refunded)=\d+$"))  # the 303's page
    first = person.page.url
    retry = person.context.request.post(
        sent.value.url, data=sent.value.post_data, headers=sent.value.headers, max_redirects=0
    )
    assert retry.status == 303
    assert person.url + retry.headers["location"] == first


def assert_fits(page: Page, selector: str) -> None:
    """The element needs no sideways scrolling (on a phone, rows must wrap instead)."""
    needed, shown = page.eval_on_selector(selector, "e => [e.scrollWidth, e.clientWidth]")
    assert needed <= shown, f"{selector} is {needed} px wide in {shown} px"


def sales_of(site, seller_id: int) -> list[dict]:
    admin_api = site.admin()
    items = admin_api.get(f"/api/sales?seller_id={seller_id}").json()["items"]
    admin_api.close()
    return items


def balance_in_db(site, seller_id: int) -> int:
    return reconciled_balances(site.db_path)[seller_id]


def test_admin_creates_a_seller_who_requests_credit_and_the_admin_approves_it(site, people):
    for size in (DESKTOP, PHONE):
        admin = people(viewport=size)
        admin.open("/login")
        admin.shot("01-sign-in")
        admin.sign_in(ADMIN_TOKEN)
        expect(admin.page).to_have_url(re.compile(r"/admin$"))
        admin.shot("02-admin")
        name = "فروشگاه رضا" if size == DESKTOP else "Reza's shop"
        seller_id, key = create_seller(admin, name)
        assert key.startswith("cbk_")
        admin.shot("03-seller-created")

        seller = people(viewport=size)
        seller.sign_in(key)
        expect(seller.page).to_have_url(re.compile(r"/seller$"))
        expect(seller.page.locator("#balance")).to_have_text("0 toman")
        hint = "Iranian mobile; Persian digits are fine."  # a field's hint is said with it
        expect(seller.page.locator("#sale-phone")).to_have_accessible_description(hint)
        seller.page.fill("#credit-amount", "۲٬۰۰۰٬۰۰۰")  # Persian digits and separators
        seller.page.click("#credit-button")
        expect(seller.page.locator("#notice")).to_contain_text("2,000,000 toman is sent")
        seller.shot("04-seller-credit-requested")

        admin.open("/admin")
        row = admin.page.locator("#pending tr", has_text=name)
        expect(row).to_contain_text("2,000,000")
        assert_fits(admin.page, "#pending")
        admin.shot("05-admin-pending-request")
        request_id = row.get_attribute("id").removeprefix("request-")
        # Each row's buttons are named for their request, as a screen reader says them.
        approve = f"Approve credit request #{request_id}"
        admin.page.get_by_role("button", name=approve, exact=True).click()
        expect(admin.page.locator("#notice")).to_contain_text("is approved")
        admin.shot("06-admin-approved")

        seller.open("/seller")
        expect(seller.page.locator("#balance")).to_have_text("2,000,000 toman")
        expect(seller.page.locator("#credit-requests")).to_contain_text("approved")
        assert balance_in_db(site, seller_id) == 2_000_000


def test_a_seller_sells_a_charge_to_a_persian_digit_number(site, people):
    seller_id, seller = signed_in_seller(site, people, 500_000)
    fill_sale(seller, "۰۹۱۲ ۳۴۵ ۶۷۸۹", "50,000")
    seller.page.click("#sell-button")
    expect(seller.page.locator("#notice")).to_contain_text("Sold 50,000 toman")
    expect(seller.page.locator("#notice")).to_contain_text("09123456789")
    expect(seller.page.locator("#balance")).to_have_text("450,000 toman")
    (sale,) = sales_of(site, seller_id)  # the ledger names it by its sale number
    expect(seller.page.locator("#ledger")).to_contain_text(f"Sale #{sale['id']} to 09123456789")
    seller.shot("07-seller-sold")
    assert [sale["phone"] for sale in sales_of(site, seller_id)] == ["09123456789"]
    assert balance_in_db(site, seller_id) == 450_000


def test_a_double_click_on_sell_sells_once(site, people):
    seller_id, seller = signed_in_seller(site, people, 300_000)
    fill_sale(seller, "09351112233", "100000")
    seller.page.dblclick("#sell-button")
    seller.page.wait_for_url(re.compile(r"sold="))
    expect(seller.page.locator("#balance")).to_have_text("200,000 toman")
    assert len(sales_of(site, seller_id)) == 1
    assert balance_in_db(site, seller_id) == 200_000


def test_the_browser_sending_the_sell_form_again_replays_the_sale_instead_of_selling_twice(
    site, people
):
    """A retry is the very same request again (same cookie, same form, same key); it is
    replayed from the browser's own context, so nothing in it is made up by the test."""
    seller_id, seller = signed_in_seller(site, people, 300_000)
    fill_sale(seller, "0935 111 2233", "100000")
    submit_and_send_again(seller, "#sell-button")
    assert len(sales_of(site, seller_id)) == 1
    assert balance_in_db(site, seller_id) == 200_000


def test_an_overspend_is_refused_in_plain_words_keeps_the_form_and_charges_nothing(site, people):
    seller_id, seller = signed_in_seller(site, people, 80_000)
    fill_sale(seller, "۰۹۱۲۱۲۳۴۵۶۷", "100,000")
    seller.page.click("#sell-button")
    error = seller.page.locator("#sale-amount-error")
    expect(error).to_contain_text("Not enough credit")
    expect(error).to_contain_text("80,000 toman does not cover 100,000 toman")
    # the number as the sale reads it, in the page's digits (Arabic-Indic groups typed
    # in the LTR field read reversed: test_web_forms); the amount as typed
    expect(seller.page.locator("#sale-phone")).to_have_value("09121234567")
    expect(seller.page.locator("#sale-amount")).to_have_value("100,000")
    expect(seller.page.locator("#sale-amount")).to_be_focused()  # the field to fix
    expect(seller.page.locator("#balance")).to_have_text("80,000 toman")
    seller.shot("08-seller-overspend-refused")
    assert sales_of(site, seller_id) == []
    assert balance_in_db(site, seller_id) == 80_000

    fill_sale(seller, "0812345", "10000")
    seller.page.click("#sell-button")
    expect(seller.page.locator("#sale-phone-error")).to_contain_text("Iranian mobile number")
    seller.shot("09-seller-bad-phone")
    assert sales_of(site, seller_id) == []


def test_a_refused_statement_day_stays_in_its_field_as_typed(site, people):
    """A date widget drops a value it cannot read: the refused field comes back as text."""
    _, seller = signed_in_seller(site, people, 0)
    seller.open("/seller/statement?format=csv&day=2026-13-01")  # an address edited by hand
    expect(seller.page.locator("#statement-day-error")).to_contain_text("Day must be a date")
    expect(seller.page.locator("#statement-day-value")).to_have_value("2026-13-01")
    expect(seller.page.locator("#statement-day-value")).to_be_focused()


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(site, people):
    seller_id, seller = signed_in_seller(site, people, 90_000)
    seller.page.eval_on_selector("#sale-form input[name=csrf]", "input => input.remove()")
    fill_sale(seller, "09121234567", "10000")
    seller.page.click("#sell-button")
    expect(seller.page.locator("#error-message")).to_contain_text("did not come from this site")
    seller.shot("10-csrf-refused")
    assert sales_of(site, seller_id) == []
    assert balance_in_db(site, seller_id) == 90_000


def test_a_form_on_another_site_cannot_sell_with_the_sellers_cookie(site, people):
    """SameSite=Strict: a cross-site post arrives without the session cookie at all."""
    seller_id, seller = signed_in_seller(site, people, 90_000)
    seller.page.goto("about:blank")  # another origin, so not our site
    seller.page.set_content(
        f'<form method="post" action="{site.url}/seller/sales">'
        '<input name="phone" value="09121234567"><input name="amount" value="10000">'
        '<input name="csrf" value="guessed"><button id="go">go</button></form>'
    )
    seller.page.click("#go")
    expect(seller.page).to_have_url(re.compile(r"/login$"))
    assert sales_of(site, seller_id) == []


def test_a_seller_cannot_open_the_admin_pages(site, people):
    seller_id, seller = signed_in_seller(site, people, 10_000)
    for path in ("/admin", "/admin/audit", f"/admin/sellers/{seller_id}"):
        response = seller.page.goto(seller.url + path)
        assert response.status == 403, path
        expect(seller.page.locator("#error-message")).to_contain_text("for the admin")
    expect(seller.page.locator("#sign-out")).to_be_visible()  # still signed in, with a way out
    seller.shot("11-seller-on-an-admin-page")
    assert "Approve" not in seller.page.content()


def test_the_admin_adjusts_a_balance_and_refunds_a_sale_and_the_audit_is_green(site, people):
    seller_id, key = funded_seller(site, 100_000, name="Sara <b>& co</b>")
    admin = people()
    admin.sign_in(ADMIN_TOKEN)
    admin.open(f"/admin/sellers/{seller_id}")
    expect(admin.page.locator("h1")).to_contain_text("Sara <b>& co</b>")  # shown, not markup
    admin.page.fill("#adjust-amount", "-150,000")
    admin.page.fill("#adjust-reason", "refund of a failed top-up")
    admin.page.click("#adjust-button")
    expect(admin.page.locator("#adjust-amount-error")).to_contain_text("Not enough credit")
    expect(admin.page.locator("#adjust-reason")).to_have_value("refund of a failed top-up")
    admin.page.fill("#adjust-amount", "-15,000")
    submit_and_send_again(admin, "#adjust-button")  # the form's own key: one adjustment
    expect(admin.page.locator("#notice")).to_contain_text("Adjusted by −15,000 toman")
    expect(admin.page.locator("#balance")).to_have_text("85,000 toman")
    admin.shot("12-admin-seller-adjusted")
    assert balance_in_db(site, seller_id) == 85_000
    # A refund: asked for from the seller's page, done from its confirmation page, once.
    api = site.seller(key)
    sale = api.post("/api/sales", {"phone": "09121234567", "amount": 5_000}).json()["id"]
    api.close()
    admin.open(f"/admin/sellers/{seller_id}")
    expect(admin.page.locator("#balance")).to_have_text("80,000 toman")
    admin.page.click(f"#refund-{sale}")
    expect(admin.page.locator("#refund-button")).to_have_text("Refund 5,000 toman")
    admin.page.fill("#refund-reason", "operator did not deliver")
    admin.shot("12b-admin-refund-confirm")
    submit_and_send_again(admin, "#refund-button")  # the form's own key: one refund
    expect(admin.page.locator("#notice")).to_contain_text("Sale refunded: +5,000 toman")
    expect(admin.page.locator(f"#refunded-{sale}")).to_be_visible()
    expect(admin.page.locator("#balance")).to_have_text("85,000 toman")
    admin.shot("12c-admin-seller-refunded")
    assert balance_in_db(site, seller_id) == 85_000
    admin.open("/admin/audit")
    expect(admin.page.locator("#verdict")).to_contain_text("consistent")
    expect(admin.page.locator("#verdict.good")).to_be_visible()
    admin.shot("13-audit-green")


def test_the_pages_fit_a_phone_screen(site, people):
    _, key = funded_seller(site, 1_250_000, name="فروشگاه خیلی خیلی طولانی شمال تهران")
    seller = people(viewport=PHONE)
    seller.sign_in(key)
    fill_sale(seller, "+98 912 000 1122", "20000")
    seller.page.click("#sell-button")
    expect(seller.page.locator("#notice")).to_contain_text("09120001122")
    width = seller.page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the seller page is {width} px wide on a phone"
    assert_fits(seller.page, "#ledger")
    seller.shot("14-seller-home")


def test_a_tampered_database_shows_a_red_audit(chromium, tmp_path):
    with running_server(tmp_path / "chargebox.db") as own_site:
        seller_id, _ = funded_seller(own_site, 40_000)
        conn = sqlite3.connect(own_site.db_path)
        triggers = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'seller'"
            )
        ]
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE seller SET balance = balance + 1000000 WHERE id = ?", (seller_id,))
        conn.commit()
        conn.close()
        admin = Person(chromium, own_site.url)
        try:
            admin.sign_in(ADMIN_TOKEN)
            admin.open("/admin/audit")
            expect(admin.page.locator("#verdict.bad")).to_contain_text("NOT consistent")
            expect(admin.page.locator("#problems")).to_contain_text("I2")
            admin.shot("15-audit-red")
        finally:
            admin.close()
