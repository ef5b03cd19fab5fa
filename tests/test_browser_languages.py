"""Every flow of the pages, in Persian and in English, at phone and at desktop size.

A Chromium whose language is Persian (`fa-IR`) or English (`en-US`) signs the admin in
(revealing the typed token), creates a seller, whose clerk signs in with its key,
asks for credit, which the admin approves; the clerk sells, is refused an overspend,
finds the sale (in Persian by typed Jalali dates, a refused one kept as typed), downloads
a Jalali month's statement (in Persian also a typed Jalali day's, whose opening and closing
balances are the API's for the same Gregorian day) and opens its charts; the admin
adjusts the balance, refunds the sale, reads the audit and the charts, meets the 404
page, switches language and back, and signs out. On every page: `lang` and `dir` are
the language's, nothing needs sideways scrolling, and a Persian page shows no Latin
letter and no Latin digit outside the data it marks as such (names and reasons in
`<bdi>`, keys, phones and the brand with `translate="no"`). Then the books are
re-added from the database. Screenshots: tests/artifacts/screenshots/lang-*.png.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import re
from pathlib import Path

import jdatetime
import pytest
from playwright.sync_api import expect

from chargebox.clock import parse
from chargebox.periods import TEHRAN
from chargebox.web import i18n
from tests import test_browser
from tests.support import ADMIN_TOKEN
from tests.test_browser import (
    DESKTOP,
    PHONE,
    SHOTS,
    Person,
    balance_in_db,
    create_seller,
    sales_of,
)

# test_browser's fixtures, shared: one Chromium and one server for this module.
chromium, site, people = test_browser.chromium, test_browser.site, test_browser.people
pytestmark = pytest.mark.timeout(300)
LOCALES = {"fa": "fa-IR", "en": "en-US"}
# The page's visible words, without what it marks as data: user text (in <bdi>, or between
# the isolates FSI and PDI), keys, phones and the brand (translate="no").
WORDS = """() => { const copy = document.body.cloneNode(true);
  copy.querySelectorAll('[translate=no], bdi, script, style, [hidden]').forEach(e => e.remove());
  return copy.textContent.replace(/\u2068[^\u2069]*\u2069/g, ' ').replace(/\\s+/g, ' '); }"""


@pytest.fixture(scope="module", autouse=True)
def shots_folder():
    SHOTS.mkdir(parents=True, exist_ok=True)


def looks_right(person: Person, lang: str, step: str) -> None:
    """The page is in `lang`, fits its screen, speaks only `lang`; then a screenshot."""
    page = person.page
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator("html")).to_have_attribute("dir", i18n.LANGUAGE[lang].direction)
    wide, shown = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide <= shown, f"{step}: {wide} px wide on a {shown} px screen"
    if lang == "fa":
        words = page.evaluate(WORDS)
        latin = re.findall(r"\S*[A-Za-z0-9]\S*", words)
        assert not latin, f"{step}: Latin on a Persian page: {latin}"
    person.shot(f"lang-{lang}-{step}")


def day_of_sale(site, seller_id: int) -> datetime.date:
    """The Tehran day the seller's sale was stamped on (not today's date when the test
    began: a Tehran midnight may fall during the test)."""
    (sale,) = sales_of(site, seller_id)
    return parse(sale["created_at"]).astimezone(TEHRAN).date()


def jalali_month(day: datetime.date) -> str:
    return jdatetime.date.fromgregorian(date=day).strftime("%Y-%m")


def jalali_day(day: datetime.date, days: int = 0) -> str:
    """The Jalali date of `day` (or of a later one), in Persian digits: ۱۴۰۵/۰۹/۱۰."""
    shown = jdatetime.date.fromgregorian(date=day + datetime.timedelta(days=days))
    return i18n.LANGUAGE["fa"].digits(shown.strftime("%Y/%m/%d"))


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("lang", ["fa", "en"])
def test_every_flow_reads_right_in_each_language_and_size(site, people, lang, size):
    speak = i18n.LANGUAGE[lang]
    admin = people(viewport=size, locale=LOCALES[lang])
    admin.open("/login")
    admin.page.fill("#login-token", ADMIN_TOKEN)
    expect(admin.page.locator("#reveal-login-token")).to_have_text(speak.gettext("Show"))
    admin.page.click("#reveal-login-token")
    expect(admin.page.locator("#login-token")).to_have_attribute("type", "text")
    hide = {"fa": "پنهان کردن", "en": "Hide"}[lang]
    expect(admin.page.locator("#reveal-login-token")).to_have_text(hide)
    looks_right(admin, lang, "01-sign-in-token-shown")
    admin.page.click("#login-button")
    expect(admin.page).to_have_url(re.compile(r"/admin$"))
    looks_right(admin, lang, "02-admin")

    name = {"fa": "فروشگاه رضا", "en": "Reza's shop"}[lang] + " " + speak.digits(str(size["width"]))
    seller_id, key = create_seller(admin, name)
    expect(admin.page.locator("#copy-api-key")).to_be_visible()
    looks_right(admin, lang, "03-seller-created")

    clerk = people(viewport=size, locale=LOCALES[lang])
    clerk.sign_in(key)
    expect(clerk.page).to_have_url(re.compile(r"/seller$"))
    expect(clerk.page.locator("#balance")).to_have_text(speak.toman(0))
    clerk.page.fill("#credit-amount", "۲٬۰۰۰٬۰۰۰")
    clerk.page.click("#credit-button")
    expect(clerk.page.locator("#notice")).to_contain_text(speak.toman(2_000_000))
    looks_right(clerk, lang, "04-credit-requested")

    admin.open("/admin")
    row = admin.page.locator("#pending tr", has_text=name)
    expect(row).to_contain_text(speak.number(2_000_000))
    looks_right(admin, lang, "05-admin-pending")
    row.locator("button.good").click()
    expect(admin.page.locator("#notice")).to_contain_text(speak.toman(2_000_000))
    looks_right(admin, lang, "06-admin-approved")

    clerk.open("/seller")
    expect(clerk.page.locator("#balance")).to_have_text(speak.toman(2_000_000))
    clerk.page.fill("#sale-phone", "۰۹۱۲ ۳۴۵ ۶۷۸۹")
    clerk.page.fill("#sale-amount", "50,000")
    clerk.page.click("#sell-button")
    expect(clerk.page.locator("#notice")).to_contain_text(speak.toman(50_000))
    expect(clerk.page.locator("#balance")).to_have_text(speak.toman(1_950_000))
    looks_right(clerk, lang, "07-sold")
    sale_id = int(re.search(r"sold=([0-9]+)", clerk.page.url).group(1))
    sold_on = day_of_sale(site, seller_id)

    clerk.page.fill("#sale-phone", "09123456789")
    clerk.page.fill("#sale-amount", "۵٬۰۰۰٬۰۰۰")
    clerk.page.click("#sell-button")
    refusal = clerk.page.locator("#sale-amount-error")
    expect(refusal).to_contain_text(speak.number(1_950_000))
    expect(refusal).to_contain_text(speak.number(5_000_000))
    looks_right(clerk, lang, "08-overspend-refused")

    clerk.open("/seller/sales/found")
    clerk.page.fill("#find-phone", "0912-345-6789")
    if lang == "fa":  # typed Jalali dates: no Gregorian date-and-time widget
        expect(clerk.page.locator("#find-from")).to_have_attribute("type", "text")
        clerk.page.fill("#find-from", jalali_day(sold_on))
        clerk.page.fill("#find-to", jalali_day(sold_on) + " ۲۴:۰۰")
        clerk.page.click("#find-button")
        expect(clerk.page.locator("#find-to-error")).to_be_visible()
        expect(clerk.page.locator("#find-to")).to_have_value(jalali_day(sold_on) + " ۲۴:۰۰")
        looks_right(clerk, lang, "09-find-refused")
        clerk.page.fill("#find-to", jalali_day(sold_on, days=1))
    else:
        expect(clerk.page.locator("#find-from")).to_have_attribute("type", "datetime-local")
    clerk.page.click("#find-button")
    expect(clerk.page.locator("#sales-found")).to_contain_text(speak.number(50_000))
    looks_right(clerk, lang, "09-sale-found")

    clerk.open("/seller")
    clerk.page.fill("#statement-jmonth-value", speak.digits(jalali_month(sold_on)))
    with clerk.page.expect_download() as statement:
        clerk.page.click("#statement-jmonth-button")
    assert statement.value.suggested_filename.endswith(".csv")
    saved = Path(statement.value.path()).read_bytes()
    assert saved.startswith(codecs.BOM_UTF8)  # marked UTF-8, for Excel
    rows = saved.decode("utf-8-sig")
    assert "sale" in rows  # the month of the sale (its credit may fall in the month before)
    if lang == "fa":  # a Jalali day, typed: the API's Gregorian day of the same date
        looks_right(clerk, lang, "09-statement-form")
        by_api = site.seller(key).get(f"/api/statements?day={sold_on.isoformat()}").json()
        clerk.page.fill("#statement-jday-value", jalali_day(sold_on))
        with clerk.page.expect_download() as statement:
            clerk.page.click("#statement-jday-button")
        saved = Path(statement.value.path()).read_text("utf-8-sig")
        lines = list(csv.DictReader(io.StringIO(saved)))
        assert int(lines[0]["balance_after"]) == by_api["opening_balance"]
        closing = next(line for line in lines if line["line"] == "closing")
        assert int(closing["balance_after"]) == by_api["closing_balance"] == 1_950_000

    clerk.open("/seller/charts")
    expect(clerk.page.locator("svg").first).to_be_visible()
    looks_right(clerk, lang, "10-seller-charts")

    admin.open(f"/admin/sellers/{seller_id}")
    # An empty free-text field (its placeholder) reads as the page does; typed text leads.
    direction = "e => getComputedStyle(e).direction"
    assert admin.page.eval_on_selector("#key-label", direction) == i18n.LANGUAGE[lang].direction
    admin.page.fill("#key-label", "web shop")
    assert admin.page.eval_on_selector("#key-label", direction) == "ltr"
    admin.page.fill("#key-label", "")
    # The adjustment's example amounts are each isolated: a minus stays with its number.
    example = admin.page.get_attribute("#adjust-amount", "placeholder")
    assert re.fullmatch("\u2066-[^\u2069]+\u2069 .+ \u2066[^\u2069]+\u2069", example), example
    admin.page.fill("#adjust-amount", "-15,000")
    admin.page.fill("#adjust-reason", "کارمزد" if lang == "fa" else "fee")
    admin.page.click("#adjust-button")
    expect(admin.page.locator("#notice")).to_contain_text(speak.number(15_000))
    expect(admin.page.locator("#balance")).to_have_text(speak.toman(1_935_000))
    looks_right(admin, lang, "11-admin-adjusted")
    admin.page.click(f"#refund-{sale_id}")
    admin.page.fill("#refund-reason", "شارژ نرسید" if lang == "fa" else "not delivered")
    looks_right(admin, lang, "12-refund-confirm")
    admin.page.click("#refund-button")
    expect(admin.page.locator(f"#refunded-{sale_id}")).to_be_visible()
    expect(admin.page.locator("#balance")).to_have_text(speak.toman(1_985_000))
    looks_right(admin, lang, "13-refunded")

    admin.open("/admin/audit")
    expect(admin.page.locator("#verdict.good")).to_be_visible()
    looks_right(admin, lang, "14-audit")
    admin.open("/admin/charts")
    expect(admin.page.locator("svg").first).to_be_visible()
    looks_right(admin, lang, "15-admin-charts")
    response = admin.page.goto(admin.url + "/admin/no-such-page")
    assert response.status == 404
    looks_right(admin, lang, "16-not-found")

    other = "en" if lang == "fa" else "fa"
    admin.open("/admin")
    admin.page.click(f"#language-{other}")
    expect(admin.page).to_have_url(re.compile(r"/admin$"))
    looks_right(admin, other, f"17-switched-from-{lang}")
    admin.open("/admin/audit")  # remembered, whatever the browser asks for
    expect(admin.page.locator("html")).to_have_attribute("lang", other)
    admin.page.click(f"#language-{lang}")
    expect(admin.page.locator("html")).to_have_attribute("lang", lang)

    clerk.page.click("#sign-out")
    expect(clerk.page).to_have_url(re.compile(r"/login"))
    expect(clerk.page.locator("#notice")).to_be_visible()
    looks_right(clerk, lang, "18-signed-out")

    assert balance_in_db(site, seller_id) == 1_985_000
