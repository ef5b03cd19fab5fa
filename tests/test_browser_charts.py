"""Browser tests of the charts, the font and the two small scripts, in Debian's Chromium.

The chart pages fit a phone (390 px) and a desktop with no sideways scrolling and draw
Persian with Vazirmatn, loaded from our own /static/; the Copy button copies a new key
(or, without the Clipboard API, selects it) and says so in the page's language; the
Show toggle reveals the sign-in key and hides it again, its label saying what the next
press does. Without JavaScript neither button shows and the pages work as before.
Screenshots go beside test_browser.py's.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests import test_browser
from tests.support import ADMIN_TOKEN
from tests.test_browser import DESKTOP, PHONE, SHOTS, assert_fits, create_seller, funded_seller

# test_browser's fixtures, shared: one Chromium and one server for this module.
chromium, site, people = test_browser.chromium, test_browser.site, test_browser.people
pytestmark = pytest.mark.timeout(180)
# The state of every FontFace named Vazirmatn, once the page's fonts are settled.
FONT_STATES = """async () => { await document.fonts.ready;
  return [...document.fonts].filter(f => f.family.includes('Vazirmatn')).map(f => f.status); }"""
NO_SIDEWAYS = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


@pytest.fixture(scope="module", autouse=True)
def shots_folder():
    SHOTS.mkdir(parents=True, exist_ok=True)


def sell(site, key: str, *amounts: int) -> None:
    api = site.seller(key)
    for amount in amounts:
        assert api.post("/api/sales", {"phone": "09121234567", "amount": amount}).status_code == 201
    api.close()


def assert_drawn_in_vazirmatn(page) -> None:
    assert page.evaluate(FONT_STATES) == ["loaded"]
    assert page.evaluate("document.fonts.check('16px Vazirmatn', 'فروش')")
    family = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert family.startswith("Vazirmatn"), family


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_chart_pages_fit_the_screen_and_draw_persian_in_vazirmatn(site, people, size):
    _, key = funded_seller(site, 5_000_000, "فروشگاه نمودار")
    sell(site, key, 20_000, 30_000, 150_000)
    seller = people(viewport=size, locale="fa-IR")
    seller.sign_in(key)
    seller.page.click("#nav-charts")
    expect(seller.page).to_have_url(re.compile(r"/seller/charts$"))
    expect(seller.page.locator("html")).to_have_attribute("dir", "rtl")
    expect(seller.page.locator("#chart-per-day svg rect").first).to_be_visible()
    assert seller.page.evaluate(NO_SIDEWAYS)
    assert_fits(seller.page, "#chart-per-day")
    assert_drawn_in_vazirmatn(seller.page)
    seller.shot("20-seller-charts-fa")
    admin = people(viewport=size)
    admin.sign_in(ADMIN_TOKEN)
    admin.open("/admin/charts")
    expect(admin.page.locator("#chart-top")).to_contain_text("فروشگاه نمودار")
    for chart in ("#chart-per-day", "#chart-per-hour", "#chart-top"):
        assert_fits(admin.page, chart)
    assert admin.page.evaluate(NO_SIDEWAYS)
    assert_drawn_in_vazirmatn(admin.page)  # an English page; the seller's name is Persian
    admin.shot("21-admin-charts")


def test_the_copy_button_copies_a_new_key_and_says_so(site, people):
    admin = people()
    admin.sign_in(ADMIN_TOKEN)
    admin.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    _, key = create_seller(admin, "Copy shop")
    admin.page.click("#copy-api-key")
    expect(admin.page.locator("#copy-api-key-status")).to_have_text("Copied")
    assert admin.page.evaluate("navigator.clipboard.readText()") == key
    admin.shot("22-key-copied")


def test_without_the_clipboard_the_copy_button_selects_the_key_in_the_pages_language(site, people):
    admin = people(viewport=PHONE, locale="fa-IR")
    admin.page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    admin.sign_in(ADMIN_TOKEN)
    _, key = create_seller(admin, "فروشگاه کپی")
    admin.page.click("#copy-api-key")
    expect(admin.page.locator("#copy-api-key-status")).to_contain_text("انتخاب شد")
    assert admin.page.evaluate("window.getSelection().toString()").strip() == key
    admin.shot("23-key-selected-fa")


def test_the_show_toggle_reveals_the_key_and_hides_it_again(site, people):
    _, key = funded_seller(site, 0, "Show shop")
    visitor = people(viewport=PHONE)
    page = visitor.open("/login")
    field, toggle = page.locator("#login-token"), page.locator("#reveal-login-token")
    field.fill(key)
    expect(field).to_have_attribute("type", "password")
    expect(toggle).to_have_text("Show")
    toggle.click()
    expect(field).to_have_attribute("type", "text")
    expect(toggle).to_have_text("Hide")  # its label says what the next press does
    expect(toggle).not_to_have_attribute("aria-pressed", re.compile(".*"))
    visitor.shot("24-sign-in-key-shown")
    toggle.click()
    expect(field).to_have_attribute("type", "password")
    expect(toggle).to_have_text("Show")
    page.click("#login-button")
    expect(page).to_have_url(re.compile(r"/seller$"))


def test_without_javascript_the_buttons_stay_hidden_and_the_pages_still_work(site, people):
    admin = people(javascript=False)
    admin.open("/login")
    expect(admin.page.locator("#reveal-login-token")).to_be_hidden()
    admin.page.fill("#login-token", ADMIN_TOKEN)
    admin.page.click("#login-button")
    _, key = create_seller(admin, "No script shop")
    expect(admin.page.locator("#copy-api-key")).to_be_hidden()
    assert key.startswith("cbk_")
    admin.open("/admin/charts")
    expect(admin.page.locator("#chart-per-day svg")).to_be_visible()


# Each chart text whose box, as Chromium draws it, leaves its SVG's viewBox.
OUTSIDE = """() => [...document.querySelectorAll('svg.chart')].flatMap(svg => {
  const view = svg.viewBox.baseVal;
  return [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBBox()])
    .filter(([, b]) => b.x < view.x - 0.5 || b.y < view.y - 0.5
      || b.x + b.width > view.x + view.width + 0.5 || b.y + b.height > view.y + view.height + 0.5)
    .map(([text, b]) => `${text} at ${b.x.toFixed(1)}..${(b.x + b.width).toFixed(1)}`); })"""


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("code", ["en", "fa"])
def test_every_chart_text_lies_inside_its_drawing(site, people, size, code):
    """Review F2: a busy seller's month (450,000,000 toman) had its value cut at the
    viewBox's edge. Every text of the real pages, and of charts of big amounts (up to
    near 10**15 toman) drawn into the same page (its font and style), lies inside its
    SVG's viewBox as Chromium measures it, in both languages, on a phone and a desktop."""
    from chargebox import activity
    from chargebox.web import charts
    from chargebox.web.chart_pages import day_label, hour_label, hour_ticks
    from chargebox.web.i18n import LANGUAGE

    _, key = funded_seller(site, 5_000_000, "فروشگاه بزرگ" if code == "fa" else "Big shop")
    sell(site, key, 1_000_000, 999_999)
    speaking = LANGUAGE[code]
    admin = people(viewport=size, locale="fa-IR" if code == "fa" else "en-US")
    admin.sign_in(ADMIN_TOKEN)
    admin.open("/admin/charts")
    expect(admin.page.locator("#chart-top svg text").first).to_be_visible()
    assert admin.page.evaluate(OUTSIDE) == []
    import datetime

    now = datetime.datetime(2026, 6, 10, 9, tzinfo=datetime.UTC)
    hours = activity.hours_ending(now, 48)
    days = activity.days_ending(now, 30)
    big = [
        charts.ranking([("فروشگاه بزرگ موبایل تهران و حومه", 450_000_000), ("Big shop", 10**15 - 1),
                        ("x", 5)], speaking.toman, speaking.direction, charts.Words("t", "e", "a")),
        charts.bars([(hour_label(speaking, h), 10**15 - n) for n, h in enumerate(hours)],
                    speaking.toman, speaking.direction, charts.Words("t", "e", "b"),
                    ticks=hour_ticks(speaking, hours)),
        charts.line([(day_label(speaking, d), 10**15 - n) for n, d in enumerate(days)],
                    speaking.toman, speaking.direction, charts.Words("t", "e", "c")),
    ]  # fmt: skip
    admin.page.evaluate(
        "svgs => { const at = document.querySelector('#chart-top');"
        " at.innerHTML = svgs.join(''); }",
        big,
    )
    assert admin.page.locator("#chart-top svg.chart").count() == 3
    assert admin.page.evaluate(OUTSIDE) == []
    seller = people(viewport=size, locale="fa-IR" if code == "fa" else "en-US")
    seller.sign_in(key)
    seller.open("/seller/charts")
    expect(seller.page.locator("#chart-per-day svg rect").first).to_be_visible()
    assert seller.page.evaluate(OUTSIDE) == []
